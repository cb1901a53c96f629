"""The CUDA cluster kernel's source, run on emulated hardware (tests/csrc_emulation.cpp), vs float64.

No GPU here, so this is how the kernel's logic is tested in CI: the same
rnn_cluster_kernel.cuh the GPU compiles, with each CUDA thread a CPU thread.
"""

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import TOL, as_float64, rnn_linear_loop

ROOT = Path(__file__).resolve().parents[1]
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 2}  # fused_rnn::DType


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    lib = tmp_path_factory.mktemp("emu") / "emu.so"
    subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-Wno-unknown-pragmas",
                    "-I", str(ROOT / "fused_rnn" / "csrc"), str(ROOT / "tests" / "csrc_emulation.cpp"), "-o", str(lib)],
                   check=True, capture_output=True, text=True)
    emu = ctypes.CDLL(str(lib))
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    emu.emulate_rnn_linear.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr,
                                       i64, i64, i32, i32, i32, i32, i32, i32, i32]
    emu.emulate_rnn_linear.restype = i32
    emu.plan_for.argtypes = [i32, i32, i32, i64, i32, ptr, ptr, ptr, ptr]
    emu.plan_for.restype = i32
    return emu


def emulate(emu, x, params, h0, lengths, relu, cluster_size, weights_in_smem):
    """The kernel's (y [B, O], h_n [B, H]), both starting as NaN."""
    w_ih, w_hh, b_ih, b_hh, fc_w, fc_b = params
    B, T, I = x.shape
    H, O = w_hh.shape[0], fc_w.shape[0]
    y = torch.full((B, O), float("nan"), dtype=x.dtype)
    h_n = torch.full((B, H), float("nan"), dtype=x.dtype)

    def p(t):
        return t.data_ptr() if t is not None else None

    rc = emu.emulate_rnn_linear(p(x), *x.stride(), p(h0), p(lengths), p(w_ih), p(w_hh), p(b_ih), p(b_hh),
                                p(fc_w), p(fc_b), p(y), p(h_n), B, T, I, H, O, int(relu), DTYPE_CODES[x.dtype],
                                cluster_size, int(weights_in_smem))
    assert rc == 0
    return y, h_n


def params_for(I, H, O, dtype, seed):
    torch.manual_seed(seed)
    rnn, fc = torch.nn.RNN(I, H, batch_first=True), torch.nn.Linear(H, O)
    return [p.detach().to(dtype) for p in (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0,
                                            rnn.bias_hh_l0, fc.weight, fc.bias)]


@pytest.mark.parametrize("cluster_size", [1, 2, 4])
@pytest.mark.parametrize("weights_in_smem", [True, False])
@pytest.mark.parametrize("H", [37, 64])             # 37: the last CTA of a cluster owns fewer units
def test_cluster_kernel_vs_float64(emulator, cluster_size, weights_in_smem, H):
    B, T, I, O = 9, 6, 5, 3                          # B = 9: tiles of 4, 4 and 1 sequences
    params = params_for(I, H, O, torch.float32, seed=H + cluster_size)
    x = torch.randn(T, B, I).transpose(0, 1)         # time-major view: strides (I, B·I, 1)
    h0 = torch.randn(B, H) * 0.5
    lengths = torch.tensor([6, 1, 3, 6, 2, 5, 6, 4, 1])
    y, h_n = emulate(emulator, x, params, h0, lengths, False, cluster_size, weights_in_smem)
    y_ref, h_ref = rnn_linear_loop(*as_float64(x, *params, h0), lengths=lengths)
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])


def test_cluster_kernel_relu_no_bias_no_h0(emulator):
    B, T, I, H, O = 5, 4, 3, 40, 2
    w_ih, w_hh, _, _, fc_w, _ = params_for(I, H, O, torch.float32, seed=1)
    x = torch.randn(B, T, I)
    y, h_n = emulate(emulator, x, (w_ih, w_hh, None, None, fc_w, None), None, None, True, 2, True)
    y_ref, h_ref = rnn_linear_loop(*as_float64(x, w_ih, w_hh), None, None, *as_float64(fc_w), None,
                                   nonlinearity="relu")
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])


def test_cluster_kernel_bfloat16(emulator):
    B, T, I, H, O = 6, 5, 4, 48, 2
    params = params_for(I, H, O, torch.bfloat16, seed=2)
    x = torch.randn(B, T, I, dtype=torch.bfloat16)
    y, h_n = emulate(emulator, x, params, None, None, False, 4, True)
    assert y.dtype == torch.bfloat16
    y_ref, h_ref = rnn_linear_loop(*as_float64(x, *params))
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.bfloat16])
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.bfloat16])


HOPPER_SMEM = 227 * 1024  # cudaDevAttrMaxSharedMemoryPerBlockOptin on H100/H200


def plan(emu, H, I, dtype_bytes, smem=HOPPER_SMEM, max_cluster=16):
    out = [ctypes.c_int(), ctypes.c_int(), ctypes.c_int64(), ctypes.c_int()]
    if not emu.plan_for(H, I, dtype_bytes, smem, max_cluster, *[ctypes.byref(v) for v in out]):
        return None
    return out[0].value, out[1].value, out[2].value, bool(out[3].value)


def test_launch_plan(emulator):
    """The smallest cluster whose CTAs hold their weight rows on chip, else the widest from L2."""
    state = 2 * 4 * 4  # bytes per hidden unit of the double-buffered fp32 state of a 4-sequence tile
    # H = 1024, I = 256, bf16: 16 CTAs of 64 rows, 64·1280·2 + 32 KiB = 192 KiB each.
    assert plan(emulator, 1024, 256, 2) == (16, 64, 64 * 1280 * 2 + 1024 * state, True)
    # H = 256, I = 32, fp32: one CTA would need 288 KiB; two hold 144 KiB each.
    assert plan(emulator, 256, 32, 4) == (2, 128, 128 * 288 * 4 + 256 * state, True)
    # H = 2048, bf16: 128 rows · 2304 · 2 = 576 KiB per CTA even at 16: weights stay in L2.
    assert plan(emulator, 2048, 256, 2) == (16, 128, 2048 * state, False)
    # Before sm_90 (no clusters) the one CTA reads its weights from L2.
    assert plan(emulator, 1024, 256, 2, max_cluster=1) == (1, 1024, 1024 * state, False)
    # The state itself no longer fits: no plan (H past ~7000).
    assert plan(emulator, 8000, 16, 2) is None
