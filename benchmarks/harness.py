"""Runs grid jobs: builds each implementation on one set of weights, times it, and makes result rows.

A results file (benchmarks/results/<device>-<date>.json) is
{"device", "torch", "triton", "cuda", "date", "commit", "rows": [...], "skipped": [...]}
with the environment of its latest run; each row is
{"case", "B", "T", "I", "H", "O", "dtype", "mode", "impl", "precision", "backend",
 "median_ms", "p20_ms", "p80_ms", "peak_mem_bytes", "samples", "calls", "threads",
 "over_stock", "commit", "torch", "triton"}.
``over_stock`` is the median over rounds of this row's time over stock's in the
same round (timing.paired_ratio), for rows timed beside stock; None otherwise.
``backend`` is what ran ("cudnn"/"aten" for stock, fused_rnn's choice for ours: "triton",
"cuda" or "torch"). ``peak_mem_bytes`` is what one call allocates above what was
allocated before it (CUDA only: torch keeps no allocator statistics on CPU; None
for a CUDA graph, whose memory is reserved at capture). A job an implementation
cannot run goes to "skipped" with the reason.
"""

import contextlib
import datetime
import gc
import inspect
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fused_rnn import SimpleRNN as FusedRNN
from benchmarks import seed_rnn, timing

ROOT = Path(__file__).resolve().parents[1]
# Model calls one CUDA graph replay makes: enough that the replay's own launch
# (~5 µs) is spread thin, few enough to capture in a moment.
GRAPH_CALLS = 20


class Unsupported(Exception):
    """This implementation cannot run this job (the message says why)."""


# What torch and Triton say of the CUDA errors that poison the context: once one
# happened, every later CUDA call in the process fails with it.
STICKY_MESSAGE = re.compile(
    r"illegal memory access|illegal instruction|misaligned address|unspecified launch failure|device-side assert"
    r"|cudaError(IllegalAddress|IllegalInstruction|MisalignedAddress|LaunchFailure|Assert|HardwareStackError"
    r"|InvalidPc|LaunchTimeout|ECCUncorrectable)|CUDA_ERROR_(ILLEGAL|MISALIGNED|LAUNCH_FAILED|ASSERT|HARDWARE"
    r"|INVALID_PC|LAUNCH_TIMEOUT|ECC)")
# How skip reasons of a job that poisoned the context begin.
STICKY_FAULT = "sticky CUDA fault"


class StickyFault(Exception):
    """A CUDA fault that poisoned the process's context, raised during ``stage`` of a job."""

    def __init__(self, stage, error):
        super().__init__(f"during {stage}: {describe_error(error)}")
        self.stage = stage
        self.error = error


def describe_error(error):
    """One line: the exception's type and first line, and the cudaError's name where the rest gives it."""
    text = str(error).strip()
    first = text.splitlines()[0][:300] if text else ""
    code = re.search(r"cudaError\w+", text)
    suffix = f" ({code.group()})" if code and code.group() not in first else ""
    return f"{type(error).__name__}: {first}{suffix}"


def synchronize(device):
    """Wait for the device's queued work, so that a fault in it surfaces now, charged to what launched it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_usable(device):
    """Whether the CUDA device still runs work: after a sticky fault every call fails, these too."""
    try:
        torch.cuda.synchronize(device)
        return (torch.ones(1, device=device) + 1).item() == 2.0
    except torch.OutOfMemoryError:    # full, after an out-of-memory error: it answered, it is not faulted
        return True
    except Exception:    # noqa: BLE001  whatever the fault raises
        return False


def poisons_context(error, device):
    """Whether error left the process's CUDA context unusable (no later job can run in this process).

    On a GPU the device answers (an out-of-memory error or a cuDNN refusal leaves it
    usable; a non-sticky CUDA error too, whatever its message). Off a GPU there is
    no context to ask, and the exception's type and message decide.
    """
    if isinstance(error, Unsupported):
        return False
    if device.type == "cuda":
        return not device_usable(device)
    accelerator_error = getattr(torch, "AcceleratorError", ())    # torch >= 2.8
    return isinstance(error, accelerator_error) or bool(STICKY_MESSAGE.search(str(error)))


@contextlib.contextmanager
def stage(device, name):
    """Run a stage of a job, then synchronize: a sticky fault raised in it, or by the work it
    queued, leaves as StickyFault(name); other exceptions pass through unchanged."""
    try:
        try:
            yield
        finally:
            synchronize(device)    # also after Unsupported: the work queued before it is this stage's
    except (Unsupported, StickyFault):
        raise
    except Exception as e:
        if poisons_context(e, device):
            raise StickyFault(name, e) from e
        raise


def set_precision(precision, cuda):
    """Set torch's TF32 switches for a row's precision; return our allow_tf32 to match.

    "tf32" is stock's default: cuDNN's RNN rounds fp32 products to TF32
    (torch.backends.cudnn.allow_tf32 = True) while matmuls stay IEEE
    (torch.backends.cuda.matmul.allow_tf32 = False). "ieee": neither rounds.
    """
    tf32 = precision == "tf32"
    if tf32 and not cuda:
        raise ValueError("precision 'tf32' exists only on a GPU")
    torch.backends.cudnn.allow_tf32 = tf32 or precision in ("bf16", "fp16")   # torch's default, moot there
    torch.backends.cuda.matmul.allow_tf32 = False
    return tf32


def _models(job, device, allow_tf32, backend):
    """(stock, fused) with the same weights, on device in the job's dtype."""
    s = job.shape
    dtype = getattr(torch, job.dtype)
    torch.manual_seed(0)
    if job.model:
        stock = seed_rnn.GeneralizedRNN(s["I"], s["H"], s["O"], **dict(job.model))
    else:
        stock_cls = seed_rnn.SimpleRNN if dtype == torch.float32 else seed_rnn.SimpleRNNAnyDtype
        stock = stock_cls(s["I"], s["H"], s["O"])
    fused = FusedRNN(s["I"], s["H"], s["O"], backend=backend, allow_tf32=allow_tf32, **dict(job.model))
    fused.load_state_dict(stock.state_dict())
    return stock.to(device=device, dtype=dtype), fused.to(device=device, dtype=dtype)


def _forward(model, x):
    def call():
        with torch.no_grad():
            return model(x)
    return call


def _train_step(model, x, target):
    # SGD: the cheapest optimizer step, so that the model dominates the step's time.
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def call():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), target).backward()
        opt.step()
    return call


def _graph_forward(model, x):
    """A CUDA graph of GRAPH_CALLS inference calls, and its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():   # warm-up off the default stream, as capture requires
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        for _ in range(GRAPH_CALLS):
            model(x)
    return graph.replay


def fused_backend(fused, x, needs_grad, allow_tf32):
    """The backend fused_rnn takes for this call: "triton", "cuda" or "torch".

    SimpleRNN.backend_for(x) assumes inference in IEEE fp32, but whether the
    kernel can launch also depends on the gradient and TF32 (its shared-memory
    tiles), so ask select_backend with both, where this fused_rnn takes them.
    """
    rnn = fused.rnn
    if getattr(rnn, "num_layers", 1) > 1 or getattr(rnn, "bidirectional", False) or type(rnn).__name__ != "RNN":
        with torch.set_grad_enabled(needs_grad):    # backend_for counts the gradient as forward does
            return fused.backend_for(x)    # a FAMILY case: the layer driver's choice
    from fused_rnn.ops import select_backend
    params = inspect.signature(select_backend).parameters
    extra = {k: v for k, v in (("needs_grad", needs_grad), ("allow_tf32", allow_tf32)) if k in params}
    return select_backend(fused.backend, x, fused.hidden_size, fused.fc.out_features, **extra)


def build(impl, job, device, allow_tf32):
    """(timing.Candidate, backend that runs, whether peak memory means anything) or raise Unsupported."""
    cuda = device.type == "cuda"
    if impl in ("fused_graph", "fused_cuda") and not cuda:
        raise Unsupported(f"{impl} needs CUDA")
    if impl in ("fused_graph", "fused_cuda") and job.mode != "forward":
        raise Unsupported(f"{impl} is inference only")
    s = job.shape
    dtype = getattr(torch, job.dtype)
    asked = {"fused_cuda": "cuda", "fused_kernel": "triton"}.get(impl, "auto")
    stock, fused = _models(job, device, allow_tf32, asked)
    torch.manual_seed(1)
    x = torch.randn(s["B"], s["T"], s["I"], device=device, dtype=dtype)
    target = torch.randn(s["B"], s["O"], device=device, dtype=dtype)

    if impl.startswith("stock"):
        model = torch.compile(stock) if impl == "stock_compiled" else stock
        backend = "cudnn" if cuda and torch.backends.cudnn.is_acceptable(x) else "aten"
    else:
        model = fused
        try:
            backend = fused_backend(fused, x, job.mode == "train", allow_tf32)
        except RuntimeError as e:    # a forced backend that cannot run here says why
            raise Unsupported(str(e)) from None
    if impl == "fused_graph":
        try:
            return timing.Candidate(_graph_forward(model, x), GRAPH_CALLS), backend, False
        except RuntimeError as e:
            if poisons_context(e, device):
                raise
            raise Unsupported(f"CUDA graph capture failed: {e}") from None
    fn = _forward(model, x) if job.mode == "forward" else _train_step(model, x, target)
    try:
        fn()
    except RuntimeError as e:   # e.g. the csrc extension failed to build; a CUDA fault is no such thing
        if poisons_context(e, device):
            raise
        raise Unsupported(f"{type(e).__name__}: {str(e)[:300]}") from None
    return timing.Candidate(fn), backend, True


def _job_key(job):
    key = dict(case=job.case, **{k: job.shape[k] for k in "BTIHO"}, dtype=job.dtype, mode=job.mode,
               precision=job.precision)
    return dict(key, model=dict(job.model)) if job.model else key


def job_id(job):
    """The job's name on a command line (run.py --only) and in skip reasons, unique in each grid:
    "long/B64-T1024-I64-H128-O1/bfloat16/bf16/forward/stock+fused+fused_graph"."""
    shape = "-".join(f"{k}{job.shape[k]}" for k in "BTIHO")
    return "/".join((job.case, shape, job.dtype, job.precision, job.mode, "+".join(job.impls)))


def run_job(job, device, settings=timing.FULL):
    """(rows, skipped) for one job; StickyFault naming the stage that poisoned the CUDA context.

    The device is synchronized after each stage (each implementation's build, its
    peak-memory call, the timing, the clean-up), so that an asynchronous fault
    surfaces in the stage that queued the faulting work, not in a later one.
    """
    cuda = device.type == "cuda"
    allow_tf32 = set_precision(job.precision, cuda)
    key = _job_key(job)
    candidates, backends, skipped, memory = {}, {}, [], {}
    for impl in job.impls:
        try:
            with stage(device, f"building {impl}"):
                candidates[impl], backends[impl], has_memory = build(impl, job, device, allow_tf32)
        except Unsupported as e:
            skipped.append(dict(key, impl=impl, reason=str(e)))
            continue
        with stage(device, f"measuring {impl}'s peak memory"):
            memory[impl] = timing.cuda_peak_bytes(candidates[impl].fn) if cuda and has_memory else None
    if not candidates:
        return [], skipped
    with stage(device, f"timing {', '.join(candidates)}"):
        stats, samples = timing.measure(candidates, cuda=cuda, budget_s=job.budget_s, settings=settings)
    with stage(device, "freeing its models and graphs"):
        candidates.clear()    # the only references to the models, inputs and CUDA graphs: they go now
        if cuda:
            gc.collect()      # and any reference cycle among them (~50 ms), not at a collection in a later job
            torch.cuda.empty_cache()    # the T sweep's stock rows hold GiBs in the cache otherwise
    threads = None if cuda else torch.get_num_threads()
    rows = [dict(key, impl=impl, backend=backends[impl], median_ms=st.median_ms, p20_ms=st.p20_ms,
                 p80_ms=st.p80_ms, peak_mem_bytes=memory[impl], samples=st.samples, calls=st.calls,
                 threads=threads,
                 over_stock=(timing.paired_ratio(samples, impl, "stock")
                             if "stock" in samples and impl != "stock" else None))
            for impl, st in stats.items()]
    return rows, skipped


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()} ({os.cpu_count()} cores)"


def device_slug(name):
    """A file-name-safe form of a device name: "NVIDIA H100 80GB HBM3" → "NVIDIA_H100_80GB_HBM3"."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_")


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device):
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"device": device_name(device), "torch": torch.__version__, "triton": triton_version,
            "cuda": torch.version.cuda, "date": datetime.date.today().isoformat(), "commit": git_commit()}


def results_path(out_dir, env):
    return Path(out_dir) / f"{device_slug(env['device'])}-{env['date']}.json"


class ResultsFile:
    """One device's results file; rows are appended and the file rewritten after every job,
    so that a run cut off by a timeout keeps what it measured."""

    def __init__(self, path, env):
        self.path = Path(path)
        self.env = env
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"rows": [], "skipped": []}
        self.data.update(env)
        self.data.setdefault("skipped", [])

    def add(self, rows, skipped):
        stamp = {k: self.env[k] for k in ("commit", "torch", "triton")}
        self.data["rows"].extend(dict(row, **stamp) for row in rows)
        self.data["skipped"].extend(skipped)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)


def progress(iterable, total, enabled=True):
    """tqdm's bar where tqdm is installed and wanted; the plain iterable otherwise."""
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(iterable, total=total, unit="job", dynamic_ncols=True)
        except ImportError:
            pass
    return iterable


def not_run(jobs, reason):
    """Skip rows for jobs that were not run, one per implementation."""
    return [dict(_job_key(job), impl=impl, reason=reason) for job in jobs for impl in job.impls]


def run_jobs(jobs, device, results, *, settings=timing.FULL, deadline=None, show_progress=True, log=print,
             on_progress=None):
    """Run jobs in order into a ResultsFile; jobs left when the deadline (time.monotonic()) passes are skipped.

    A job's ordinary error (out of memory, a cuDNN refusal) skips that job. A sticky
    CUDA fault ends what this process can run: it is recorded against the job that
    launched it and returned as {"next", "job", "stage", "error"}, with the jobs from
    index "next" on neither run nor recorded. None when every job was run or recorded.
    on_progress(index, running) is called before job index runs (running=True) and
    once its rows are in the results file (index of the next job, running=False).
    """
    bar = progress(jobs, len(jobs), show_progress)
    log = getattr(bar, "write", log)    # print above tqdm's bar, not through it
    for index, job in enumerate(bar):
        if deadline is not None and time.monotonic() > deadline:
            results.add([], not_run([job], "time budget spent"))
            if on_progress:
                on_progress(index + 1, False)
            continue
        if on_progress:
            on_progress(index, True)
        fault = None
        try:
            rows, skipped = run_job(job, device, settings)
        except StickyFault as e:
            fault = e
        except Exception as e:    # noqa: BLE001  one failing job (OOM, a cuDNN refusal) must not end the run
            fault = StickyFault("the job, outside its synchronized stages", e) if poisons_context(e, device) else None
            rows, skipped = [], not_run([job], f"error: {describe_error(e)}")
        if fault:
            rows, skipped = [], not_run([job], f"{STICKY_FAULT} in job {job_id(job)} {fault}")
        results.add(rows, skipped)
        for row in rows:
            log(format_row(row))
        for s in skipped:
            log(f"skipped {s['case']} {s['mode']} {s['impl']}: {s['reason']}")
        if on_progress:
            on_progress(index + 1, False)
        if fault:
            return dict(next=index + 1, job=job_id(job), stage=fault.stage, error=describe_error(fault.error))
    return None


def format_row(row):
    shape = " ".join(f"{k}={row[k]}" for k in "BTIH")
    memory = f" peak {row['peak_mem_bytes'] / 2**20:.2f} MiB" if row.get("peak_mem_bytes") is not None else ""
    return (f"{row['case']:>11} {shape:<24} {row['dtype']:<8} {row['precision']:<4} {row['mode']:<7} "
            f"{row['impl']:<14} {row['median_ms'] * 1e3:10.2f} µs (p20 {row['p20_ms'] * 1e3:.2f}, "
            f"p80 {row['p80_ms'] * 1e3:.2f}) [{row['backend']}]{memory}")
