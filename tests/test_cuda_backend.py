"""backend="cuda": the CUDA C++ cluster kernel in fused_rnn/csrc/ (forward, large H).

Without a GPU: its errors, and that fused_rnn/csrc/ compiles (nvcc for sm_90a and sm_80,
the torch binding against torch's headers). With one: float64 parity.
"""

import glob
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest
import torch

from fused_rnn import SimpleRNN, rnn_linear
from fused_rnn.cuda import CSRC, NVCC_FLAGS
from helpers import DEVICE, TOL, as_float64, make_params, rnn_linear_loop

NVCC = shutil.which("nvcc")


def test_cuda_backend_needs_cuda_tensors():
    params = make_params(3, 8, 1, device="cpu")
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run this call: it runs on CUDA tensors"):
        rnn_linear(torch.randn(2, 3, 3), *params, backend="cuda")


def test_auto_never_picks_cuda():
    model = SimpleRNN(8, 1024, 2).to(DEVICE)
    assert model.backend_for(torch.randn(2, 3, 8, device=DEVICE)) == "torch"


@pytest.mark.skipif(torch.version.cuda is not None, reason="checks the message of a torch without CUDA")
def test_extension_unavailable_says_how_to_build():
    from fused_rnn import cuda
    reason = cuda.extension()
    assert isinstance(reason, str) and "FUSED_RNN_BUILD_CUDA=1 pip install --no-build-isolation -e ." in reason


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_90a", "sm_80"])
def test_kernel_compiles(arch):
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([NVCC, "-std=c++17", "-O3", f"-arch={arch}", "-c", str(CSRC / "rnn_cluster.cu"),
                              "-o", os.path.join(tmp, "k.o")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_build_flags_embed_sass_and_ptx():
    """The extension's nvcc flags give SASS for sm_90a and sm_80, and compute_90 PTX for newer GPUs.

    nvcc --dryrun prints the fatbinary's images without compiling.
    """
    out = subprocess.run([NVCC, "--dryrun", *NVCC_FLAGS, "-c", str(CSRC / "rnn_cluster.cu"), "-o", "k.o"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    images = set(re.findall(r"--image3=kind=(\w+),sm=(\w+)", out.stderr + out.stdout))
    assert images == {("elf", "90a"), ("elf", "80"), ("ptx", "90")}, images


def cuda_include_dir():
    found = sorted(glob.glob("/usr/local/cuda*/include/cuda_runtime_api.h"))
    return os.path.dirname(found[-1]) if found else None


@pytest.mark.skipif(shutil.which("g++") is None or cuda_include_dir() is None, reason="needs g++ and CUDA headers")
def test_binding_parses_against_torch_headers():
    """binding.cpp cannot be linked without CUDA torch, but it must at least compile.

    A CPU torch wheel lacks one generated header (c10/cuda/impl/cuda_cmake_macros.h),
    stood in by an empty file; torch's own headers need C++20.
    """
    from torch.utils.cpp_extension import include_paths
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp, "c10", "cuda", "impl")
        stub.mkdir(parents=True)
        (stub / "cuda_cmake_macros.h").write_text("")
        includes = [tmp, *include_paths(), cuda_include_dir(), str(CSRC), sysconfig.get_paths()["include"]]
        cmd = ["g++", "-std=c++20", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=fused_rnn_cuda",
               *[f"-I{p}" for p in includes], str(CSRC / "binding.cpp")]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]


@pytest.mark.gpu
@pytest.mark.parametrize("H", [256, 384, 512, 1024, 2048])
@pytest.mark.parametrize("B", [1, 8, 64, 256])
def test_cuda_forward_vs_float64(B, H):
    T, I, O = 64, 32, 4
    params = make_params(I, H, O, seed=H + B)
    x = torch.randn(B, T, I, device=DEVICE)
    h0 = torch.randn(B, H, device=DEVICE) * 0.3
    lengths = torch.randint(1, T + 1, (B,))
    y, h_n = rnn_linear(x, *params, h0, lengths=lengths, return_hidden=True, backend="cuda")
    y_ref, h_ref = rnn_linear_loop(*as_float64(x, *params, h0), lengths=lengths)
    torch.testing.assert_close(y.double(), y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h_n[0].double(), h_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_forward_low_precision_long(dtype):
    B, T, I, H, O = 8, 4096, 64, 1024, 10
    params = make_params(I, H, O, dtype=dtype, seed=1)
    x = torch.randn(B, T, I, device=DEVICE, dtype=dtype)
    y = rnn_linear(x, *params, backend="cuda")
    y_ref, _ = rnn_linear_loop(*as_float64(x, *params))
    torch.testing.assert_close(y.double(), y_ref, **TOL[dtype])


@pytest.mark.gpu
def test_cuda_backend_refuses_training():
    params = [p.requires_grad_() for p in make_params(8, 256, 2)]
    with pytest.raises(RuntimeError, match="no backward yet"):
        rnn_linear(torch.randn(2, 3, 8, device=DEVICE), *params, backend="cuda")
