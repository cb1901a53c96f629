// Fused RNN + Linear forward for large H with thread-block clusters: the host launcher.
// The kernel itself is in rnn_cluster_kernel.cuh (see there, and rnn_cluster.h).
#include "rnn_cluster_kernel.cuh"

namespace fused_rnn {
namespace {

constexpr int kMaxCluster = 16;  // non-portable above 8; H100/H200 allow 16

size_t dtype_size(DType d) { return d == DType::kFloat32 ? 4 : 2; }

template <typename T, bool kCluster>
cudaError_t configure(size_t smem_bytes, int cluster_size) {
  auto kernel = rnn_linear_cluster_kernel<T, kCluster>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem_bytes));
  if (err == cudaSuccess && cluster_size > 8) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  }
  return err;
}

template <typename T>
cudaError_t launch(const RnnLinearArgs& a, const LaunchPlan& p, cudaStream_t stream) {
  const unsigned tiles = static_cast<unsigned>((a.B + kBatchTile - 1) / kBatchTile);
  if (p.cluster_size == 1) {
    cudaError_t err = configure<T, false>(p.smem_bytes, 1);
    if (err != cudaSuccess) return err;
    rnn_linear_cluster_kernel<T, false><<<tiles, kThreads, p.smem_bytes, stream>>>(
        a, 1, p.hidden_per_cta, p.weights_in_smem);
    return cudaGetLastError();
  }
  cudaError_t err = configure<T, true>(p.smem_bytes, p.cluster_size);
  if (err != cudaSuccess) return err;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(tiles * p.cluster_size);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = p.smem_bytes;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = p.cluster_size;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, rnn_linear_cluster_kernel<T, true>, a, p.cluster_size,
                            p.hidden_per_cta, p.weights_in_smem);
}

}  // namespace

cudaError_t rnn_linear_plan(int H, int I, DType dtype, int device, LaunchPlan* plan) {
  int major = 0, smem_optin = 0;
  cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  }
  if (err != cudaSuccess) return err;
  const size_t h_bytes = 2ull * kBatchTile * H * sizeof(float);
  if (h_bytes > static_cast<size_t>(smem_optin)) return cudaErrorInvalidValue;  // H past ~7000
  const int max_cluster = major >= 9 ? kMaxCluster : 1;
  // The smallest cluster whose CTAs each hold their weight rows on chip: fewer
  // CTAs per step means fewer DSMEM stores and a cheaper barrier.
  for (int c = 1; c <= max_cluster; c *= 2) {
    const int hc = (H + c - 1) / c;
    const size_t w_bytes = static_cast<size_t>(hc) * (H + I) * dtype_size(dtype);
    if (h_bytes + w_bytes <= static_cast<size_t>(smem_optin)) {
      *plan = {c, hc, h_bytes + w_bytes, true};
      return cudaSuccess;
    }
  }
  // Too large for on-chip weights: the widest cluster, weights read from L2 each step.
  *plan = {max_cluster, (H + max_cluster - 1) / max_cluster, h_bytes, false};
  return cudaSuccess;
}

cudaError_t rnn_linear_forward(const RnnLinearArgs& a, cudaStream_t stream) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  LaunchPlan plan;
  err = rnn_linear_plan(a.H, a.I, a.dtype, device, &plan);
  if (err != cudaSuccess) return err;
  switch (a.dtype) {
    case DType::kFloat32: return launch<float>(a, plan, stream);
    case DType::kFloat16: return launch<__half>(a, plan, stream);
    case DType::kBFloat16: return launch<__nv_bfloat16>(a, plan, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fused_rnn
