// Device code of the cluster forward (see rnn_cluster.h): included by rnn_cluster.cu, and by
// tests/csrc_emulation.cpp, which runs this same source on CPU threads (emulating
// __syncthreads, warp shuffles, cluster barriers and DSMEM) so its logic is tested without a GPU.
//
// Per step, CTA r of a cluster of C computes hidden units [r·hc, (r+1)·hc) for
// the cluster's kBatchTile sequences: each warp takes one unit j at a time, its
// lanes stride over k, and the kBatchTile partial sums are reduced with warp
// shuffles. The new values are stored into the *next* h buffer of every CTA in
// the cluster (DSMEM), then one cluster barrier. h is double-buffered, so that
// barrier is the only one per step: a CTA writing buffer A at step t+1 knows
// every CTA finished reading A at step t, because all passed the barrier after it.
#pragma once

#include "rnn_cluster.h"

#ifndef FUSED_RNN_EMULATION
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define FUSED_RNN_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace fused_rnn {
namespace cg = cooperative_groups;

// Clusters (and DSMEM) exist from sm_90; older builds compile the C = 1 path only.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FUSED_RNN_HAS_CLUSTERS 1
#else
#define FUSED_RNN_HAS_CLUSTERS 0
#endif

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
  // Butterfly: every lane ends with the full sum.
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Block barrier, or cluster barrier (which also orders DSMEM stores) when clustered.
template <bool kCluster>
__device__ __forceinline__ void barrier() {
#if FUSED_RNN_HAS_CLUSTERS
  if constexpr (kCluster) {
    cg::this_cluster().sync();
    return;
  }
#endif
  __syncthreads();
}

template <bool kCluster>
__device__ __forceinline__ int cluster_rank() {
#if FUSED_RNN_HAS_CLUSTERS
  if constexpr (kCluster) return static_cast<int>(cg::this_cluster().block_rank());
#endif
  return 0;
}

// Pointer to `local` (an address in this CTA's shared memory) in CTA `rank` of the cluster.
template <bool kCluster>
__device__ __forceinline__ float* shared_in_rank(float* local, int rank) {
#if FUSED_RNN_HAS_CLUSTERS
  if constexpr (kCluster) return cg::this_cluster().map_shared_rank(local, rank);
#endif
  return local;
}

template <typename T, bool kCluster>
__global__ void __launch_bounds__(kThreads)
rnn_linear_cluster_kernel(RnnLinearArgs a, int cluster_size, int hc, bool weights_in_smem) {
  FUSED_RNN_DYNAMIC_SMEM(smem);
  const int H = a.H, I = a.I;
  float* hbuf = reinterpret_cast<float*>(smem);                        // [2][kBatchTile][H] fp32
  T* s_whh = reinterpret_cast<T*>(hbuf + 2 * kBatchTile * H);          // [hc][H]
  T* s_wih = s_whh + static_cast<size_t>(hc) * H;                       // [hc][I]

  const int rank = cluster_rank<kCluster>();
  const int64_t b0 = static_cast<int64_t>(blockIdx.x / cluster_size) * kBatchTile;
  const int nb = static_cast<int>(min(static_cast<int64_t>(kBatchTile), a.B - b0));
  const int j0 = rank * hc;
  const int j1 = min(H, j0 + hc);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nwarps = blockDim.x / 32;

  const T* x = static_cast<const T*>(a.x);
  const T* w_ih = static_cast<const T*>(a.w_ih);
  const T* w_hh = static_cast<const T*>(a.w_hh);
  const T* b_ih = static_cast<const T*>(a.b_ih);
  const T* b_hh = static_cast<const T*>(a.b_hh);

  // This CTA's weight rows (contiguous in the row-major weights) into shared memory.
  const T* whh = w_hh + static_cast<size_t>(j0) * H;
  const T* wih = w_ih + static_cast<size_t>(j0) * I;
  if (weights_in_smem && j1 > j0) {
    for (int idx = tid; idx < (j1 - j0) * H; idx += blockDim.x) s_whh[idx] = whh[idx];
    for (int idx = tid; idx < (j1 - j0) * I; idx += blockDim.x) s_wih[idx] = wih[idx];
    whh = s_whh;
    wih = s_wih;
  }

  // Every CTA holds the full state of its tile: h0 (or zeros) into buffer 0.
  const T* h0 = static_cast<const T*>(a.h0);
  for (int idx = tid; idx < kBatchTile * H; idx += blockDim.x) {
    const int b = idx / H, k = idx % H;
    hbuf[idx] = (h0 != nullptr && b < nb) ? to_float(h0[(b0 + b) * H + k]) : 0.0f;
  }
  // Also guarantees every CTA of the cluster is running before any DSMEM store.
  barrier<kCluster>();

  int cur = 0;
  for (int64_t t = 0; t < a.T; ++t) {
    const float* h = hbuf + cur * kBatchTile * H;
    float* next_local = hbuf + (cur ^ 1) * kBatchTile * H;
    for (int j = j0 + warp; j < j1; j += nwarps) {
      float acc[kBatchTile];
#pragma unroll
      for (int b = 0; b < kBatchTile; ++b) acc[b] = 0.0f;
      const T* wrow = whh + static_cast<size_t>(j - j0) * H;
      for (int k = lane; k < H; k += 32) {
        const float w = to_float(wrow[k]);
#pragma unroll
        for (int b = 0; b < kBatchTile; ++b) acc[b] += w * h[b * H + k];
      }
      const T* irow = wih + static_cast<size_t>(j - j0) * I;
      for (int i = lane; i < I; i += 32) {
        const float w = to_float(irow[i]);
#pragma unroll
        for (int b = 0; b < kBatchTile; ++b) {
          if (b < nb) acc[b] += w * to_float(x[(b0 + b) * a.stride_xb + t * a.stride_xt + i * a.stride_xi]);
        }
      }
      const float bias = (b_ih ? to_float(b_ih[j]) : 0.0f) + (b_hh ? to_float(b_hh[j]) : 0.0f);
      float mine = 0.0f;  // lane b keeps sequence b's sum
#pragma unroll
      for (int b = 0; b < kBatchTile; ++b) {
        const float s = warp_sum(acc[b]);
        if (lane == b) mine = s;
      }
      if (lane < nb) {
        const float pre = mine + bias;
        float h_new = a.relu ? fmaxf(pre, 0.0f) : tanhf(pre);
        // Past its length a sequence keeps its last valid state (as h_n of a PackedSequence).
        if (a.lengths != nullptr && t >= a.lengths[b0 + lane]) h_new = h[lane * H + j];
        for (int r = 0; r < cluster_size; ++r) {
          shared_in_rank<kCluster>(next_local, r)[lane * H + j] = h_new;
        }
      }
    }
    barrier<kCluster>();
    cur ^= 1;
  }

  // The final state is in buffer `cur` of every CTA; no DSMEM access follows,
  // so no CTA can exit while another still reads its shared memory.
  const float* h = hbuf + cur * kBatchTile * H;
  if (a.h_n != nullptr) {
    T* h_n = static_cast<T*>(a.h_n);
    for (int idx = tid; idx < nb * (j1 - j0); idx += blockDim.x) {
      const int b = idx / (j1 - j0), j = j0 + idx % (j1 - j0);
      h_n[(b0 + b) * H + j] = from_float<T>(h[b * H + j]);
    }
  }
  if (rank == 0) {  // y = h_T fc_Wᵀ + fc_b, one output unit per warp
    const T* fc_w = static_cast<const T*>(a.fc_w);
    const T* fc_b = static_cast<const T*>(a.fc_b);
    T* y = static_cast<T*>(a.y);
    for (int o = warp; o < a.O; o += nwarps) {
      float acc[kBatchTile];
#pragma unroll
      for (int b = 0; b < kBatchTile; ++b) acc[b] = 0.0f;
      for (int k = lane; k < H; k += 32) {
        const float w = to_float(fc_w[static_cast<size_t>(o) * H + k]);
#pragma unroll
        for (int b = 0; b < kBatchTile; ++b) acc[b] += w * h[b * H + k];
      }
      float mine = 0.0f;
#pragma unroll
      for (int b = 0; b < kBatchTile; ++b) {
        const float s = warp_sum(acc[b]);
        if (lane == b) mine = s;
      }
      if (lane < nb) y[(b0 + lane) * a.O + o] = from_float<T>(mine + (fc_b ? to_float(fc_b[o]) : 0.0f));
    }
  }
}

}  // namespace fused_rnn
