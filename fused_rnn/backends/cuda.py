"""The CUDA backend: the C++ thread-block-cluster forward in fused_rnn/csrc/ (loaded by fused_rnn.cuda).

Not yet proven on a GPU, so "auto" never picks it.
"""

import torch

from .request import KERNEL_DTYPES, LayerRequest

NAME = "cuda"

# Sequences per cluster, csrc/rnn_cluster.h's kBatchTile: the plan keeps two fp32
# [kBatchTile, H] states (double-buffered) in each CTA's shared memory.
BATCH_TILE = 4
STATE_BYTES_PER_UNIT = 2 * BATCH_TILE * 4


def unsupported_reason(request, *, auto=False):
    """Why the CUDA kernel cannot run this call (a sentence), or None if it can; "auto" never takes it.

    Checked before the extension is loaded (a first load may build it): the
    device, dtype, gradient, and csrc's launch plan (choose_plan in
    rnn_cluster.h), which needs the state to fit one CTA's shared memory:
    H up to 232448 / 32 = 7264 on Hopper. A LayerRequest: never (no layer kernel in csrc).
    """
    if isinstance(request, LayerRequest):
        return ("there is no CUDA kernel for layers (fused_rnn/csrc runs rnn_linear's single Elman layer under a "
                "Linear head); use backend='auto', 'triton' or 'torch'")
    if auto:
        return "backend='auto' never picks the CUDA kernel: it is not yet proven on a GPU"
    if request.device.type != "cuda":
        return f"it runs on CUDA tensors, got a tensor on {request.device}"
    if request.dtype not in KERNEL_DTYPES:
        return f"it takes float32, float16 or bfloat16, got {request.dtype}"
    if request.needs_grad:
        return "it has no backward yet; train with backend='triton' or 'torch'"
    reason = _plan_unsupported_reason(request)
    if reason is not None:
        return reason
    from .. import cuda
    extension = cuda.extension()
    return extension if isinstance(extension, str) else None


def _plan_unsupported_reason(request):
    # The opt-in limit the launcher reads (cudaDevAttrMaxSharedMemoryPerBlockOptin);
    # torch builds that do not report it leave the check to the launch.
    properties = torch.cuda.get_device_properties(request.device)
    smem_per_cta = getattr(properties, "shared_memory_per_block_optin", None)
    if smem_per_cta is None:
        return None
    need = STATE_BYTES_PER_UNIT * request.hidden_size
    if need > smem_per_cta:
        return (f"hidden_size={request.hidden_size} needs {need} B of shared memory per block for the state "
                f"alone, more than the {smem_per_cta} B this GPU allows (hidden_size up to "
                f"{smem_per_cta // STATE_BYTES_PER_UNIT})")
    return None
