"""The benchmark suite (benchmarks/): its smoke run, timer, tables, targets, plots and GPU-proof steps.

Speed itself is not asserted here (the project claims it in benchmarks, not in
timed tests); what is tested is that rows have their schema and that every
table cell and verdict follows from the rows it was made from.
"""

import itertools
import json
import struct
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, run_python

sys.path.insert(0, str(ROOT))    # the benchmarks package lives in the checkout, not in the install
from benchmarks import grid, gpu_proof, harness, report, timing  # noqa: E402

ROW_FIELDS = {"case": str, "B": int, "T": int, "I": int, "H": int, "O": int, "dtype": str, "mode": str,
              "impl": str, "precision": str, "backend": str, "median_ms": float, "p20_ms": float,
              "p80_ms": float, "samples": int, "calls": int, "commit": (str, type(None)), "torch": str}


def test_smoke_run_writes_rows_in_the_schema(tmp_path):
    start = time.monotonic()
    out = run_python("benchmarks/run.py", "--smoke", "--out", str(tmp_path), "--no-progress", timeout=300)
    took = time.monotonic() - start
    assert out.returncode == 0, out.stderr[-3000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    data = json.loads(files[0].read_text())
    for key in ("device", "torch", "triton", "cuda", "date", "commit", "rows", "skipped"):
        assert key in data, key
    assert files[0].name == f"{harness.device_slug(data['device'])}-{data['date']}.json"
    rows = data["rows"]
    assert {(r["impl"], r["mode"]) for r in rows if r["case"] == "seed"} >= {
        ("stock", "forward"), ("fused", "forward"), ("stock", "train"), ("fused", "train")}
    for row in rows:
        for field, kind in ROW_FIELDS.items():
            assert isinstance(row[field], kind), (field, row)
        assert 0 < row["p20_ms"] <= row["median_ms"] <= row["p80_ms"], row
        assert row["calls"] >= row["samples"] >= 3
        assert row["mode"] in ("forward", "train") and row["precision"] in ("ieee", "tf32", "bf16")
        if row["impl"] == "stock":
            assert row["over_stock"] is None
        else:
            assert row["over_stock"] > 0
        if data["device"].startswith("CPU "):
            assert row["backend"] in ("aten", "torch") and row["peak_mem_bytes"] is None and row["threads"] == 1
    # The smoke run prints the table made from its own rows.
    assert "| seed | 32 | 5 | 10 | 20 | float32 | ieee | forward |" in out.stdout
    assert took < 120, f"the smoke run took {took:.0f} s; CI wants it under a minute"


class VirtualClock:
    """Host time that moves only when a fake model call says it took so long."""

    def __init__(self):
        self.t = 0.0
        self.calls = []

    def now(self):
        return self.t

    def candidate(self, name, seconds, calls=1):
        def fn():
            self.t += seconds
            self.calls.append(name)
        return timing.Candidate(fn, calls)


def test_interleaved_timer_measures_known_durations(monkeypatch):
    clock = VirtualClock()
    monkeypatch.setattr(timing, "now", clock.now)
    cands = {"a": clock.candidate("a", 200e-6), "b": clock.candidate("b", 400e-6),
             "c": clock.candidate("c", 100e-6, calls=2)}    # one fn() is 2 model calls of 50 µs
    settings = timing.Settings(block_s=2e-3, min_rounds=4, max_rounds=1000, warmup_s=1e-3)
    # One round: 10 × 200 µs + 5 × 400 µs + 20 × 100 µs = 6 ms, so 0.06 s is 10 rounds.
    stats, samples = timing.measure(cands, cuda=False, budget_s=0.06, settings=settings)
    assert stats["a"].median_ms == pytest.approx(0.2) and stats["a"].p80_ms == pytest.approx(0.2)
    assert stats["b"].median_ms == pytest.approx(0.4)
    assert stats["c"].median_ms == pytest.approx(0.05)
    assert [len(s) for s in samples.values()] == [10, 10, 10]
    assert stats["a"].calls == 10 * 10 and stats["c"].calls == 10 * 20 * 2
    assert timing.paired_ratio(samples, "b", "a") == pytest.approx(2.0)
    # The timed rounds alternate the order: a b c, c b a, a b c, ...
    timed = clock.calls[-(10 * 35):]
    firsts = [timed[k * 35] for k in range(10)]
    assert firsts == ["a", "c"] * 5


def test_interleaved_timer_spreads_a_slow_spell_over_all_candidates(monkeypatch):
    """A slow spell of the machine (every call 3× slower for some rounds) moves the
    medians' spread but not the paired ratio."""
    clock = VirtualClock()
    monkeypatch.setattr(timing, "now", clock.now)
    slow = {"on": False}

    def make(name, seconds):
        def fn():
            clock.t += seconds * (3 if slow["on"] else 1)
            clock.calls.append(name)
            slow["on"] = 400 <= len(clock.calls) < 700     # rounds ~20 to ~35 of 50 (20 calls a round)
        return timing.Candidate(fn)

    cands = {"stock": make("stock", 100e-6), "fused": make("fused", 105e-6)}
    settings = timing.Settings(block_s=1e-3, min_rounds=50, max_rounds=50, warmup_s=0.0)
    stats, samples = timing.measure(cands, cuda=False, budget_s=0.0, settings=settings)
    assert stats["fused"].p80_ms > 2 * stats["fused"].p20_ms       # the spell shows in the spread
    assert timing.paired_ratio(samples, "fused", "stock") == pytest.approx(1.05, rel=0.02)


def test_cuda_timer_reads_events_after_each_round(monkeypatch):
    """The CUDA branch: a block is timed between two events, read only after a synchronize."""
    import torch
    clock = VirtualClock()
    monkeypatch.setattr(timing, "now", clock.now)
    synced = {"pending": [], "count": 0}

    class FakeEvent:
        def __init__(self, enable_timing):
            assert enable_timing
            self.t = None

        def record(self):
            synced["pending"].append(self)
            self.t = clock.t

        def elapsed_time(self, end):
            assert self not in synced["pending"] and end not in synced["pending"], "read before a synchronize"
            return (end.t - self.t) * 1e3

    def synchronize():
        synced["pending"].clear()
        synced["count"] += 1

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    cands = {"stock": clock.candidate("stock", 30e-6), "fused_graph": clock.candidate("fused_graph", 80e-6, calls=20)}
    settings = timing.Settings(block_s=1e-3, min_rounds=6, max_rounds=6, warmup_s=0.0)
    stats, samples = timing.measure(cands, cuda=True, budget_s=0.0, settings=settings)
    assert stats["stock"].median_ms == pytest.approx(0.030)
    assert stats["fused_graph"].median_ms == pytest.approx(0.004)     # 80 µs a replay of 20 calls
    assert synced["count"] >= 6


def test_run_job_on_cpu_times_what_runs_and_skips_what_needs_cuda():
    import torch
    job = grid.Job("seed", grid.SEED, "float32", "ieee", "forward", ("stock", "fused", "fused_graph", "fused_cuda"),
                   0.02)
    rows, skipped = harness.run_job(job, torch.device("cpu"), timing.SMOKE)
    assert [r["impl"] for r in rows] == ["stock", "fused"]
    assert {s["impl"]: s["reason"] for s in skipped} == {"fused_graph": "fused_graph needs CUDA",
                                                         "fused_cuda": "fused_cuda needs CUDA"}
    assert rows[0]["backend"] == "aten" and rows[1]["backend"] == "torch"
    with pytest.raises(ValueError, match="only on a GPU"):
        harness.run_job(job._replace(precision="tf32"), torch.device("cpu"), timing.SMOKE)


def test_quantile_matches_linear_interpolation():
    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert timing.quantile(values, 0.5) == 4.0
    assert timing.quantile(values, 0.2) == pytest.approx(1.0 + (2.0 - 1.0) * 0.8)
    assert timing.quantile(values, 0.8) == pytest.approx(8.0 + (16.0 - 8.0) * 0.2)
    assert timing.quantile([3.0], 0.8) == 3.0


def make_row(case, B, T, I, H, mode, impl, median_ms, *, dtype="float32", precision="ieee", backend="triton",
             peak=None, O=1):
    return dict(case=case, B=B, T=T, I=I, H=H, O=O, dtype=dtype, precision=precision, mode=mode, impl=impl,
                backend=backend, median_ms=median_ms, p20_ms=median_ms * 0.9, p80_ms=median_ms * 1.1,
                peak_mem_bytes=peak, samples=10, calls=100, threads=None, over_stock=None, commit="abc", torch="2.11")


def write_results(folder, device, date, rows):
    path = Path(folder) / f"{harness.device_slug(device)}-{date}.json"
    path.write_text(json.dumps(dict(device=device, torch="2.11.0", triton="3.6.0", cuda="13.0", date=date,
                                    commit="0123456789abcdef", rows=rows, skipped=[])))
    return path


GPU = "NVIDIA H100 80GB HBM3"


def gpu_rows(seed_fwd=(0.061, 0.0104), seed_train=(0.30, 0.12), long_fwd=(2.5, 0.9)):
    rows = []
    for mode, (stock, fused) in (("forward", seed_fwd), ("train", seed_train)):
        rows += [make_row("seed", 32, 5, 10, 20, mode, "stock", stock, backend="cudnn"),
                 make_row("seed", 32, 5, 10, 20, mode, "fused", fused)]
    rows.append(make_row("seed", 32, 5, 10, 20, "forward", "fused_graph", 0.0042))
    rows += [make_row("long", 64, 1024, 64, 128, "forward", "stock", long_fwd[0], backend="cudnn"),
             make_row("long", 64, 1024, 64, 128, "forward", "fused", long_fwd[1])]
    for T in (16, 1024, 65536):
        rows += [make_row("T_sweep", 64, T, 32, 64, "forward", "stock", 0.01 * T, peak=64 * T * 64 * 4 + 4096),
                 make_row("T_sweep", 64, T, 32, 64, "forward", "fused", 0.004 * T, peak=512)]
    return rows


def test_time_table_cells_come_from_the_rows(tmp_path):
    rows = gpu_rows()
    write_results(tmp_path, GPU, "2026-11-20", rows)
    dev = report.by_device(report.results_files(tmp_path))[GPU]
    table = report.time_table(dev)
    stock, fused, graph = rows[0]["median_ms"], rows[1]["median_ms"], rows[4]["median_ms"]
    expected = (f"| seed | 32 | 5 | 10 | 20 | float32 | ieee | forward | {stock * 1e3:.3g} µs | {fused * 1e3:.3g} µs | "
                f"{graph * 1e3:.3g} µs | triton | {stock / fused:.2f}× |")
    assert expected in table.splitlines(), table
    assert table.splitlines()[0] == ("| case | B | T | I | H | dtype | precision | mode | stock | fused | fused_graph "
                                     "| fused ran | stock ÷ fused |")
    # A row with no fused_graph timing shows a dash in that column.
    train = rows[2]["median_ms"], rows[3]["median_ms"]
    assert (f"| seed | 32 | 5 | 10 | 20 | float32 | ieee | train | {train[0] * 1e3:.3g} µs | {train[1] * 1e3:.3g} µs "
            f"| — | triton | {train[0] / train[1]:.2f}× |") in table
    memory = report.memory_table(dev)
    stock_bytes = 64 * 65536 * 64 * 4 + 4096
    assert f"| 64 | 65536 | 32 | 64 | float32 | ieee | {stock_bytes / 2**30:.3g} GiB | 512 B |" in memory


def test_speedup_prefers_the_paired_ratio():
    stock = make_row("seed", 32, 5, 10, 20, "forward", "stock", 0.060)
    fused = make_row("seed", 32, 5, 10, 20, "forward", "fused", 0.030)
    assert report.speedup(stock, fused) == pytest.approx(2.0)
    assert report.speedup(stock, dict(fused, over_stock=0.4)) == pytest.approx(2.5)
    assert report.speedup(None, fused) is None


def test_latest_file_and_row_win(tmp_path):
    old = gpu_rows(seed_fwd=(0.070, 0.020))
    new = gpu_rows(seed_fwd=(0.060, 0.010))
    write_results(tmp_path, GPU, "2026-11-01", old)
    write_results(tmp_path, GPU, "2026-11-21", new)
    (tmp_path / "static_sm90a_triton3.6.json").write_text(json.dumps({"kernels": []}))   # not a results file
    devices = report.by_device(report.results_files(tmp_path))
    assert list(devices) == [GPU]
    table = report.speed_section(devices)
    assert f"| {0.060 / 0.010:.2f}× |" in table and f"{0.070 / 0.020:.2f}×" not in table
    assert "2026-11-01 to 2026-11-21" in report.device_heading(devices[GPU])


def test_speed_section_names_each_device_and_the_path_that_ran(tmp_path):
    write_results(tmp_path, GPU, "2026-11-20", gpu_rows())
    cpu = "CPU AMD EPYC (2 cores)"
    write_results(tmp_path, cpu, "2026-11-25", [
        make_row("seed", 32, 5, 10, 20, "forward", "stock", 0.061, backend="aten"),
        make_row("seed", 32, 5, 10, 20, "forward", "fused", 0.064, backend="torch")])
    lines = report.speed_section(report.by_device(report.results_files(tmp_path))).splitlines()
    assert lines[2].startswith(f"| {GPU} |")     # GPUs first, CPUs after
    assert (f"| {cpu} | seed (32×5×10, H=20) | float32 | ieee | forward | 61 µs | 64 µs (torch path) | "
            f"{0.061 / 0.064:.2f}× | — |") in lines


def test_targets_are_computed_from_rows(tmp_path):
    # seed forward 0.061/0.0104 = 5.87 ≥ 5: met; train 0.30/0.12 = 2.5 < 3: not met;
    # long forward 2.5/0.9 = 2.78 ≥ 2: met; graph 4.2 µs ≤ 5: met; memory flat: met; tf32 rows absent.
    write_results(tmp_path, GPU, "2026-11-20", gpu_rows())
    dev = report.by_device(report.results_files(tmp_path))[GPU]
    verdicts = {t.name: t.met for t in report.targets(dev)}
    assert verdicts["seed forward ≥ 5× (ieee)"] is True
    assert verdicts["seed train ≥ 3× (ieee)"] is False
    assert verdicts["long forward ≥ 2× (ieee)"] is True
    assert verdicts["seed forward ≤ 5 µs in a CUDA graph (ieee)"] is True
    assert verdicts["inference memory independent of T up to 65,536"] is True
    assert verdicts["seed forward ≥ 5× (tf32)"] is None
    assert verdicts["long forward ≥ 2× (bf16)"] is None


def test_memory_target_fails_when_ours_grows_with_T(tmp_path):
    rows = [make_row("T_sweep", 64, T, 32, 64, "forward", "fused", 1.0, peak=512 + 64 * T)
            for T in (16, 65536)]
    write_results(tmp_path, GPU, "2026-11-20", rows)
    dev = report.by_device(report.results_files(tmp_path))[GPU]
    assert report.memory_target(dev).met is False


def test_memory_target_reads_one_precisions_sweep_tf32_first(tmp_path):
    # An IEEE sweep that grows and a TF32 one that is flat, in one file: TF32's decides, and a sweep
    # is never judged across precisions (TF32 at T = 16 against IEEE at T = 65,536).
    ieee = [make_row("T_sweep", 64, T, 32, 64, "forward", "fused", 1.0, peak=512 + 64 * T) for T in (16, 65536)]
    tf32 = [make_row("T_sweep", 64, T, 32, 64, "forward", "fused", 1.0, precision="tf32", peak=1024)
            for T in (16, 65536)]
    write_results(tmp_path, GPU, "2026-11-20", ieee + tf32)
    target = report.memory_target(report.by_device(report.results_files(tmp_path))[GPU])
    assert target.met is True and "1 KiB at T=16" in target.detail
    write_results(tmp_path, GPU, "2026-11-20", ieee + tf32[:1])      # TF32 stopped short of 65,536
    assert report.memory_target(report.by_device(report.results_files(tmp_path))[GPU]).met is False


def test_cpu_target_prefers_the_paired_ratio(tmp_path):
    cpu = "CPU AMD EPYC (2 cores)"
    stock = make_row("seed", 32, 5, 10, 20, "forward", "stock", 0.060, backend="aten")
    fused = dict(make_row("seed", 32, 5, 10, 20, "forward", "fused", 0.066, backend="torch"), over_stock=1.04)
    write_results(tmp_path, cpu, "2026-11-25", [stock, fused])
    (target,) = report.targets(report.by_device(report.results_files(tmp_path))[cpu])
    assert target.met is True and "1.040" in target.detail
    fused["over_stock"] = None       # medians alone: 0.066 / 0.060 = 1.10 > 1.05
    write_results(tmp_path, cpu, "2026-11-25", [stock, fused])
    (target,) = report.targets(report.by_device(report.results_files(tmp_path))[cpu])
    assert target.met is False and f"{0.066 / 0.060:.3f}" in target.detail


def test_update_readmes_rewrites_only_between_markers(tmp_path):
    write_results(tmp_path, GPU, "2026-11-20", gpu_rows())
    bench, top = tmp_path / "bench.md", tmp_path / "top.md"
    bench.write_text(f"intro\n{report.BENCH_BEGIN}\nold table\n{report.BENCH_END}\noutro\n")
    top.write_text(f"# x\n{report.SPEED_BEGIN}\nstale\n{report.SPEED_END}\n## Layout\n")
    report.update_readmes(tmp_path, bench, top)
    b, t = bench.read_text(), top.read_text()
    assert b.startswith("intro\n") and b.endswith(f"{report.BENCH_END}\noutro\n") and "old table" not in b
    assert f"### {GPU}" in b and "seed forward ≥ 5× (ieee): **met**" in b
    assert t.startswith("# x\n") and t.endswith("## Layout\n") and "stale" not in t and GPU in t
    with pytest.raises(ValueError, match="markers"):
        report.splice("no markers here", report.BENCH_BEGIN, report.BENCH_END, "x")


def test_results_file_appends_and_stamps_rows(tmp_path):
    env = dict(device=GPU, torch="2.11.0", triton="3.6.0", cuda="13.0", date="2026-11-20", commit="c1")
    path = harness.results_path(tmp_path, env)
    harness.ResultsFile(path, env).add([make_row("seed", 32, 5, 10, 20, "forward", "stock", 0.06)], [])
    env2 = dict(env, commit="c2")
    harness.ResultsFile(path, env2).add([make_row("seed", 32, 5, 10, 20, "forward", "fused", 0.01)],
                                        [dict(case="wide", impl="fused_cuda", reason="why")])
    data = json.loads(path.read_text())
    assert [r["commit"] for r in data["rows"]] == ["c1", "c2"] and data["commit"] == "c2"
    assert data["skipped"] == [dict(case="wide", impl="fused_cuda", reason="why")]


def png_size(path):
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_plots_are_drawn_for_the_sweeps_present(tmp_path):
    pytest.importorskip("matplotlib")
    rows = gpu_rows() + [make_row("H_sweep", 64, 256, 64, H, "forward", impl, 0.01 * H, dtype="bfloat16",
                                  precision="bf16") for H in (16, 64, 256) for impl in ("stock", "fused")]
    write_results(tmp_path, GPU, "2026-11-20", rows)
    dev = report.by_device(report.results_files(tmp_path))[GPU]
    written = report.plots(dev, tmp_path / "plots", prefix="gpu-")
    assert sorted(p.name for p in written) == ["gpu-memory_vs_T.png", "gpu-time_vs_H.png", "gpu-time_vs_T.png"]
    for path in written:
        width, height = png_size(path)
        assert width > 300 and height > 200
    # No H sweep rows: no time_vs_H plot.
    cpu_dev = report.Device("CPU x", {k: v for k, v in dev.rows.items() if v["case"] != "H_sweep"}, dev.envs)
    assert "time_vs_H.png" not in [p.name for p in report.plots(cpu_dev, tmp_path / "cpu")]


def test_gpu_proof_steps_without_cuda(tmp_path):
    """The orchestration on CPU: pytest runs (its gpu tests skip), the GPU suite is skipped
    with a reason, no static report is built, and the folder fits the device tool."""
    out = tmp_path / "out"
    summary = gpu_proof.gpu_proof(out, pytest_args=("tests/test_forward.py", "-m", "gpu"), cuda=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["pytest_gpu.log", "summary.md"], names
    assert len(names) <= gpu_proof.MAX_FILES and "WARNING" not in summary
    text = (out / "summary.md").read_text()
    assert "| benchmark suite | skipped | 0 | no CUDA device: the GPU suite needs one |" in text
    assert "static report" not in text.split("| step |")[1].split("\n\n")[0]    # no such step in the table
    assert gpu_proof.STATIC_NOTE in text
    # test_forward.py's gpu tests were collected and skipped (no CUDA here).
    (pytest_line,) = [line for line in text.splitlines() if line.startswith("| pytest")]
    assert " 0 passed, 0 failed, 0 errors," in pytest_line and "skipped" in pytest_line
    assert "slowest 30 durations" in (out / "pytest_gpu.log").read_text()


# A test folder for a pytest run that its deadline cuts off: one test passes, one fails, one
# errors in its fixture, then one sleeps far past the deadline.
CUT_OFF_TESTS = """
import time
import pytest

def test_passes():
    pass

def test_fails():
    assert 1 + 1 == 3, "one plus one on purpose"

@pytest.fixture
def broken():
    raise RuntimeError("a fixture broken on purpose")

def test_errors(broken):
    pass

def test_sleeps_past_the_deadline():
    time.sleep(600)
"""


def test_gpu_proof_interrupts_pytest_at_its_deadline_and_keeps_its_report(tmp_path, monkeypatch):
    """At the deadline pytest gets SIGINT, not SIGKILL: it still writes its junit report and its
    summary, so summary.md says how many tests ran, which failed and which the deadline cut off, and
    the log names them and the slowest tests. With SIGINT ignored here, as in a background job of a
    non-interactive shell: the step must get it all the same."""
    import signal
    tests = tmp_path / "cut_off"
    tests.mkdir()
    (tests / "test_cut_off.py").write_text(CUT_OFF_TESTS)
    deadline_s = 10    # pytest starts and runs the first three in ~1 s on this 2-core machine
    monkeypatch.setattr(gpu_proof, "PYTEST_S", deadline_s)
    out = tmp_path / "out"
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        start = time.monotonic()
        # rootdir named: else pytest takes the common ancestor of the folder and the working directory,
        # which depends on where the checkout is (test ids "test_cut_off::..." or "pytest-of-root.....").
        gpu_proof.gpu_proof(out, pytest_args=(str(tests), f"--rootdir={tests}"), cuda=False)
        took = time.monotonic() - start
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert took < deadline_s + gpu_proof.INTERRUPT_GRACE_S, f"{took:.0f} s: pytest was killed, not interrupted"
    text = (out / "summary.md").read_text()
    (pytest_line,) = [line for line in text.splitlines() if line.startswith("| pytest")]
    assert "| interrupted |" in pytest_line, pytest_line
    assert f"interrupted at its {deadline_s} s deadline, when 3 tests had run" in pytest_line, pytest_line
    assert "1 passed, 1 failed, 1 errors, 0 skipped" in pytest_line, pytest_line
    failed = text.split("Failed tests")[1].split("\n\n")[1].splitlines()
    assert failed == [
        "- test_cut_off::test_fails: AssertionError: one plus one on purpose",
        "- test_cut_off::test_errors: failed on setup with \"RuntimeError: a fixture broken on purpose\""], failed
    (cut_off,) = text.split("Tests running when pytest was stopped")[1].split("\n\n")[1].splitlines()
    assert cut_off.startswith("- test_cut_off.py::test_sleeps_past_the_deadline (")
    assert 0 < float(cut_off.split("(")[1].split(" s)")[0]) <= deadline_s, cut_off
    log = (out / "pytest_gpu.log").read_text()
    assert "slowest 30 durations" in log and "KeyboardInterrupt" in log
    assert "FAILED" in log and "test_cut_off.py::test_fails" in log and "ERROR" in log
    assert "1 tests started and not finished" in log and "test_cut_off.py::test_sleeps_past_the_deadline" in log


def test_gpu_proof_summary_groups_skipped_rows_by_reason():
    skipped = [dict(case="wide", mode="forward", impl="fused_cuda", reason="no extension"),
               dict(case="seed", mode="forward", impl="fused_cuda", reason="no extension"),
               dict(case="H_sweep", mode="train", impl="fused", reason="time budget spent")]
    text = gpu_proof.summary_text([("pytest -m gpu", 1, 12.0, "3 tests")], ["tests/x.py::test_y"], {}, skipped, "", 30)
    assert "| pytest -m gpu | 1 | 12 | 3 tests |" in text and "- tests/x.py::test_y" in text
    assert "Benchmark rows skipped: 3" in text
    assert "- no extension (2: wide/forward/fused_cuda, seed/forward/fused_cuda)" in text
    assert "- time budget spent (1: H_sweep/train/fused)" in text


def test_seed_copy_is_the_seed_model():
    """benchmarks/seed_rnn.py's class is tests/seed_model.py's, line for line."""
    import inspect
    import seed_model
    from benchmarks import seed_rnn
    assert inspect.getsource(seed_rnn.SimpleRNN) == inspect.getsource(seed_model.SimpleRNN)


def test_bf16_stock_matches_the_seed_model_in_float32():
    import torch
    from benchmarks import seed_rnn
    torch.manual_seed(3)
    seed = seed_rnn.SimpleRNN(6, 12, 2)
    low = seed_rnn.SimpleRNNAnyDtype(6, 12, 2)
    low.load_state_dict(seed.state_dict())
    x = torch.randn(4, 9, 6)
    with torch.no_grad():
        torch.testing.assert_close(low.to(torch.bfloat16)(x.bfloat16()).float(), seed(x), atol=3e-2, rtol=3e-2)


def test_run_step_kills_the_whole_process_group(tmp_path):
    start = time.monotonic()
    rc, took = gpu_proof.run_step(["sh", "-c", "sleep 30 & sleep 30"], tmp_path / "log", 1, None)
    assert rc == "timeout" and took < 10 and time.monotonic() - start < 10
    # Interrupted: Python exits at the SIGINT, its child sleeps on; it dies with the group.
    marker = tmp_path / "survivor"
    script = f"import subprocess, time; subprocess.Popen(['sh', '-c', 'sleep 3; touch {marker}']); time.sleep(30)"
    rc, took = gpu_proof.run_step([sys.executable, "-c", script], tmp_path / "log", 1, None, interrupt_grace_s=1)
    assert rc == "interrupted" and took < 10
    time.sleep(3)
    assert not marker.exists(), "a process of the interrupted step's group outlived it"


def test_run_step_stamps_lines_and_kills_a_step_that_ignores_sigint(tmp_path):
    log = tmp_path / "log"
    script = ("import time, signal; signal.signal(signal.SIGINT, signal.SIG_IGN); print('one', flush=True); "
              "time.sleep(30)")
    rc, took = gpu_proof.run_step([sys.executable, "-c", script], log, 1, None, interrupt_grace_s=1, stamp=True)
    assert rc == "timeout" and took < 10
    (line,) = log.read_text().splitlines()
    assert line.endswith("] one") and line.startswith("[") and float(line[1:].split(" s]")[0]) < 10, line


def test_check_targets_command(tmp_path):
    path = write_results(tmp_path, GPU, "2026-11-20", gpu_rows())
    out = run_python("benchmarks/run.py", "--check-targets", str(path))
    assert out.returncode == 1, out.stderr        # seed train 2.5× < 3×
    assert "seed train ≥ 3× (ieee): **NOT met**" in out.stdout
    assert "seed forward ≥ 5× (ieee): **met**" in out.stdout


def test_gpu_grid_order_targets_then_the_family_against_cudnn_then_the_T_sweep():
    jobs = grid.gpu_jobs()
    # Issue 4's targets: seed forward and train, long forward, in IEEE and TF32.
    targets = jobs[:6]
    assert {(j.case, j.mode, j.precision) for j in targets} == {
        (c, m, p) for c, m in (("seed", "forward"), ("seed", "train"), ("long", "forward")) for p in ("ieee", "tf32")}
    assert all(j.dtype == "float32" and "fused_graph" in j.impls for j in targets if j.mode == "forward")
    # Then issue 14's LSTM and GRU forward against cuDNN: fp16 (stock's bf16 is ATen's loop), bf16,
    # TF32, and the LSTM anchor; then their training steps.
    end = next(i for i, j in enumerate(jobs) if i >= 6 and j.mode != "forward")
    forward = jobs[6:end]
    assert {(j.case, j.dtype) for j in forward} == {
        (c, d) for c in grid.FAMILY_CELLS for d in ("float16", "bfloat16", "float32")} | {("lstm_anchor", "float16")}
    assert [j.dtype for j in forward[:len(grid.FAMILY_CELLS)]] == ["float16"] * len(grid.FAMILY_CELLS)
    # The TF32 GRU, which "auto" leaves to cuDNN (its weights stream from shared memory), times the kernels too.
    assert all(j.model and set(j.impls) == ({"stock", "fused", "fused_kernel"}
                                            if (j.case, j.dtype) == ("long_gru", "float32") else {"stock", "fused"})
               for j in forward)
    # Both blocks in ~2 minutes of a run (the second H200 run's pace).
    assert grid.estimated_s(jobs[:end]) <= 120, grid.estimated_s(jobs[:end])
    train_end = next(i for i, j in enumerate(jobs) if i >= end and not j.model)
    assert {(j.case, j.dtype, j.mode) for j in jobs[end:train_end]} == {
        (c, d, "train") for c in grid.FAMILY_CELLS for d in ("float16", "bfloat16")}
    # Then the T sweep's forward, its shortest and longest T first; the longest times fused alone, briefly.
    sweep = list(itertools.takewhile(lambda j: j.case == "T_sweep", jobs[train_end:]))
    assert [j.shape["T"] for j in sweep[:2]] == [min(grid.GPU_TS), max(grid.GPU_TS)]
    assert sorted(j.shape["T"] for j in sweep) == sorted(grid.GPU_TS) and {j.mode for j in sweep} == {"forward"}
    assert sweep[1].impls == ("fused",) and sweep[1].budget_s <= 0.5
    # In TF32, where "auto" runs the kernels at every B and T (3xTF32 would leave B = 64 to cuDNN).
    assert {j.precision for j in jobs if j.case in ("T_sweep", "batch_sweep")} == {"tf32"}
    # Every family case against cuDNN's fp16, forward and train (the stacked ones later in the grid).
    for case in grid.FAMILY:
        assert any(j.case == case and j.dtype == "float16" and j.mode == "forward" for j in jobs), case
    for job in jobs + grid.cpu_jobs() + grid.smoke_jobs(True) + grid.smoke_jobs(False):
        assert job.mode in grid.MODES and set(job.impls) <= set(grid.IMPLS)
        assert job.mode == "forward" or not set(job.impls) & set(grid.FORWARD_ONLY), job
    # The csrc kernel runs after everything else.
    cuda_jobs = [i for i, j in enumerate(jobs) if "fused_cuda" in j.impls]
    assert cuda_jobs == list(range(len(jobs) - len(cuda_jobs), len(jobs)))
    assert all(set(j.impls) <= {"stock", "fused"} for j in grid.cpu_jobs())


def test_list_jobs_gpu_prints_the_gpu_grid_in_order_from_any_machine():
    out = run_python("benchmarks/run.py", "--list-jobs", "gpu")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    ids = [line.split()[-1] for line in lines]
    assert ids == [harness.job_id(j) for j in grid.gpu_jobs()]
    starts = [float(line.split()[1].strip("~")) for line in lines]     # "  3 ~27 s seed/..."
    assert starts[0] == 0 and starts == sorted(starts)
    assert starts[-1] == pytest.approx(grid.estimated_s(grid.gpu_jobs()[:-1]), abs=0.5)


def test_run_jobs_records_a_failing_job_and_the_time_budget(tmp_path, monkeypatch):
    import torch
    jobs = grid.smoke_jobs(False)[:3]
    calls = []

    def fake_run_job(job, device, settings):
        calls.append(job)
        if len(calls) == 1:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")   # ordinary: the run goes on
        return [make_row(job.case, job.shape["B"], job.shape["T"], 10, 20, job.mode, "stock", 0.1)], []

    monkeypatch.setattr(harness, "run_job", fake_run_job)
    env = dict(device="CPU test", torch="x", triton=None, cuda=None, date="2026-11-25", commit=None)
    results = harness.ResultsFile(tmp_path / "r.json", env)
    harness.run_jobs(jobs, torch.device("cpu"), results, show_progress=False, log=lambda *a: None)
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(calls) == 3 and len(data["rows"]) == 2
    assert {s["impl"] for s in data["skipped"]} == set(jobs[0].impls)
    assert all(s["reason"].startswith("error: RuntimeError: cuDNN error") for s in data["skipped"])
    # Past the deadline nothing runs; every job is recorded as skipped.
    results = harness.ResultsFile(tmp_path / "late.json", env)
    harness.run_jobs(jobs, torch.device("cpu"), results, deadline=time.monotonic() - 1, show_progress=False)
    data = json.loads((tmp_path / "late.json").read_text())
    assert len(calls) == 3 and data["rows"] == []
    assert len(data["skipped"]) == sum(len(j.impls) for j in jobs)
    assert {s["reason"] for s in data["skipped"]} == {"time budget spent"}
