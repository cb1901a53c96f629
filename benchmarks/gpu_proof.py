"""``run.py --gpu-proof --out DIR``: the whole GPU proof in one command of at most 9 minutes.

1. ``pytest -m gpu`` (compiled kernels, compile, CUDA graphs, csrc), log into DIR;
2. the GPU benchmark suite (benchmarks/grid.py's order: issue 4's targets first), in
   worker processes: a sticky CUDA fault is charged to the job that launched it and
   a fresh worker runs the jobs after it (run.py's supervise);
3. the static report (benchmarks/static_report.py, where present);
then plots and summary.md. Each step runs in its own process with its own time
budget, killed with its children when the budget is spent, so that one hung or
crashed step cannot take the others with it. DIR ends up with at most 8 flat
files (the device tool brings back 8, at most 2 folders deep):
<device>-<date>.json, bench.log, pytest_gpu.log, static_*.json, 3 plots, summary.md.
"""

import glob
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
STATIC_REPORT = ROOT / "benchmarks" / "static_report.py"
MAX_FILES = 8

# Seconds. 9 minutes in all, inside the device tool's 10 per command.
TOTAL_S = 540
# Compiling the kernels dominates pytest -m gpu: on the H200 (16 cores) 4 workers had not finished
# in 170 s, 12 took 195 s for the 55 tests (the family's two-layer cases 50-110 s each).
PYTEST_S = 240
STATIC_S = 75         # 65 s on the H200
FINISH_S = 20           # plots and summary
PYTEST_WORKERS = 12
JOB_GRACE_S = 40        # the longest single benchmark job (a torch.compile) past the suite's deadline


def run_step(cmd, log_path, timeout_s, env):
    """(exit code or "timeout", seconds) of cmd run in ROOT, output to log_path."""
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)    # its own group: a timeout kills nvcc and ninja too
        try:
            rc = proc.wait(timeout=max(timeout_s, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
    return rc, time.monotonic() - start


def step_env(ext_dir):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TORCH_EXTENSIONS_DIR=str(ext_dir))
    # A plain copy of the repository, no pip install: fused_rnn comes from the checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def remove_stale_locks(ext_dir):
    """torch.utils.cpp_extension waits forever on the lock a killed build left behind."""
    for lock in glob.glob(os.path.join(ext_dir, "*", "lock")):
        os.remove(lock)


def junit_counts(path):
    """{"tests", "failures", "errors", "skipped"} from a pytest junit XML file, or None."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}


def failed_tests(path, limit=20):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    names = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
             if c.find("failure") is not None or c.find("error") is not None]
    return names[:limit]


def gpu_proof(out_dir, *, total_s=TOTAL_S, pytest_args=("-m", "gpu"), cuda=None):
    """Run the proof into out_dir; return summary.md's text."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    start = time.monotonic()
    out_dir = Path(out_dir).resolve()    # the steps run in ROOT: the same folder for them as for us
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fused_rnn_proof_"))
    ext_dir = work / "torch_extensions"
    env = step_env(ext_dir)
    steps = []

    def left():
        return total_s - (time.monotonic() - start)

    # 1. pytest -m gpu
    junit = work / "junit.xml"
    # Compiling the kernels dominates this step; pytest-xdist (on the GPU machines)
    # spreads it over CPU cores.
    workers = ["-n", str(PYTEST_WORKERS)] if cuda and importlib.util.find_spec("xdist") else []
    rc, took = run_step([sys.executable, "-m", "pytest", "tests", *pytest_args, *workers, "-q", "-rs",
                         "-p", "no:cacheprovider", f"--junitxml={junit}"], out_dir / "pytest_gpu.log",
                        min(PYTEST_S, left() - STATIC_S - FINISH_S), env)
    counts = junit_counts(junit)
    if counts:
        passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        detail = (f"{counts['tests']} tests: {passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
                  f"{counts['skipped']} skipped")
    else:   # cut off: pytest writes its junit report at the end
        lines = (out_dir / "pytest_gpu.log").read_text(errors="replace").strip().splitlines()
        detail = f"no junit report; the log ends: {lines[-1][:300] if lines else '(empty)'!r}"
    steps.append(("pytest " + " ".join(pytest_args), rc, took, detail))
    failures = failed_tests(junit)
    remove_stale_locks(ext_dir)

    # 2. the GPU benchmark suite
    if cuda:
        budget = left() - STATIC_S - FINISH_S
        rc, took = run_step([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--out", str(out_dir),
                             "--budget-s", str(max(budget - JOB_GRACE_S, 1)), "--no-tables", "--no-progress"],
                            out_dir / "bench.log", budget, env)
        detail = "rows in the results JSON; output in bench.log"
        if rc != 0:
            tail = (out_dir / "bench.log").read_text(errors="replace")[-1500:]
            detail += f"; its end: {tail!r}"
        steps.append(("benchmark suite", rc, took, detail))
    else:
        steps.append(("benchmark suite", "skipped", 0.0, "no CUDA device: the GPU suite needs one"))

    # 3. the static report
    if STATIC_REPORT.exists():
        static_out = work / "static"
        rc, took = run_step([sys.executable, str(STATIC_REPORT), "--out", str(static_out)], work / "static.log",
                            left() - FINISH_S, env)
        copied = sorted(glob.glob(str(static_out / "static_*.json")))[:1]   # one: 8 files in all
        for path in copied:
            shutil.copy(path, out_dir)
        log_tail = (work / "static.log").read_text(errors="replace")[-1500:] if rc != 0 else ""
        detail = ", ".join(Path(p).name for p in copied) or "no static_*.json"
        steps.append(("static report", rc, took, detail + (f"; log tail: {log_tail!r}" if log_tail else "")))
    else:
        steps.append(("static report", "skipped", 0.0, "benchmarks/static_report.py is not in this checkout"))

    # Plots and the summary, from the results this run wrote.
    files = report.results_files(out_dir)
    devices = report.by_device(files)
    skipped = [s for _, data in files for s in data.get("skipped", [])]
    plot_note = ""
    for dev in devices.values():
        try:
            report.plots(dev, out_dir, prefix=report_prefix(dev.name))
        except ImportError:
            plot_note = "matplotlib is not installed: no plots"
    summary = summary_text(steps, failures, devices, skipped, plot_note, time.monotonic() - start)
    (out_dir / "summary.md").write_text(summary)
    shutil.rmtree(work, ignore_errors=True)
    return summary + files_check(out_dir)


def report_prefix(device):
    from benchmarks.harness import device_slug
    return device_slug(device) + "-"


def summary_text(steps, failures, devices, skipped, plot_note, took):
    lines = ["# GPU proof", "", f"{took:.0f} s in all.", "", "| step | exit | seconds | result |", "|---|---|---|---|"]
    lines += [f"| {name} | {rc} | {secs:.0f} | {detail} |" for name, rc, secs, detail in steps]
    if failures:
        lines += ["", "Failed tests:", ""] + [f"- {f}" for f in failures]
    from benchmarks.harness import STICKY_FAULT
    from benchmarks.run import WORKER_DIED
    for title, prefix in (("CUDA faults", STICKY_FAULT), ("Workers that died in a job", WORKER_DIED)):
        ended = list(dict.fromkeys(s["reason"] for s in skipped if s["reason"].startswith(prefix)))
        if ended:
            lines += ["", f"{title}: {len(ended)}", ""] + [f"- {reason}" for reason in ended]
    if skipped:
        reasons = {}
        for s in skipped:
            reasons.setdefault(s["reason"], []).append(f"{s['case']}/{s['mode']}/{s['impl']}")
        lines += ["", f"Benchmark rows skipped: {len(skipped)}", ""]
        lines += [f"- {reason} ({len(where)}: {', '.join(where[:4])}{' …' if len(where) > 4 else ''})"
                  for reason, where in reasons.items()]
    if plot_note:
        lines += ["", plot_note]
    for dev in devices.values():
        lines += ["", report.device_heading(dev), "", "Targets:", ""] + [f"- {t.line()}" for t in report.targets(dev)]
        lines += ["", report.speed_section({dev.name: dev})]
    if not devices:
        lines += ["", "No benchmark rows were written."]
    return "\n".join(lines) + "\n"


def files_check(out_dir):
    """A line of warning if out_dir holds more than the device tool brings back."""
    entries = [p for p in Path(out_dir).rglob("*") if p.is_file()]
    deep = [p for p in entries if len(p.relative_to(out_dir).parts) > 3]
    if len(entries) > MAX_FILES or deep:
        return f"\nWARNING: {len(entries)} files in {out_dir} (at most {MAX_FILES} come back), {len(deep)} too deep\n"
    return ""


def main(out_dir, **kwargs):
    summary = gpu_proof(out_dir, **kwargs)
    print(summary)
    return summary
