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

// The launch the forward would use on `device`: cluster size C (1 without
// clusters), hidden units per CTA, dynamic shared memory bytes, and whether the
// weight rows fit in shared memory (else they are read from L2 every step).
struct LaunchPlan {
  int cluster_size;
  int hidden_per_cta;
  size_t smem_bytes;
  bool weights_in_smem;
};

cudaError_t rnn_linear_plan(int H, int I, DType dtype, int device, LaunchPlan* plan);

// Launches the forward on `stream`. Returns cudaSuccess or the CUDA error.
cudaError_t rnn_linear_forward(const RnnLinearArgs& args, cudaStream_t stream);

}  // namespace fused_rnn
