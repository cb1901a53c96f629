"""The kernels' launch parameters timed against each other on a GPU.

    python benchmarks/tune.py --out DIR      # a GPU: every configuration × variant, ~4 minutes
    python benchmarks/tune.py --smoke        # CPU, the Triton interpreter, tiny shapes: every variant's
                                             # outputs against the launcher's own choice (CI runs it)

The launchers choose num_warps and the batch tile BLOCK_B by the static report's issue slots per
step. The first GPU run (an H200, benchmarks/results/gpu_runs/) found the bf16 step at H = 128 taking
~930 cycles against a floor of 192: with B = 64 in tiles of 16, four programs on 132 SMs and one warp
per scheduler, a step is the latency of its dependent chain, which issue slots do not rank. So each
configuration below runs with the launcher's choice and with every variant of VARIANTS (IEEE fp32
also with FFMA), through rnn_linear.LAUNCH_OVERRIDES, and a row records, per variant: the device
time per launch (a CUDA graph of CALLS launches, median of REPLAYS replays), shared memory,
registers and spills, and the largest difference of its outputs from the launcher's choice (a
variant that changes the result is wrong, not fast).

Compiling dominates (~10 s a kernel): it runs first, in parallel processes (one launch of every
variant, which fills Triton's disk cache), then the timing runs alone, one variant at a time.
Rows go to DIR/tune-<device>-<date>.json; `run.py --collect DIR` takes them in.
"""

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "--smoke" in sys.argv[1:]:
    os.environ.setdefault("TRITON_INTERPRET", "1")    # before triton is imported: CPU tensors, interpreted

import torch  # noqa: E402

from fused_rnn.kernels import elman, gru, lstm, rnn_linear  # noqa: E402

# Launch parameters tried against the launcher's own choice: each a LAUNCH_OVERRIDES dict.
VARIANTS = ({"num_warps": 4}, {"num_warps": 8}, {"BLOCK_B": 32}, {"BLOCK_B": 64},
            {"BLOCK_B": 32, "num_warps": 8})
# IEEE fp32 (allow_tf32=False) also without tensor cores: FFMA against 3xTF32's three passes (1326
# issue slots per step at H = 128 in the static report, 2.4 ms for the long forward on the H200
# against cuDNN's 1.05).
IEEE_VARIANTS = ({"PRECISION": "ieee"}, {"PRECISION": "ieee", "num_warps": 8})


def variants(dtype, allow_tf32):
    return VARIANTS + (IEEE_VARIANTS if dtype == torch.float32 and not allow_tf32 else ())
CALLS = 10          # launches per CUDA graph
REPLAYS = 20
LONG = dict(B=64, T=1024, I=64, H=128)
WIDE_BATCH = dict(B=4096, T=64, I=32, H=64)
SEED = dict(B=32, T=5, I=10, H=20)
CELL_MODULES = {"rnn_tanh": elman, "gru": gru, "lstm": lstm}
GATES = {"rnn_tanh": 1, "gru": 3, "lstm": 4}


def configurations(smoke):
    """[(name, kind, shape, dtype, allow_tf32)]: kind is "forward", "train" (forward saving states,
    then the backward sweep) or a cell of the layer kernels (forward and backward)."""
    if smoke:
        tiny = dict(B=40, T=3, I=8, H=20)
        return [("rnn_linear_fp32_forward", "forward", tiny, torch.float32, False),
                ("rnn_linear_fp32_train", "train", tiny, torch.float32, True),
                ("gru_fp32", "gru", tiny, torch.float32, True),
                ("lstm_fp32", "lstm", tiny, torch.float32, True),
                ("elman_fp32", "rnn_tanh", tiny, torch.float32, True)]
    return [("seed_tf32_forward", "forward", SEED, torch.float32, True),
            ("long_bf16_forward", "forward", LONG, torch.bfloat16, False),
            ("long_tf32_forward", "forward", LONG, torch.float32, True),
            ("long_ieee_forward", "forward", LONG, torch.float32, False),
            ("batch4096_bf16_forward", "forward", WIDE_BATCH, torch.bfloat16, False),
            ("batch4096_tf32_forward", "forward", WIDE_BATCH, torch.float32, True),
            ("long_bf16_train", "train", LONG, torch.bfloat16, False),
            ("long_gru_bf16", "gru", LONG, torch.bfloat16, False),
            ("long_lstm_bf16", "lstm", LONG, torch.bfloat16, False),
            ("long_elman_bf16", "rnn_tanh", LONG, torch.bfloat16, False),
            ("batch4096_gru_bf16", "gru", WIDE_BATCH, torch.bfloat16, False)]


def make_call(kind, shape, dtype, allow_tf32, device):
    """A function that launches the configuration's kernels once and returns their outputs."""
    gen = torch.Generator().manual_seed(0)

    def rand(*size, scale=1.0, dt=dtype):
        return (torch.randn(*size, generator=gen) * scale).to(device=device, dtype=dt)

    B, T, I, H = (shape[k] for k in "BTIH")
    scale = H ** -0.5
    if kind in ("forward", "train"):
        x = rand(B, T, I)
        w_ih, w_hh, b_ih, b_hh = rand(H, I, scale=I ** -0.5), rand(H, H, scale=scale), rand(H), rand(H)
        fc_w, fc_b = rand(1, H, scale=scale), rand(1)
        if kind == "forward":
            return lambda: rnn_linear.rnn_linear_fwd(x, w_ih, w_hh, b_ih, b_hh, fc_w, fc_b,
                                                     allow_tf32=allow_tf32)[:1]
        dy = rand(B, 1)

        def train():
            y, _, hs = rnn_linear.rnn_linear_fwd(x, w_ih, w_hh, b_ih, b_hh, fc_w, fc_b,
                                                 allow_tf32=allow_tf32, store_hs=True)
            return (y, hs, *rnn_linear.rnn_linear_bwd_sweep(hs, w_hh, fc_w, dy, allow_tf32=allow_tf32))
        return train
    module, G = CELL_MODULES[kind], GATES[kind]
    xp, w_hh, b_hh = rand(B, T, G * H), rand(G * H, H, scale=scale), rand(G * H)
    dout = rand(B, T, H)

    def layer():
        out, h_n, c_n, hs, aux = module.recurrence_fwd(kind, xp, w_hh, b_hh, None, None, None, reverse=False,
                                                       allow_tf32=allow_tf32, store_saved=True)
        grads = module.recurrence_bwd(kind, hs, aux, w_hh, b_hh, None, None, dout, None, None, None,
                                      reverse=False, allow_tf32=allow_tf32)
        return (out, h_n, *[g for g in grads if g is not None])
    return layer


@contextlib.contextmanager
def launch_overrides(overrides):
    """rnn_linear.LAUNCH_OVERRIDES set to ``overrides`` (None: the launcher's choice) inside the block."""
    rnn_linear.LAUNCH_OVERRIDES.clear()
    rnn_linear.LAUNCH_OVERRIDES.update(overrides or {})
    try:
        yield
    finally:
        rnn_linear.LAUNCH_OVERRIDES.clear()


def run_variant(kind, shape, dtype, allow_tf32, device, overrides):
    """The outputs of one launch with these LAUNCH_OVERRIDES."""
    with launch_overrides(overrides):
        return make_call(kind, shape, dtype, allow_tf32, device)()


def largest_difference(got, want):
    """max |got - want| / max(1, max |want|) over the outputs."""
    worst = 0.0
    for g, w in zip(got, want):
        g, w = g.double(), w.double()
        worst = max(worst, ((g - w).abs().max() / w.abs().max().clamp(min=1.0)).item())
    return worst


def _compile_task(task):
    """Worker process: one launch of a configuration × variant, so that its kernels are compiled
    and in Triton's disk cache. Returns (config name, variant, error or None)."""
    name, kind, shape, dtype, allow_tf32, overrides, device = task
    try:
        run_variant(kind, shape, dtype, allow_tf32, device, overrides)
        if device == "cuda":
            torch.cuda.synchronize()
        return name, overrides, None
    except Exception as e:  # noqa: BLE001  reported in the row, e.g. out of shared memory
        return name, overrides, f"{type(e).__name__}: {str(e)[:300]}"


def record_kernels():
    """A list that every Triton launch from now on appends (kernel name, compiled kernel) to."""
    from triton.runtime.jit import JITFunction
    launched, original = [], JITFunction.run

    def run(self, *args, **kwargs):
        kernel = original(self, *args, **kwargs)
        launched.append((self.fn.__name__, kernel))
        return kernel

    JITFunction.run = run
    return launched


def resources(launched):
    """{kernel: "shared B, registers, spills"} of the kernels launched."""
    return {name: dict(shared=kernel.metadata.shared, registers=getattr(kernel, "n_regs", None),
                       spills=getattr(kernel, "n_spills", None))
            for name, kernel in launched if name != "_split_tf32_kernel"}


def time_call(call):
    """Device seconds per launch: a CUDA graph of CALLS launches, median of REPLAYS replays."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS):
            call()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(REPLAYS):
        start.record()
        graph.replay()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3 / CALLS)
    return sorted(times)[len(times) // 2]


def wall_time(call):
    """Host seconds of one call (the interpreter's: --smoke times nothing worth keeping)."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def compile_all(tasks, workers):
    """{(config, variant): error} after one launch of every task in `workers` processes."""
    errors = {}
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name, overrides, error in pool.map(_compile_task, tasks):
            if error:
                errors[(name, json.dumps(overrides, sort_keys=True))] = error
    return errors


def tune(configs, device, *, workers, time_fn):
    """One row per configuration × variant (the launcher's choice first)."""
    errors = {}
    if workers:
        started = time.monotonic()
        tasks = [(name, kind, shape, dtype, tf32, ov, device) for name, kind, shape, dtype, tf32 in configs
                 for ov in (None, *variants(dtype, tf32))]
        errors = compile_all(tasks, workers)
        print(f"compiled {len(tasks)} launches in {time.monotonic() - started:.0f} s, {len(errors)} failed",
              flush=True)
    rows = []
    launched = record_kernels()
    for name, kind, shape, dtype, tf32 in configs:
        reference = None
        for overrides in (None, *variants(dtype, tf32)):
            key = (name, json.dumps(overrides, sort_keys=True))
            row = dict(config=name, **shape, dtype=str(dtype).removeprefix("torch."), allow_tf32=tf32,
                       overrides=overrides or "launcher")
            try:
                if key in errors:
                    raise RuntimeError(errors[key])
                with launch_overrides(overrides):
                    launched.clear()
                    call = make_call(kind, shape, dtype, tf32, device)
                    got = call()
                    row["kernels"] = resources(launched)
                    reference = got if overrides is None else reference
                    seconds = time_fn(call)
            except Exception as e:  # noqa: BLE001  a variant that cannot launch (shared memory, say) is a row
                rows.append(dict(row, error=f"{type(e).__name__}: {str(e)[:300]}"))
                print(f"{name:<24} {json.dumps(overrides or 'launcher'):<34} {rows[-1]['error'][:80]}", flush=True)
                continue
            row.update(us_per_launch=seconds * 1e6, ns_per_step=seconds * 1e9 / shape["T"],
                       max_rel_difference=largest_difference(got, reference) if reference else None)
            rows.append(row)
            difference = "-" if row["max_rel_difference"] is None else f"{row['max_rel_difference']:.1e}"
            print(f"{name:<24} {json.dumps(overrides or 'launcher'):<34} {seconds * 1e6:10.1f} µs "
                  f"{row['ns_per_step']:8.1f} ns/step  diff {difference}", flush=True)
    return rows


def write_rows(out_dir, rows, device):
    from benchmarks.harness import device_slug, environment
    env = environment(torch.device(device))
    path = Path(out_dir) / f"tune-{device_slug(env['device'])}-{datetime.date.today()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(env, kind="tune", rows=rows), indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {path}")
    return path


def wrong_variants(rows):
    """Rows of variants that failed or changed the outputs (by more than fp32 reassociation, 1e-6)."""
    return [r for r in rows if "error" in r or not (r["max_rel_difference"] or 0.0) <= 1e-6]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="folder for the rows (GPU)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes through the Triton interpreter (CPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes compiling the kernels first (default: none with --smoke, else up to 12)")
    args = p.parse_args(argv)
    if args.smoke:
        rows = tune(configurations(smoke=True), "cpu", workers=args.workers or 0, time_fn=wall_time)
        if args.out:
            write_rows(args.out, rows, "cpu")
        wrong = wrong_variants(rows)
        print(f"{len(wrong)} variants failed or changed the outputs" if wrong else "every variant matches")
        return 1 if wrong else 0
    if not torch.cuda.is_available():
        p.error("timing needs a GPU; --smoke checks the variants on CPU")
    if not args.out:
        p.error("--out DIR is needed")
    workers = args.workers if args.workers is not None else max(1, min(12, (os.cpu_count() or 2) - 2))
    write_rows(args.out, tune(configurations(smoke=False), "cuda", workers=workers, time_fn=time_call), "cuda")
    return 0


if __name__ == "__main__":
    sys.exit(main())
