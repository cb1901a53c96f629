// Runs csrc/rnn_cluster_kernel.cuh, unchanged, on CPU threads: no GPU needed.
//
// One std::thread per CUDA thread, one cluster at a time. __syncthreads, the
// cluster barrier and warp shuffles become std::barrier waits, map_shared_rank
// becomes pointer arithmetic between the CTAs' shared-memory buffers, and
// shared memory starts poisoned (all bytes 0xFF: NaN as fp32). This checks the
// kernel's indexing, its double-buffered DSMEM exchange and its masking; it
// cannot check what only hardware does (memory ordering, occupancy, speed).
//
//   g++ -std=c++20 -O1 -pthread -shared -fPIC -I csrc tests/csrc_emulation.cpp -o emu.so
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define FUSED_RNN_EMULATION 1
#define __CUDA_ARCH__ 900  // the cluster path
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)

struct cudaStream_st;
typedef cudaStream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0 };

namespace emu {
struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct Block {
  int rank = 0;
  unsigned char* smem = nullptr;
  std::unique_ptr<std::barrier<>> barrier;
  std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
  std::vector<float> shuffle;  // one slot per thread
};
struct Cluster {
  std::unique_ptr<std::barrier<>> barrier;
  std::vector<unsigned char*> smem;
};
thread_local Dim3 thread_idx, block_idx;
Dim3 block_dim;
thread_local Block* block = nullptr;
thread_local Cluster* cluster = nullptr;
}  // namespace emu

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define FUSED_RNN_DYNAMIC_SMEM(name) unsigned char* name = emu::block->smem

inline void __syncthreads() { emu::block->barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int offset) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* slots = emu::block->shuffle.data() + warp * 32;
  slots[lane] = v;
  emu::block->warp_barriers[warp]->arrive_and_wait();
  const float r = slots[lane ^ offset];
  emu::block->warp_barriers[warp]->arrive_and_wait();
  return r;
}

namespace cooperative_groups {
struct cluster_group {
  void sync() { emu::cluster->barrier->arrive_and_wait(); }
  unsigned block_rank() { return static_cast<unsigned>(emu::block->rank); }
  template <typename T>
  T* map_shared_rank(T* local, int rank) {
    const std::ptrdiff_t offset = reinterpret_cast<unsigned char*>(local) - emu::block->smem;
    return reinterpret_cast<T*>(emu::cluster->smem[rank] + offset);
  }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cooperative_groups

// bfloat16 with the same 16-bit layout as torch's; __half only so the header compiles.
struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 v) {
  const uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return {static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fff + ((u >> 16) & 1);  // round to nearest, ties to even
  return {static_cast<uint16_t>(u >> 16)};
}
inline float __half2float(__half) { return NAN; }
inline __half __float2half_rn(float) { return {0x7e00}; }
using std::max;
using std::min;

#include "rnn_cluster_kernel.cuh"

namespace {

template <typename T>
void run(const fused_rnn::RnnLinearArgs& a, int cluster_size, bool weights_in_smem) {
  using namespace fused_rnn;
  const int hc = (a.H + cluster_size - 1) / cluster_size;
  const size_t smem_bytes = 2ull * kBatchTile * a.H * sizeof(float) +
                            (weights_in_smem ? static_cast<size_t>(hc) * (a.H + a.I) * sizeof(T) : 0);
  const int64_t tiles = (a.B + kBatchTile - 1) / kBatchTile;
  emu::block_dim = {kThreads, 1, 1};
  for (int64_t tile = 0; tile < tiles; ++tile) {
    emu::Cluster cluster;
    cluster.barrier = std::make_unique<std::barrier<>>(cluster_size * kThreads);
    std::vector<std::vector<unsigned char>> smem(cluster_size, std::vector<unsigned char>(smem_bytes, 0xFF));
    std::vector<emu::Block> blocks(cluster_size);
    for (int r = 0; r < cluster_size; ++r) {
      blocks[r].rank = r;
      blocks[r].smem = smem[r].data();
      blocks[r].barrier = std::make_unique<std::barrier<>>(kThreads);
      for (int w = 0; w < kThreads / 32; ++w) blocks[r].warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
      blocks[r].shuffle.assign(kThreads, 0.0f);
      cluster.smem.push_back(smem[r].data());
    }
    std::vector<std::thread> threads;
    for (int r = 0; r < cluster_size; ++r) {
      for (unsigned t = 0; t < static_cast<unsigned>(kThreads); ++t) {
        threads.emplace_back([&, r, t] {
          emu::thread_idx = {t, 1, 1};
          emu::block_idx = {static_cast<unsigned>(tile * cluster_size + r), 1, 1};
          emu::block = &blocks[r];
          emu::cluster = &cluster;
          if (cluster_size == 1) {
            rnn_linear_cluster_kernel<T, false>(a, 1, hc, weights_in_smem);
          } else {
            rnn_linear_cluster_kernel<T, true>(a, cluster_size, hc, weights_in_smem);
          }
        });
      }
    }
    for (auto& th : threads) th.join();
  }
}

}  // namespace

// The kernel on emulated hardware. dtype: 0 float32, 2 bfloat16 (fused_rnn::DType).
extern "C" int emulate_rnn_linear(const void* x, int64_t sxb, int64_t sxt, int64_t sxi, const void* h0,
                                  const int64_t* lengths, const void* w_ih, const void* w_hh, const void* b_ih,
                                  const void* b_hh, const void* fc_w, const void* fc_b, void* y, void* h_n,
                                  int64_t B, int64_t T, int I, int H, int O, int relu, int dtype, int cluster_size,
                                  int weights_in_smem) {
  fused_rnn::RnnLinearArgs a{x, sxb, sxt, sxi, h0, lengths, w_ih, w_hh, b_ih, b_hh, fc_w, fc_b, y, h_n,
                             B, T, I, H, O, relu != 0, static_cast<fused_rnn::DType>(dtype)};
  if (dtype == 0) {
    run<float>(a, cluster_size, weights_in_smem != 0);
  } else if (dtype == 2) {
    run<__nv_bfloat16>(a, cluster_size, weights_in_smem != 0);
  } else {
    return 1;
  }
  return 0;
}

// The launcher's choice of cluster size, from rnn_cluster.h (host code, no CUDA calls).
extern "C" int plan_for(int H, int I, int dtype_bytes, int64_t smem_per_cta, int max_cluster, int* cluster_size,
                        int* hidden_per_cta, int64_t* smem_bytes, int* weights_in_smem) {
  fused_rnn::LaunchPlan plan{};
  if (!fused_rnn::choose_plan(H, I, dtype_bytes, smem_per_cta, max_cluster, &plan)) return 0;
  *cluster_size = plan.cluster_size;
  *hidden_per_cta = plan.hidden_per_cta;
  *smem_bytes = static_cast<int64_t>(plan.smem_bytes);
  *weights_in_smem = plan.weights_in_smem;
  return 1;
}
