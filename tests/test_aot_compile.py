"""Every kernel configuration the launchers choose compiles for Hopper (sm_90a), no GPU needed."""

from conftest import run_python
from fused_rnn.ops import auto_takes_kernel


def test_kernels_compile_for_sm90():
    out = run_python("tests/aot_sm90.py", env={"TRITON_INTERPRET": None}, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "all configurations compile for sm_90a" in out.stdout


def test_auto_line():
    """auto's kernel region: every padded size ≤ 128 (where ptxas shows no fp32 spills at H)."""
    assert auto_takes_kernel(10, 20, 1)
    assert auto_takes_kernel(128, 128, 128)
    assert not auto_takes_kernel(10, 129, 1)
    assert not auto_takes_kernel(200, 20, 1)
    assert not auto_takes_kernel(10, 20, 129)
