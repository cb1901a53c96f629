"""``run.py --gpu-proof --out DIR``: the whole GPU proof in one command of at most 9 minutes.

1. ``pytest -m gpu`` (compiled kernels, compile, CUDA graphs, csrc), log into DIR; at its
   deadline pytest is interrupted (SIGINT), so that it still names its failures, its slowest
   tests and those it cut off (benchmarks/pytest_unfinished.py) and writes its junit report,
   and killed with its children INTERRUPT_GRACE_S later;
2. the GPU benchmark suite (benchmarks/grid.py's order: issue 4's targets first, then the
   GRU and LSTM against cuDNN), in worker processes: a sticky CUDA fault is charged to the
   job that launched it and a fresh worker runs the jobs after it (run.py's supervise);
then plots and summary.md. Each step runs in its own process with its own time
budget, killed with its children when the budget is spent, so that one hung or
crashed step cannot take the others with it. DIR ends up with at most 7 flat
files (the device tool brings back 8, at most 2 folders deep):
<device>-<date>.json, bench.log, pytest_gpu.log, 3 plots, summary.md.

The static report (benchmarks/static_report.py) is no step of the proof: it compiles
without a GPU, and the two H200 runs that built it reproduced the locally built
benchmarks/results/static_sm90a_triton3.6.json row for row (commits a24f9b9 and 8b444a3).
"""

import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks import pytest_unfinished, report

ROOT = Path(__file__).resolve().parents[1]
MAX_FILES = 8
# How the proof's summary points at the static report, which it does not build.
STATIC_NOTE = ("The static report is not part of the proof: it is built locally "
               "(`PYTHONPATH=/tmp/t36:. python benchmarks/static_report.py`, triton 3.6 at /tmp/t36), "
               "and two H200 runs (commits a24f9b9 and 8b444a3) reproduced "
               "benchmarks/results/static_sm90a_triton3.6.json row for row.")

# Seconds. 9 minutes in all, inside the device tool's 10 per command.
TOTAL_S = 540
# Compiling the kernels dominates pytest -m gpu: on the H200 (16 cores) 12 workers took 195 s for
# 55 tests (the family's two-layer cases 50-110 s each); with 71 tests, 285 s were not enough for
# the last 4. At this deadline pytest is interrupted (SIGINT), not killed.
PYTEST_S = 300
# After the SIGINT: xdist's controller waits up to 10 s (execnet's EXIT_TIMEOUT) for workers
# busy in a test before it kills them, then prints the failures and writes the junit report
# (6.7 s with 2 workers, 9.2 s with 6, all in 60 s sleeps, on a loaded 2-core machine); past
# this grace the step's whole process group is killed, reports or not.
INTERRUPT_GRACE_S = 20
FINISH_S = 20           # plots and summary
PYTEST_WORKERS = 12
JOB_GRACE_S = 40        # the longest single benchmark job (a torch.compile) past the suite's deadline
# pytest's report: the failures and errors with their tracebacks (-rfE: also in the short summary,
# with skip reasons, s), and the slowest tests, to see which ones a deadline cut off.
PYTEST_REPORT = ("-rfEs", "--durations=30")


def run_step(cmd, log_path, timeout_s, env, *, interrupt_grace_s=None, stamp=False):
    """(result, seconds) of cmd run in ROOT, output to log_path; result: its exit code, "interrupted"
    or "timeout".

    At the deadline the step's process group is killed ("timeout"). With interrupt_grace_s,
    its main process is first sent SIGINT and given that long to exit ("interrupted": pytest
    then reports what it ran); the group is killed after it either way, to leave no children.
    stamp: each line of the log begins with the seconds since the step started.
    """
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE if stamp else log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True,   # its own group: a timeout kills nvcc and ninja too
                                # A SIGINT that our parent ignores (a background job of a non-interactive
                                # shell) is ignored in every process it starts; Python then never raises
                                # KeyboardInterrupt. The step gets the default, which Python turns into one.
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        copier = None
        if stamp:
            copier = threading.Thread(target=_copy_stamped, args=(proc.stdout, log, start), daemon=True)
            copier.start()
        try:
            rc = proc.wait(timeout=max(timeout_s, 1))
        except subprocess.TimeoutExpired:
            rc = "timeout"
            if interrupt_grace_s:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=interrupt_grace_s)
                    rc = "interrupted"
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:    # the group's last process has exited already
                pass
            proc.wait()
        if copier:
            copier.join(timeout=5)    # a process that left the group may hold the pipe open: do not wait on it
    return rc, time.monotonic() - start


def _copy_stamped(stream, log, start):
    try:
        for line in iter(stream.readline, b""):
            log.write(f"[{time.monotonic() - start:6.1f} s] {line.decode(errors='replace')}")
            log.flush()
    except ValueError:    # run_step stopped waiting for us and closed the log
        pass


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


def failed_tests(path, limit=30):
    """"classname::name: message" of each failed or erroring test in a pytest junit XML file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    failed = []
    for case in root.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            message = (problem.get("message") or "").strip().splitlines()
            failed.append(f"{case.get('classname')}::{case.get('name')}" + (f": {message[0][:200]}" if message else ""))
    return failed[:limit]


def pytest_detail(rc, counts, log_path, deadline_s):
    """The summary's line for the pytest step: its counts, or why there are none."""
    if counts:
        passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        detail = (f"{counts['tests']} tests: {passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
                  f"{counts['skipped']} skipped")
        if rc == "interrupted":
            detail = (f"interrupted at its {deadline_s:.0f} s deadline, when {counts['tests']} tests had run "
                      f"(the slowest in pytest_gpu.log): " + detail.split(": ", 1)[1])
        return detail
    # Killed: pytest writes its junit report at the end.
    lines = Path(log_path).read_text(errors="replace").strip().splitlines()
    return f"no junit report; the log ends: {lines[-1][:300] if lines else '(empty)'!r}"


def gpu_proof(out_dir, *, total_s=TOTAL_S, pytest_args=("tests", "-m", "gpu"), cuda=None):
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
    deadline_s = min(PYTEST_S, left() - INTERRUPT_GRACE_S - FINISH_S)
    log = out_dir / "pytest_gpu.log"
    unfinished = work / "unfinished.jsonl"    # the tests the deadline cut off (benchmarks/pytest_unfinished.py)
    rc, took = run_step([sys.executable, "-m", "pytest", *pytest_args, *workers, "-q", *PYTEST_REPORT,
                         "-p", "no:cacheprovider", "-p", "benchmarks.pytest_unfinished", f"--junitxml={junit}"],
                        log, deadline_s, dict(env, **{pytest_unfinished.ENV: str(unfinished)}),
                        interrupt_grace_s=INTERRUPT_GRACE_S)
    steps.append(("pytest " + " ".join(pytest_args), rc, took, pytest_detail(rc, junit_counts(junit), log, deadline_s)))
    failures = failed_tests(junit)
    cut_off = [json.loads(line) for line in unfinished.read_text().splitlines()] if unfinished.exists() else []
    remove_stale_locks(ext_dir)

    # 2. the GPU benchmark suite
    if cuda:
        budget = left() - FINISH_S
        rc, took = run_step([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--out", str(out_dir),
                             "--budget-s", str(max(budget - JOB_GRACE_S, 1)), "--no-tables", "--no-progress"],
                            out_dir / "bench.log", budget, env, stamp=True)
        detail = "rows in the results JSON; output in bench.log (each line stamped with the seconds since its start)"
        if rc != 0:
            tail = (out_dir / "bench.log").read_text(errors="replace")[-1500:]
            detail += f"; its end: {tail!r}"
        steps.append(("benchmark suite", rc, took, detail))
    else:
        steps.append(("benchmark suite", "skipped", 0.0, "no CUDA device: the GPU suite needs one"))

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
    summary = summary_text(steps, failures, devices, skipped, plot_note, time.monotonic() - start, cut_off)
    (out_dir / "summary.md").write_text(summary)
    shutil.rmtree(work, ignore_errors=True)
    return summary + files_check(out_dir)


def report_prefix(device):
    from benchmarks.harness import device_slug
    return device_slug(device) + "-"


def summary_text(steps, failures, devices, skipped, plot_note, took, cut_off=()):
    lines = ["# GPU proof", "", f"{took:.0f} s in all.", "", "| step | exit | seconds | result |", "|---|---|---|---|"]
    lines += [f"| {name} | {rc} | {secs:.0f} | {detail} |" for name, rc, secs, detail in steps]
    if failures:
        lines += ["", "Failed tests (tracebacks in pytest_gpu.log):", ""] + [f"- {f}" for f in failures]
    if cut_off:
        lines += ["", "Tests running when pytest was stopped (seconds they had run):", ""]
        lines += [f"- {t['nodeid']} ({t['seconds']:.0f} s)" for t in cut_off]
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
    lines += ["", STATIC_NOTE]
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
