"""The benchmark suite: cases × implementations × modes, stock (the seed model) against fused_rnn.

    python benchmarks/run.py                    # this machine's suite: the GPU grid on CUDA, else CPU sizes;
                                                # appends to benchmarks/results/<device>-<date>.json and
                                                # regenerates the README tables and benchmarks/plots/
    python benchmarks/run.py --smoke --out DIR  # tiny shapes, few repetitions, any device (CI)
    python benchmarks/run.py --gpu-proof --out DIR   # pytest -m gpu, the GPU suite, the static report
    python benchmarks/run.py --tables           # README tables and plots from the committed results
    python benchmarks/run.py --check-targets    # issue 4's targets, met or not, from the committed results
    python benchmarks/run.py --collect DIR      # take a --gpu-proof's files into results/ and plots/

The grid is in grid.py, the timers in timing.py, the rows in harness.py, the
tables, targets and plots in report.py; benchmarks/README.md says more.
Runs from a plain checkout (no pip install): the checkout's fused_rnn is imported.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))    # the checkout's fused_rnn and benchmarks package, no install needed

RESULTS = BENCH / "results"
PLOTS = BENCH / "plots"
BENCH_README = BENCH / "README.md"
TOP_README = ROOT / "README.md"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--smoke", action="store_true", help="tiny shapes and few repetitions (needs --out)")
    what.add_argument("--gpu-proof", action="store_true", help="tests, benchmarks and static report (needs --out)")
    what.add_argument("--tables", action="store_true", help="regenerate README tables and plots, run nothing")
    what.add_argument("--check-targets", nargs="*", metavar="FILE", default=None,
                      help="print issue 4's targets from these results files (default: benchmarks/results)")
    what.add_argument("--collect", metavar="DIR", help="copy a --gpu-proof folder's results and plots in")
    p.add_argument("--out", metavar="DIR", help="where the results JSON goes (default benchmarks/results)")
    p.add_argument("--cases", help="comma-separated cases to run (seed,long,wide,batch_sweep,T_sweep,H_sweep, "
                                  "or a family case: long_2layer,long_bidir,long_lstm,...)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds after which the remaining jobs are skipped (recorded as such)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on CPU (default 1: the seed shape's overhead is a one-thread question)")
    p.add_argument("--no-tables", action="store_true", help="do not regenerate tables and plots after the run")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = p.parse_args(argv)
    if (args.smoke or args.gpu_proof) and not args.out:
        p.error("--smoke and --gpu-proof need --out DIR")
    return args


def run_suite(args):
    import torch

    from benchmarks import grid, harness, timing

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(args.threads)
    jobs = grid.jobs_for("smoke" if args.smoke else "full", cuda)
    if args.cases:
        wanted = set(args.cases.split(","))
        unknown = wanted - {j.case for j in grid.gpu_jobs() + grid.cpu_jobs()}
        if unknown:
            sys.exit(f"--cases: unknown case(s) {sorted(unknown)}")
        jobs = [j for j in jobs if j.case in wanted]
    env = harness.environment(device)
    out_dir = Path(args.out) if args.out else RESULTS
    results = harness.ResultsFile(harness.results_path(out_dir, env), env)
    import fused_rnn
    print(f"{len(jobs)} jobs on {env['device']} (torch {env['torch']}, triton {env['triton']}, "
          f"fused_rnn from {Path(fused_rnn.__file__).parent}); writing {results.path}", flush=True)
    deadline = time.monotonic() + args.budget_s if args.budget_s else None
    settings = timing.SMOKE if args.smoke else timing.FULL if cuda else timing.FULL_CPU
    harness.run_jobs(jobs, device, results, settings=settings, deadline=deadline, show_progress=not args.no_progress)
    print(f"wrote {len(results.data['rows'])} rows to {results.path}")
    return results.path


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
    not added twice), copy its static report and plots, regenerate the tables."""
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
        if args.smoke:
            from benchmarks import report
            devices = report.by_device(report.results_files(path.parent))
            print(report.bench_section(devices))
        elif not args.no_tables and not args.out:
            regenerate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
