"""benchmarks/tune.py and the launch overrides it times (rnn_linear.LAUNCH_OVERRIDES)."""

import json

import pytest
import torch

from conftest import kernels
from helpers import DEVICE, make_params, run_python


def test_tune_smoke_checks_every_variant_against_the_launchers_choice(tmp_path):
    """Each variant (num_warps, batch tiles of 32 and 64) of every kernel gives the launcher's outputs."""
    out = run_python("benchmarks/tune.py", "--smoke", "--workers", "1", "--out", str(tmp_path),
                     env={"TRITON_INTERPRET": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "every variant matches" in out.stdout and "compiled 32 launches" in out.stdout
    (path,) = tmp_path.glob("tune-*.json")
    rows = json.loads(path.read_text())["rows"]
    assert len(rows) == 32 and [r["overrides"] for r in rows[:2]] == ["launcher", {"num_warps": 4}]
    # 5 configurations × (the launcher's choice + 5 variants), and FFMA for the IEEE fp32 one.
    assert [r["overrides"] for r in rows[6:8]] == [{"PRECISION": "ieee"}, {"PRECISION": "ieee", "num_warps": 8}]
    assert all(r["max_rel_difference"] <= 1e-6 for r in rows[1:8]) and rows[0]["max_rel_difference"] == 0.0


def test_batch_tile_override_launches_fewer_programs(monkeypatch):
    """BLOCK_B = 32 over B = 40: 2 programs of 32 sequences instead of 3 of 16, the same y."""
    grids = []
    real = kernels._launch

    def launch(kernel, grid, wrap, *args, **kwargs):
        grids.append(kernels._overridden(grid, kwargs)[0] if kernels.LAUNCH_OVERRIDES else grid)
        real(kernel, grid, wrap, *args, **kwargs)

    monkeypatch.setattr(kernels, "_launch", launch)
    params = make_params(8, 20, 2, seed=3)
    x = torch.randn(40, 4, 8, device=DEVICE)
    y, _, _ = kernels.rnn_linear_fwd(x, *params, allow_tf32=True)
    monkeypatch.setitem(kernels.LAUNCH_OVERRIDES, "BLOCK_B", 32)
    y32, _, _ = kernels.rnn_linear_fwd(x, *params, allow_tf32=True)
    assert grids == [(3,), (2,)]
    torch.testing.assert_close(y32, y, atol=1e-6, rtol=1e-6)


def test_batch_tile_override_must_be_a_multiple_of_the_launchers(monkeypatch):
    monkeypatch.setitem(kernels.LAUNCH_OVERRIDES, "BLOCK_B", 24)
    params = make_params(8, 20, 2, seed=3)
    with pytest.raises(ValueError, match="multiple of 16, got 24"):
        kernels.rnn_linear_fwd(torch.randn(5, 4, 8, device=DEVICE), *params, allow_tf32=True)
