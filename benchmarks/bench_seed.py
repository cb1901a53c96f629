"""Seed-shape timing on a GPU: the seed model as written (cuDNN) vs fused_rnn.SimpleRNN.

    python benchmarks/bench_seed.py            # needs CUDA; appends to benchmarks/results/

Times forward (no grad) and train (forward + backward of a loss) with
triton.testing.do_bench (median, p20, p80 of many calls after warm-up), both
sides in IEEE fp32 (cuDNN's TF32 is switched off so neither side rounds
products). Rows follow the schema of benchmarks/results/*.json:
{"device", "torch", "triton", "cuda", "date", "commit", "rows": [{"case", "B", "T", "I",
"H", "O", "dtype", "mode", "impl", "median_ms", "p20_ms", "p80_ms", "peak_mem_bytes"}]}.
"""

import datetime
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fused_rnn import SimpleRNN  # noqa: E402
from seed_model import SimpleRNN as SeedRNN  # noqa: E402

SEED_CASE = dict(case="seed", B=32, T=5, I=10, H=20, O=1, dtype="float32")


def time_call(fn):
    """(median, p20, p80) in ms and the peak memory fn allocates, in bytes."""
    import triton.testing

    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    median, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
    return median, p20, p80, peak


def bench_case(case):
    B, T, I, H, O = (case[k] for k in "BTIHO")
    dtype = getattr(torch, case["dtype"])
    torch.manual_seed(0)
    stock = SeedRNN(I, H, O).cuda().to(dtype)
    fused = SimpleRNN(I, H, O, backend="triton").cuda().to(dtype)
    fused.load_state_dict(stock.state_dict())
    x = torch.randn(B, T, I, device="cuda", dtype=dtype)
    rows = []
    for impl, model in (("stock", stock), ("fused", fused)):
        def forward(model=model):
            with torch.no_grad():
                model(x)

        def train(model=model):
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()

        for mode, fn in (("forward", forward), ("train", train)):
            median, p20, p80, peak = time_call(fn)
            rows.append(dict(case, mode=mode, impl=impl, median_ms=median, p20_ms=p20, p80_ms=p80,
                             peak_mem_bytes=peak))
    return rows


def environment():
    import triton

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "date": datetime.date.today().isoformat(), "commit": commit or None}


def main():
    if not torch.cuda.is_available():
        sys.exit("bench_seed.py times GPU kernels and needs CUDA; none is available here.")
    torch.backends.cudnn.allow_tf32 = False  # matched precision: IEEE fp32 on both sides
    torch.backends.cuda.matmul.allow_tf32 = False
    result = dict(environment(), rows=bench_case(SEED_CASE))
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{result['device'].replace(' ', '_')}-{result['date']}.json"
    path = out_dir / name
    if path.exists():  # several runs in one day: keep every row
        previous = json.loads(path.read_text())
        result["rows"] = previous["rows"] + result["rows"]
    path.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["rows"][-4:]:
        print(f"{row['case']:>6} {row['mode']:>8} {row['impl']:>6}: {row['median_ms'] * 1e3:8.1f} µs "
              f"(p20 {row['p20_ms'] * 1e3:.1f}, p80 {row['p80_ms'] * 1e3:.1f})")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
