"""The benchmark suite: cases × implementations × modes, stock (the seed model) against fused_rnn.

    python benchmarks/run.py                    # this machine's suite: the GPU grid on CUDA, else CPU sizes;
                                                # appends to benchmarks/results/<device>-<date>.json and
                                                # regenerates the README tables and benchmarks/plots/
    python benchmarks/run.py --smoke --out DIR  # tiny shapes, few repetitions, any device (CI)
    python benchmarks/run.py --gpu-proof --out DIR   # pytest -m gpu, then the GPU suite (gpu_proof.py)
    python benchmarks/run.py --tables           # README tables and plots from the committed results
    python benchmarks/run.py --check-targets    # issue 4's targets, met or not, from the committed results
    python benchmarks/run.py --collect DIR      # take a --gpu-proof's files into results/ and plots/
    python benchmarks/run.py --list-jobs        # the jobs a run would do, numbered, with their ids
    python benchmarks/run.py --list-jobs gpu    # the GPU grid's, from any machine, with the time each starts
    python benchmarks/run.py --only ID --in-process --out DIR   # one job, for a repro (compute-sanitizer, ...)

On CUDA the jobs run in a worker process (--isolate, the default there): a
sticky CUDA fault (an illegal memory access, say) poisons its process, so the
worker records the fault against the job that launched it and exits, and a
fresh worker goes on from the next job, within the same time budget.

The grid is in grid.py, the timers in timing.py, the rows in harness.py, the
tables, targets and plots in report.py; benchmarks/README.md says more.
Runs from a plain checkout (no pip install): the checkout's fused_rnn is imported.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))    # the checkout's fused_rnn and benchmarks package, no install needed
from benchmarks.grid import IMPLS  # noqa: E402  (grid imports no torch)

RESULTS = BENCH / "results"
PLOTS = BENCH / "plots"
BENCH_README = BENCH / "README.md"
TOP_README = ROOT / "README.md"
# How a worker starts (a test runs its own script instead), and the exit code of a
# worker whose CUDA context a fault poisoned (the fault is in its results file).
WORKER = [sys.executable, str(Path(__file__).resolve())]
FAULT_EXIT = 3
# How the skip reasons of a job that killed its worker begin.
WORKER_DIED = "the benchmark worker died"
# Seconds a worker's job may run past the deadline before the worker is killed as hung
# (a torch.compile job takes up to ~30; gpu_proof kills the whole suite 40 s past it).
HANG_GRACE_S = 30


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--smoke", action="store_true", help="tiny shapes and few repetitions (needs --out)")
    what.add_argument("--gpu-proof", action="store_true", help="pytest -m gpu, then the GPU suite (needs --out)")
    what.add_argument("--tables", action="store_true", help="regenerate README tables and plots, run nothing")
    what.add_argument("--check-targets", nargs="*", metavar="FILE", default=None,
                      help="print issue 4's targets from these results files (default: benchmarks/results)")
    what.add_argument("--collect", metavar="DIR", help="copy a --gpu-proof folder's results and plots in")
    p.add_argument("--out", metavar="DIR", help="where the results JSON goes (default benchmarks/results)")
    p.add_argument("--cases", help="comma-separated cases to run (seed,long,wide,batch_sweep,T_sweep,H_sweep, "
                                  "or a family case: long_2layer,long_bidir,long_lstm,...)")
    p.add_argument("--only", metavar="ID[,ID...]", help="run only these jobs (ids from --list-jobs)")
    p.add_argument("--impls", help="comma-separated implementations to keep in each job (" + ", ".join(IMPLS) + ")")
    p.add_argument("--start-at", type=int, default=0, metavar="N", help="skip the first N jobs (0-based index)")
    p.add_argument("--list-jobs", nargs="?", const="here", choices=("here", "gpu", "cpu"),
                   help="print the jobs a run would do here (or the GPU's or the CPU's grid), run nothing")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--isolate", action="store_true",
                       help="run the jobs in worker processes, a fresh one after a CUDA fault (default on CUDA)")
    where.add_argument("--in-process", action="store_true",
                       help="run the jobs in this process (default on CPU; after a CUDA fault the rest are skipped)")
    # A worker's: where it reports its progress, the results file and the supervisor's deadline.
    p.add_argument("--worker", metavar="STATE_FILE", help=argparse.SUPPRESS)
    p.add_argument("--results-file", help=argparse.SUPPRESS)
    p.add_argument("--deadline-unix", type=float, help=argparse.SUPPRESS)
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds after which the remaining jobs are skipped (recorded as such)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on CPU (default 1: the seed shape's overhead is a one-thread question)")
    p.add_argument("--no-tables", action="store_true", help="do not regenerate tables and plots after the run")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)    # what a worker is started with
    if args.start_at < 0:
        p.error(f"--start-at must be >= 0, got {args.start_at}")
    if (args.smoke or args.gpu_proof) and not args.out and not args.list_jobs:
        p.error("--smoke and --gpu-proof need --out DIR")
    return args


def select_jobs(args, jobs):
    """The jobs --cases, --only and --impls keep, in the grid's order."""
    from benchmarks import grid, harness

    if args.cases:
        wanted = set(args.cases.split(","))
        unknown = wanted - {j.case for j in grid.gpu_jobs() + grid.cpu_jobs()}
        if unknown:
            sys.exit(f"--cases: unknown case(s) {sorted(unknown)}")
        jobs = [j for j in jobs if j.case in wanted]
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {harness.job_id(j) for j in jobs}
        if unknown:
            sys.exit(f"--only: no such job here: {sorted(unknown)} (run.py --list-jobs lists them)")
        jobs = [j for j in jobs if harness.job_id(j) in wanted]
    if args.impls:
        wanted = args.impls.split(",")
        if set(wanted) - set(IMPLS):
            sys.exit(f"--impls: unknown implementation(s) {sorted(set(wanted) - set(IMPLS))}; known: {IMPLS}")
        jobs = [j._replace(impls=tuple(i for i in j.impls if i in wanted)) for j in jobs]
        jobs = [j for j in jobs if j.impls]
    return jobs


def run_suite(args):
    import torch

    from benchmarks import grid, harness, timing

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(args.threads)
    listed_cuda = {"gpu": True, "cpu": False}.get(args.list_jobs, cuda)
    jobs = select_jobs(args, grid.jobs_for("smoke" if args.smoke else "full", listed_cuda))
    if args.list_jobs:
        # The GPU grid's: when each job starts in a run of them all (grid.estimated_s), to see what a budget reaches.
        for index, job in enumerate(jobs):
            when = f" ~{grid.estimated_s(jobs[:index]):.0f} s" if listed_cuda and not args.smoke else ""
            print(f"{index:3d}{when} {harness.job_id(job)}")
        return None
    env = harness.environment(device)
    out_dir = Path(args.out) if args.out else RESULTS
    path = Path(args.results_file) if args.results_file else harness.results_path(out_dir, env)
    if args.deadline_unix is not None:
        deadline = time.monotonic() + (args.deadline_unix - time.time())
    else:
        deadline = time.monotonic() + args.budget_s if args.budget_s else None
    import fused_rnn
    if args.worker:
        print(f"worker: jobs {args.start_at + 1} to {len(jobs)}", flush=True)
    else:
        print(f"{len(jobs) - args.start_at} jobs on {env['device']} (torch {env['torch']}, triton {env['triton']}, "
              f"fused_rnn from {Path(fused_rnn.__file__).parent}); writing {path}", flush=True)
    if not args.worker and (args.isolate or (cuda and not args.in_process)):
        rc = supervise(jobs, path, env, worker_runner(args.argv, path), deadline, start=args.start_at)
        if rc:
            sys.exit(rc)
        print(f"wrote {len(harness.ResultsFile(path, env).data['rows'])} rows to {path}")
        return path

    results = harness.ResultsFile(path, env)
    settings = timing.SMOKE if args.smoke else timing.FULL if cuda else timing.FULL_CPU
    offset = args.start_at

    def report_progress(index, running, **more):
        write_state(args.worker, dict(next=offset + index, running=running, **more))

    fault = harness.run_jobs(jobs[offset:], device, results, settings=settings, deadline=deadline,
                             show_progress=not args.no_progress, on_progress=report_progress if args.worker else None)
    if fault and args.worker:
        report_progress(fault["next"], False, fault=fault)
        print(f"{harness.STICKY_FAULT} in job {fault['job']}: this worker stops, a fresh one goes on", flush=True)
        sys.stderr.flush()
        os._exit(FAULT_EXIT)    # no clean-up: destructors touching the poisoned context could abort
    if fault:
        reason = (f"not run: the {harness.STICKY_FAULT} in job {fault['job']} poisoned this process's CUDA "
                  f"context (run.py --isolate, the default on CUDA, goes on in a fresh one)")
        results.add([], harness.not_run(jobs[offset + fault["next"]:], reason))
    print(f"wrote {len(results.data['rows'])} rows to {results.path}")
    return path


def write_state(state_file, state):
    tmp = Path(state_file).with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(state_file)


def worker_runner(argv, results_path):
    """run_child(start, deadline) -> (exit code, last state or None): a worker process for the
    jobs from index start, printing to our output, killed if it runs HANG_GRACE_S past the deadline."""
    def run_child(start, deadline):
        with tempfile.TemporaryDirectory(prefix="fused_rnn_bench_") as tmp:
            state_file = Path(tmp) / "state.json"
            cmd = [*WORKER, *argv, "--start-at", str(start), "--worker", str(state_file),
                   "--results-file", str(results_path)]
            if deadline is not None:    # the same deadline, in the clock that processes share
                cmd += ["--deadline-unix", repr(time.time() + deadline - time.monotonic())]
            sys.stdout.flush()
            worker = subprocess.Popen(cmd)    # in our working directory: relative paths in argv mean the same
            try:
                rc = worker.wait(None if deadline is None else max(deadline + HANG_GRACE_S - time.monotonic(), 1))
            except subprocess.TimeoutExpired:    # hung: its job is named from its state, as for a crash
                worker.kill()
                rc = worker.wait()
            state = json.loads(state_file.read_text()) if state_file.exists() else None
        return rc, state
    return run_child


def describe_exit(rc):
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def supervise(jobs, results_path, env, run_child, deadline, *, start=0, log=None):
    """Run jobs[start:] in worker processes, a fresh one after each that a fault or a crash ended.

    A worker reports {"next": index, "running": bool}: "next" is the job it runs (running)
    or the first one it has not recorded. A worker ended by a sticky CUDA fault has recorded
    it against its job; one that died in a job gets that job's skip rows here. A worker that
    dies without recording a job stops the run (restarting it would die the same way).
    Returns 0, or the exit code of that worker.
    """
    from benchmarks import harness

    log = log or (lambda line: print(line, flush=True))
    while start < len(jobs):
        if deadline is not None and time.monotonic() > deadline:
            harness.ResultsFile(results_path, env).add([], harness.not_run(jobs[start:], "time budget spent"))
            return 0
        rc, state = run_child(start, deadline)
        if rc == 0:
            return 0
        if state is None:
            log(f"the benchmark worker ended ({describe_exit(rc)}) before its first job")
            return rc
        following = state["next"]
        if state["running"]:
            job = jobs[following]
            reason = f"{WORKER_DIED} ({describe_exit(rc)}) during job {harness.job_id(job)}"
            harness.ResultsFile(results_path, env).add([], harness.not_run([job], reason))
            log(reason)
            following += 1
        elif following == start and rc != FAULT_EXIT:
            log(f"the benchmark worker ended ({describe_exit(rc)}) before its first job")
            return rc
        if following < len(jobs):
            left = f", {deadline - time.monotonic():.0f} s of the budget left" if deadline is not None else ""
            log(f"restarting at job {following + 1}/{len(jobs)} ({harness.job_id(jobs[following])}) "
                f"in a fresh process{left}")
        start = following
    return 0


def regenerate(results_dir=RESULTS, plots_dir=PLOTS):
    """README tables from every results file, and each device's plots."""
    from benchmarks import report
    from benchmarks.harness import device_slug

    devices = report.update_readmes(results_dir, BENCH_README, TOP_README)
    print(f"regenerated the tables in {BENCH_README.relative_to(ROOT)} and {TOP_README.relative_to(ROOT)} "
          f"from {len(devices)} device(s)")
    for dev in devices.values():
        try:
            written = report.plots(dev, plots_dir, prefix=device_slug(dev.name) + "-")
        except ImportError:
            print("matplotlib is not installed (pip install matplotlib): no plots")
            break
        for path in written:
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return devices


def check_targets(paths):
    from benchmarks import report

    files = ([(Path(p), json.loads(Path(p).read_text())) for p in paths] if paths
             else report.results_files(RESULTS))
    devices = report.by_device([f for f in files if report.is_results(f[1])])
    if not devices:
        print("no results")
    not_met = 0
    for dev in devices.values():
        print(dev.name)
        for t in report.targets(dev):
            print(f"  {t.line()}")
            not_met += t.met is False
    return 1 if not_met else 0


def collect(proof_dir):
    """Merge a --gpu-proof folder's results JSON into benchmarks/results (rows already there are
    not added twice), copy tune.py's rows, a static report (older proofs made one) and the plots,
    regenerate the tables."""
    from benchmarks import report

    proof_dir = Path(proof_dir)
    for path, data in report.results_files(proof_dir):
        target = RESULTS / path.name
        if target.exists():
            old = json.loads(target.read_text())
            old["rows"] += [r for r in data["rows"] if r not in old["rows"]]
            old["skipped"] = old.get("skipped", []) + [s for s in data.get("skipped", [])
                                                       if s not in old.get("skipped", [])]
            old.update({k: data[k] for k in ("device", "torch", "triton", "cuda", "date", "commit")})
            data = old
        target.write_text(json.dumps(data, indent=1) + "\n")
        print(f"merged {path.name} into {target.relative_to(ROOT)}")
    for path in sorted(proof_dir.glob("tune-*.json")):     # benchmarks/tune.py's rows
        shutil.copy(path, RESULTS / path.name)
        print(f"copied {path.name} to benchmarks/results/")
    for path in sorted(proof_dir.glob("static_*.json")):
        shutil.copy(path, RESULTS / path.name)
        print(f"copied {path.name} to benchmarks/results/")
    PLOTS.mkdir(exist_ok=True)
    for path in sorted(proof_dir.glob("*.png")):
        shutil.copy(path, PLOTS / path.name)
        print(f"copied {path.name} to benchmarks/plots/")
    regenerate()


def main(argv=None):
    args = parse_args(argv)
    if args.tables:
        regenerate()
    elif args.check_targets is not None:
        return check_targets(args.check_targets)
    elif args.collect:
        collect(args.collect)
    elif args.gpu_proof:
        from benchmarks import gpu_proof
        gpu_proof.main(args.out, **({"total_s": args.budget_s} if args.budget_s else {}))
    else:
        path = run_suite(args)
        if path is None or args.worker:    # --list-jobs; a worker's supervisor reports
            return 0
        if args.smoke:
            from benchmarks import report
            devices = report.by_device(report.results_files(path.parent))
            print(report.bench_section(devices))
        elif not args.no_tables and not args.out:
            regenerate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
