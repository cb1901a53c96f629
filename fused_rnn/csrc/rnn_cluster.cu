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
cudaError_t launch(const RnnLinearArgs& a, LaunchPlan p, size_t smem_per_cta, cudaStream_t stream) {
  const unsigned tiles = static_cast<unsigned>((a.B + kBatchTile - 1) / kBatchTile);
  while (p.cluster_size > 1) {
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
    int active_clusters = 0;
    err = cudaOccupancyMaxActiveClusters(&active_clusters, rnn_linear_cluster_kernel<T, true>, &config);
    if (err == cudaSuccess && active_clusters > 0) {
      return cudaLaunchKernelEx(&config, rnn_linear_cluster_kernel<T, true>, a, p.cluster_size,
                                p.hidden_per_cta, p.weights_in_smem);
    }
    // This cluster cannot be placed (e.g. 16 CTAs with large shared memory on a
    // part whose GPCs hold fewer SMs): try half as many CTAs.
    (void)cudaGetLastError();
    choose_plan(a.H, a.I, sizeof(T), smem_per_cta, p.cluster_size / 2, &p);
  }
  cudaError_t err = configure<T, false>(p.smem_bytes, 1);
  if (err != cudaSuccess) return err;
  rnn_linear_cluster_kernel<T, false><<<tiles, kThreads, p.smem_bytes, stream>>>(
      a, 1, p.hidden_per_cta, p.weights_in_smem);
  return cudaGetLastError();
}

cudaError_t device_limits(int device, int* max_cluster, size_t* smem_per_cta) {
  int major = 0, smem_optin = 0;
  cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  *max_cluster = major >= 9 ? kMaxCluster : 1;
  *smem_per_cta = static_cast<size_t>(smem_optin);
  return err;
}

}  // namespace

cudaError_t rnn_linear_forward(const RnnLinearArgs& a, cudaStream_t stream) {
  int device = 0, max_cluster = 1;
  size_t smem_per_cta = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = device_limits(device, &max_cluster, &smem_per_cta);
  if (err != cudaSuccess) return err;
  LaunchPlan plan;
  if (!choose_plan(a.H, a.I, dtype_size(a.dtype), smem_per_cta, max_cluster, &plan)) return cudaErrorInvalidValue;
  switch (a.dtype) {
    case DType::kFloat32: return launch<float>(a, plan, smem_per_cta, stream);
    case DType::kFloat16: return launch<__half>(a, plan, smem_per_cta, stream);
    case DType::kBFloat16: return launch<__nv_bfloat16>(a, plan, smem_per_cta, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fused_rnn
