"""The runnable scripts: the training example, and the benchmark's refusal to write nowhere."""

from helpers import run_python


def test_train_sum_example_learns():
    out = run_python("examples/train_sum.py", "--steps", "40")
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[-1]) for line in out.stdout.splitlines() if line.startswith("step")]
    assert len(losses) >= 2 and losses[-1] < 0.3 * losses[0], out.stdout


def test_benchmark_modes_that_write_files_need_out():
    for mode in ("--smoke", "--gpu-proof"):
        out = run_python("benchmarks/run.py", mode)
        assert out.returncode == 2 and "need --out DIR" in out.stderr, out.stderr
