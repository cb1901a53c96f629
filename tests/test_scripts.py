"""The runnable scripts: the training example and the benchmark's refusal without a GPU."""

import pytest
import torch

from conftest import run_python


def test_train_sum_example_learns():
    out = run_python("examples/train_sum.py", "--steps", "40")
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[-1]) for line in out.stdout.splitlines() if line.startswith("step")]
    assert len(losses) >= 2 and losses[-1] < 0.3 * losses[0], out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_bench_seed_needs_cuda():
    out = run_python("benchmarks/bench_seed.py")
    assert out.returncode != 0 and "needs CUDA" in out.stderr
