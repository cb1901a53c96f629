// torch binding of the cluster forward (csrc/rnn_cluster.cu): checks every input, then launches.
// Built only where CUDA torch is present (fused_rnn/cuda.py, or setup.py with FUSED_RNN_BUILD_CUDA=1).
#include <optional>
#include <tuple>

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "rnn_cluster.h"

namespace {

fused_rnn::DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return fused_rnn::DType::kFloat32;
    case at::kHalf: return fused_rnn::DType::kFloat16;
    case at::kBFloat16: return fused_rnn::DType::kBFloat16;
    default: TORCH_CHECK(false, "fused_rnn cuda: x must be float32, float16 or bfloat16, got ", t);
  }
  return fused_rnn::DType::kFloat32;
}

void check_param(const at::Tensor& t, const char* name, const at::Tensor& x, at::IntArrayRef shape) {
  TORCH_CHECK(t.is_cuda(), "fused_rnn cuda: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == x.device(), "fused_rnn cuda: ", name, " is on ", t.device(), " but x is on ", x.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "fused_rnn cuda: ", name, " has dtype ", t.scalar_type(),
              " but x has ", x.scalar_type());
  TORCH_CHECK(t.sizes() == shape, "fused_rnn cuda: ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "fused_rnn cuda: ", name, " must be contiguous");
}

const void* data_or_null(const std::optional<at::Tensor>& t) { return t ? t->data_ptr() : nullptr; }

// x: [B, T, I] (any strides); weights as nn.RNN / nn.Linear hold them; h0: [B, H];
// lengths: [B] int64 on x's device. Returns (y [B, O], h_n [B, H] or an empty tensor).
std::tuple<at::Tensor, at::Tensor> rnn_linear_forward(
    const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const at::Tensor& fc_w, const std::optional<at::Tensor>& fc_b,
    const std::optional<at::Tensor>& h0, const std::optional<at::Tensor>& lengths,
    bool relu, bool return_hn) {
  TORCH_CHECK(x.is_cuda(), "fused_rnn cuda: x must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 3, "fused_rnn cuda: x must be [B, T, I], got ", x.sizes());
  const int64_t B = x.size(0), T = x.size(1), I = x.size(2);
  TORCH_CHECK(B > 0 && T > 0, "fused_rnn cuda: B and T must be ≥ 1, got ", x.sizes());
  TORCH_CHECK(w_hh.dim() == 2, "fused_rnn cuda: w_hh must be [H, H], got ", w_hh.sizes());
  const int64_t H = w_hh.size(0);
  TORCH_CHECK(fc_w.dim() == 2, "fused_rnn cuda: fc_w must be [O, H], got ", fc_w.sizes());
  const int64_t O = fc_w.size(0);
  const fused_rnn::DType dtype = to_dtype(x.scalar_type());
  check_param(w_ih, "w_ih", x, {H, I});
  check_param(w_hh, "w_hh", x, {H, H});
  check_param(fc_w, "fc_w", x, {O, H});
  TORCH_CHECK(b_ih.has_value() == b_hh.has_value(), "fused_rnn cuda: b_ih and b_hh must both be given or both be None");
  if (b_ih) check_param(*b_ih, "b_ih", x, {H});
  if (b_hh) check_param(*b_hh, "b_hh", x, {H});
  if (fc_b) check_param(*fc_b, "fc_b", x, {O});
  if (h0) check_param(*h0, "h0", x, {B, H});
  if (lengths) {
    TORCH_CHECK(lengths->is_cuda() && lengths->device() == x.device(), "fused_rnn cuda: lengths must be on x's device");
    TORCH_CHECK(lengths->scalar_type() == at::kLong, "fused_rnn cuda: lengths must be int64, got ", lengths->scalar_type());
    TORCH_CHECK(lengths->sizes() == at::IntArrayRef({B}) && lengths->is_contiguous(),
                "fused_rnn cuda: lengths must be a contiguous [B] tensor, got ", lengths->sizes());
  }

  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({B, O}, x.options());
  at::Tensor h_n = return_hn ? at::empty({B, H}, x.options()) : at::empty({0}, x.options());

  fused_rnn::RnnLinearArgs args{};
  args.x = x.data_ptr();
  args.stride_xb = x.stride(0);
  args.stride_xt = x.stride(1);
  args.stride_xi = x.stride(2);
  args.h0 = data_or_null(h0);
  args.lengths = lengths ? lengths->data_ptr<int64_t>() : nullptr;
  args.w_ih = w_ih.data_ptr();
  args.w_hh = w_hh.data_ptr();
  args.b_ih = data_or_null(b_ih);
  args.b_hh = data_or_null(b_hh);
  args.fc_w = fc_w.data_ptr();
  args.fc_b = data_or_null(fc_b);
  args.y = y.data_ptr();
  args.h_n = return_hn ? h_n.data_ptr() : nullptr;
  args.B = B;
  args.T = T;
  args.I = static_cast<int>(I);
  args.H = static_cast<int>(H);
  args.O = static_cast<int>(O);
  args.relu = relu;
  args.dtype = dtype;
  const cudaError_t err = fused_rnn::rnn_linear_forward(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "fused_rnn cuda: launch failed: ", cudaGetErrorString(err));
  return {y, h_n};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rnn_linear_forward", &rnn_linear_forward, "Fused RNN + Linear forward (thread-block clusters)");
}
