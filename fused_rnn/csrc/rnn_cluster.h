// Fused RNN + Linear forward for large hidden sizes: plain CUDA, no torch headers.
//
//   h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh),  t = 1..T;   y = h_T fc_Wᵀ + fc_b
//
// One thread-block cluster per tile of kBatchTile sequences. Each CTA of the
// cluster owns H / C hidden units, keeps its rows of W_hh and W_ih in shared
// memory when they fit, and after every step writes its slice of h_t into the
// shared memory of every CTA in the cluster (distributed shared memory, sm_90),
// then waits on one cluster barrier. Without clusters (before sm_90) the same
// kernel runs with C = 1. Nothing of [B, T, H] is written.
#pragma once

#include <cstdint>

#ifndef FUSED_RNN_EMULATION  // tests/csrc_emulation.cpp runs the kernel on CPU threads
#include <cuda_runtime.h>
#endif

namespace fused_rnn {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Sequences per cluster: the per-step product is a GEMV-like [kBatchTile, H] x [H, H/C].
constexpr int kBatchTile = 4;
// Threads per CTA (8 warps; each warp computes one hidden unit at a time).
constexpr int kThreads = 256;

struct RnnLinearArgs {
  const void* x;                 // [B, T, I], element strides below
  int64_t stride_xb, stride_xt, stride_xi;
  const void* h0;                // [B, H] contiguous, or nullptr (zeros)
  const int64_t* lengths;        // [B] in [1, T], or nullptr (all T)
  const void* w_ih;              // [H, I] contiguous
  const void* w_hh;              // [H, H] contiguous
  const void* b_ih;              // [H] or nullptr
  const void* b_hh;              // [H] or nullptr
  const void* fc_w;              // [O, H] contiguous
  const void* fc_b;              // [O] or nullptr
  void* y;                       // [B, O] out
  void* h_n;                     // [B, H] out, or nullptr
  int64_t B, T;
  int I, H, O;
  bool relu;
  DType dtype;                   // of x, h0, weights, y and h_n alike
};

// A launch of the forward: cluster size C (1 without
// clusters), hidden units per CTA, dynamic shared memory bytes, and whether the
// weight rows fit in shared memory (else they are read from L2 every step).
struct LaunchPlan {
  int cluster_size;
  int hidden_per_cta;
  size_t smem_bytes;
  bool weights_in_smem;
};

// The plan for CTAs of up to `smem_per_cta` bytes of shared memory in clusters of up
// to `max_cluster` CTAs (1 before sm_90): the smallest cluster whose CTAs each hold
// their weight rows on chip (fewer CTAs per step: fewer DSMEM stores, a cheaper
// barrier), else the widest one with weights read from L2 every step. False when
// not even the fp32 state of a tile fits (H past ~7000 on Hopper).
inline bool choose_plan(int H, int I, size_t dtype_bytes, size_t smem_per_cta, int max_cluster,
                        LaunchPlan* plan) {
  const size_t h_bytes = 2ull * kBatchTile * H * sizeof(float);  // double-buffered state
  if (h_bytes > smem_per_cta) return false;
  for (int c = 1; c <= max_cluster; c *= 2) {
    const int hc = (H + c - 1) / c;
    const size_t w_bytes = static_cast<size_t>(hc) * (H + I) * dtype_bytes;
    if (h_bytes + w_bytes <= smem_per_cta) {
      *plan = {c, hc, h_bytes + w_bytes, true};
      return true;
    }
  }
  *plan = {max_cluster, (H + max_cluster - 1) / max_cluster, h_bytes, false};
  return true;
}

// Launches the forward on `stream`. Returns cudaSuccess or the CUDA error.
cudaError_t rnn_linear_forward(const RnnLinearArgs& args, cudaStream_t stream);

}  // namespace fused_rnn
