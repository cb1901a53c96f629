"""A CUDA fault in one benchmark job: charged to that job, and the jobs after it still run.

A CUDA fault such as an illegal memory access is sticky (every later CUDA call in
the process fails with it) and asynchronous (it surfaces at a later call, possibly
in a later job). The first GPU run lost 118 of its rows to one, and blamed the
job after the one that launched it. These tests stand in for the fault on CPU
with exceptions that say what torch says ("CUDA error: an illegal memory access
was encountered"), and for the device's own answer (harness.device_usable).
"""

import json
import sys
import time

import pytest
import torch

from helpers import ROOT, run_python

sys.path.insert(0, str(ROOT))    # the benchmarks package lives in the checkout, not in the install
from benchmarks import gpu_proof, grid, harness, run, timing  # noqa: E402

ILLEGAL_ADDRESS = "CUDA error: an illegal memory access was encountered"
AcceleratorError = getattr(torch, "AcceleratorError", RuntimeError)    # torch >= 2.8 raises CUDA errors as it
CPU = torch.device("cpu")
ENV = dict(device="CPU test", torch="x", triton=None, cuda=None, date="2026-11-26", commit=None)


def row(job, impl):
    return dict(harness._job_key(job), impl=impl, backend="aten", median_ms=0.1, p20_ms=0.09, p80_ms=0.11,
                peak_mem_bytes=None, samples=3, calls=3, threads=1, over_stock=None)


def poisoning_run_job(faulty_index, jobs, calls):
    """A run_job whose job faulty_index raises a sticky fault, and every job after it in
    the same process too (the context stays poisoned)."""
    def fake(job, device, settings):
        calls.append(job)
        if jobs.index(job) >= faulty_index:
            raise RuntimeError(ILLEGAL_ADDRESS)
        return [row(job, impl) for impl in job.impls], []
    return fake


def test_classifier_tells_a_sticky_fault_from_ordinary_errors(monkeypatch):
    sticky = [RuntimeError(ILLEGAL_ADDRESS), AcceleratorError("CUDA error: unspecified launch failure"),
              RuntimeError("Triton Error [CUDA]: an illegal memory access was encountered"),
              RuntimeError("CUDA error: device-side assert triggered"),
              RuntimeError("CUDA error: misaligned address")]
    ordinary = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"), ValueError("bad shape"),
                harness.Unsupported("fused_graph needs CUDA"),
                harness.Unsupported(f"RuntimeError: {ILLEGAL_ADDRESS}")]   # build decided: not sticky
    assert [harness.poisons_context(e, CPU) for e in sticky] == [True] * len(sticky)
    assert [harness.poisons_context(e, CPU) for e in ordinary] == [False] * len(ordinary)
    # On a GPU the device decides: a context that still runs work is not poisoned, whatever the message.
    cuda = torch.device("cuda")
    monkeypatch.setattr(harness, "device_usable", lambda device: True)
    assert not harness.poisons_context(RuntimeError(ILLEGAL_ADDRESS), cuda)
    monkeypatch.setattr(harness, "device_usable", lambda device: False)
    assert harness.poisons_context(RuntimeError("an error that does not say CUDA"), cuda)
    assert not harness.poisons_context(harness.Unsupported("fused_cuda is inference only"), cuda)


def test_an_asynchronous_fault_is_charged_to_the_impl_that_launched_it(monkeypatch):
    """fused's build launches work that faults; the fault surfaces at the next synchronize,
    which comes right after that build, before fused_graph's build or any timing."""
    job = grid.Job("long", dict(grid.LONG, T=16), "bfloat16", "bf16", "forward", ("stock", "fused", "fused_graph"))
    pending, built = [], []

    def fake_build(impl, job, device, allow_tf32):
        built.append(impl)
        if impl == "fused":
            pending.append("illegal address")     # queued on the device, not raised yet
        return timing.Candidate(lambda: None), "triton", False

    def fake_synchronize(device):
        if pending:
            raise AcceleratorError(ILLEGAL_ADDRESS)

    monkeypatch.setattr(harness, "build", fake_build)
    monkeypatch.setattr(harness, "synchronize", fake_synchronize)
    monkeypatch.setattr(harness, "set_precision", lambda precision, cuda: False)
    with pytest.raises(harness.StickyFault) as info:
        harness.run_job(job, CPU, timing.SMOKE)
    assert built == ["stock", "fused"]
    assert info.value.stage == "building fused"
    assert "AcceleratorError" in str(info.value) and "illegal memory access" in str(info.value)


def test_run_jobs_stops_at_a_sticky_fault_and_names_the_job_that_launched_it(tmp_path, monkeypatch):
    jobs = grid.smoke_jobs(False)[:4]
    calls, progress = [], []
    monkeypatch.setattr(harness, "run_job", poisoning_run_job(1, jobs, calls))
    results = harness.ResultsFile(tmp_path / "r.json", ENV)
    fault = harness.run_jobs(jobs, CPU, results, show_progress=False, log=lambda *a: None,
                             on_progress=lambda index, running: progress.append((index, running)))
    data = json.loads((tmp_path / "r.json").read_text())
    # Job 1 faulted: it is the last one this process ran; jobs 2 and 3 are left for a fresh one.
    assert calls == jobs[:2]
    assert fault["next"] == 2 and fault["job"] == harness.job_id(jobs[1])
    assert progress == [(0, True), (1, False), (1, True), (2, False)]
    assert [r["case"] for r in data["rows"]] == [jobs[0].case] * len(jobs[0].impls)
    assert [s["impl"] for s in data["skipped"]] == list(jobs[1].impls)
    for s in data["skipped"]:
        assert s["mode"] == jobs[1].mode and s["case"] == jobs[1].case
        assert s["reason"].startswith(harness.STICKY_FAULT)
        assert harness.job_id(jobs[1]) in s["reason"] and "illegal memory access" in s["reason"]
        assert "\n" not in s["reason"]


def test_run_job_names_the_stage_in_the_skip_reason(tmp_path, monkeypatch):
    job = grid.smoke_jobs(False)[0]

    def fake_build(impl, job, device, allow_tf32):
        if impl == "fused":
            raise AcceleratorError(ILLEGAL_ADDRESS + "\nSearch for `cudaErrorIllegalAddress' in ...")
        return timing.Candidate(lambda: None), "aten", False

    monkeypatch.setattr(harness, "build", fake_build)
    results = harness.ResultsFile(tmp_path / "r.json", ENV)
    fault = harness.run_jobs([job], CPU, results, show_progress=False, log=lambda *a: None)
    assert fault["next"] == 1 and fault["stage"] == "building fused"
    reasons = {s["reason"] for s in json.loads((tmp_path / "r.json").read_text())["skipped"]}
    assert reasons == {f"{harness.STICKY_FAULT} in job {harness.job_id(job)} during building fused: "
                       f"AcceleratorError: {ILLEGAL_ADDRESS} (cudaErrorIllegalAddress)"}


def test_ordinary_errors_skip_their_job_and_the_run_goes_on(tmp_path, monkeypatch):
    jobs = grid.smoke_jobs(False)[:3]
    errors = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
              RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")]
    calls = []

    def fake(job, device, settings):
        calls.append(job)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return [row(job, impl) for impl in job.impls], []

    monkeypatch.setattr(harness, "run_job", fake)
    results = harness.ResultsFile(tmp_path / "r.json", ENV)
    assert harness.run_jobs(jobs, CPU, results, show_progress=False, log=lambda *a: None) is None
    data = json.loads((tmp_path / "r.json").read_text())
    assert calls == jobs and len(data["rows"]) == len(jobs[2].impls)
    assert [s["reason"].split(":")[1].strip() for s in data["skipped"]] == (
        ["OutOfMemoryError"] * len(jobs[0].impls) + ["RuntimeError"] * len(jobs[1].impls))


def test_on_a_gpu_the_device_decides_whether_the_run_goes_on(tmp_path, monkeypatch):
    """On CUDA an error ends the process's run only if the device no longer runs work after it."""
    jobs = grid.smoke_jobs(False)[:3]
    usable = {"now": True}
    calls = []

    def fake(job, device, settings):
        calls.append(job)
        if len(calls) == 1:
            raise RuntimeError(ILLEGAL_ADDRESS)    # says CUDA error, but the device still works: ordinary
        if len(calls) == 2:
            usable["now"] = False
            raise RuntimeError("Triton Error: launch failed")    # the device no longer works: sticky
        return [row(job, impl) for impl in job.impls], []

    monkeypatch.setattr(harness, "run_job", fake)
    monkeypatch.setattr(harness, "device_usable", lambda device: usable["now"])
    results = harness.ResultsFile(tmp_path / "r.json", ENV)
    fault = harness.run_jobs(jobs, torch.device("cuda"), results, show_progress=False, log=lambda *a: None)
    assert calls == jobs[:2] and fault["next"] == 2 and fault["job"] == harness.job_id(jobs[1])
    reasons = [s["reason"] for s in json.loads((tmp_path / "r.json").read_text())["skipped"]]
    sticky = f"{harness.STICKY_FAULT} in job {harness.job_id(jobs[1])} during the job, outside its synchronized stages"
    assert [r.split(":")[0] for r in reasons] == ["error"] * len(jobs[0].impls) + [sticky] * len(jobs[1].impls)


def test_build_lets_a_sticky_fault_through_and_calls_an_ordinary_error_unsupported(monkeypatch):
    job = grid.Job("seed", grid.SEED, "float32", "ieee", "forward", ("stock",), 0.02)

    def failing_forward(message):
        def make(model, x):
            def call():
                raise RuntimeError(message)
            return call
        return make

    monkeypatch.setattr(harness, "_forward", failing_forward(ILLEGAL_ADDRESS))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        harness.build("stock", job, CPU, False)
    monkeypatch.setattr(harness, "_forward", failing_forward("Error building extension 'fused_rnn_csrc'"))
    with pytest.raises(harness.Unsupported, match="Error building extension"):
        harness.build("stock", job, CPU, False)


def test_in_process_run_records_the_jobs_a_fault_left_unrun(tmp_path, monkeypatch):
    """Without a fresh process (--in-process), the jobs after a fault are not run, and their
    skip rows blame the job that faulted, not themselves."""
    jobs = grid.smoke_jobs(False)
    calls = []
    monkeypatch.setattr(harness, "run_job", poisoning_run_job(2, jobs, calls))
    monkeypatch.setattr(grid, "smoke_jobs", lambda cuda: jobs)
    run.main(["--smoke", "--in-process", "--out", str(tmp_path), "--no-progress"])
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    assert calls == jobs[:3]
    faulty = (jobs[2].case, jobs[2].mode, jobs[2].shape["T"])
    later = [s for s in data["skipped"] if (s["case"], s["mode"], s["T"]) != faulty]
    assert len(later) == sum(len(j.impls) for j in jobs[3:])
    assert all(harness.job_id(jobs[2]) in s["reason"] and s["reason"].startswith("not run") for s in later)


class FakeChildren:
    """Stands in for worker processes: each call is given (start, deadline) and answers
    (exit code, state) from a script."""

    def __init__(self, script):
        self.script = list(script)
        self.starts = []

    def __call__(self, start, deadline):
        self.starts.append(start)
        return self.script.pop(0)


def test_supervisor_restarts_after_a_fault_and_after_a_crash(tmp_path):
    jobs = grid.smoke_jobs(False)
    children = FakeChildren([
        (run.FAULT_EXIT, {"next": 3, "running": False}),     # job 2 faulted; its rows are recorded
        (-11, {"next": 5, "running": True}),                  # job 5 crashed the process
        (0, {"next": len(jobs), "running": False}),
    ])
    logs = []
    rc = run.supervise(jobs, tmp_path / "r.json", ENV, children, deadline=None, log=logs.append)
    assert rc == 0 and children.starts == [0, 3, 6]
    data = json.loads((tmp_path / "r.json").read_text())
    assert [s["impl"] for s in data["skipped"]] == list(jobs[5].impls)
    assert all("SIGSEGV" in s["reason"] and harness.job_id(jobs[5]) in s["reason"] for s in data["skipped"])
    assert any("restart" in line and harness.job_id(jobs[3]) in line for line in logs)


def test_supervisor_stops_when_a_child_makes_no_progress_or_time_is_up(tmp_path):
    jobs = grid.smoke_jobs(False)
    # Dies before its first job (an import error, say): restarting it would only do so again.
    children = FakeChildren([(1, None)])
    assert run.supervise(jobs, tmp_path / "a.json", ENV, children, deadline=None, log=lambda *a: None) == 1
    assert children.starts == [0]
    children = FakeChildren([(1, {"next": 0, "running": False})])
    assert run.supervise(jobs, tmp_path / "b.json", ENV, children, deadline=None, log=lambda *a: None) == 1
    # A fault when the time budget is spent: no new child; the rest is recorded as not run for lack of time.
    children = FakeChildren([(run.FAULT_EXIT, {"next": 4, "running": False})])

    def late(start, deadline):
        result = children(start, deadline)
        time.sleep(0.05)
        return result
    rc = run.supervise(jobs, tmp_path / "c.json", ENV, late, deadline=time.monotonic() + 0.01, log=lambda *a: None)
    assert rc == 0 and children.starts == [0]
    data = json.loads((tmp_path / "c.json").read_text())
    assert len(data["skipped"]) == sum(len(j.impls) for j in jobs[4:])
    assert {s["reason"] for s in data["skipped"]} == {"time budget spent"}


FAULTY_SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
from benchmarks import harness, run

real_run_job = harness.run_job
poisoned = []


def run_job(job, device, settings):
    # A sticky fault: the faulty job raises it, and so does every job after it in this process.
    if poisoned or harness.job_id(job) == os.environ["FAULTY_JOB"]:
        poisoned.append(job)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return real_run_job(job, device, settings)


harness.run_job = run_job
run.WORKER = [sys.executable, __file__]
sys.exit(run.main())
"""


def test_isolated_suite_runs_the_jobs_after_a_fault_in_a_fresh_process(tmp_path):
    """End to end on CPU: run.py --isolate with a job that poisons its process; every other
    job of the smoke suite still has its rows, and the faulty job's skip rows name it."""
    jobs = grid.smoke_jobs(False)
    faulty = jobs[1]
    script = tmp_path / "faulty_run.py"
    script.write_text(FAULTY_SCRIPT.format(root=str(ROOT)))
    out = tmp_path / "out"
    start = time.monotonic()
    proc = run_python(str(script), "--smoke", "--isolate", "--out", str(out), "--no-progress",
                      env={"FAULTY_JOB": harness.job_id(faulty)}, timeout=300)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("*.json")
    assert sorted(p.name for p in out.iterdir()) == [path.name]     # nothing else left in --out
    data = json.loads(path.read_text())
    ran = {(r["case"], r["mode"], r["T"], r["impl"]) for r in data["rows"]}
    expected = {(j.case, j.mode, j.shape["T"], impl) for j in jobs if j is not faulty for impl in j.impls}
    assert ran == expected
    assert [s["impl"] for s in data["skipped"]] == list(faulty.impls)
    assert all(s["reason"].startswith(f"{harness.STICKY_FAULT} in job {harness.job_id(faulty)}")
               for s in data["skipped"])
    assert f"restarting at job 3/{len(jobs)} ({harness.job_id(jobs[2])})" in proc.stdout
    assert took < 60, f"{took:.0f} s"


def test_job_ids_are_unique_and_select_jobs():
    for jobs in (grid.gpu_jobs(), grid.cpu_jobs(), grid.smoke_jobs(True), grid.smoke_jobs(False)):
        ids = [harness.job_id(j) for j in jobs]
        assert len(set(ids)) == len(ids)
        assert all(" " not in i and "," not in i for i in ids)
    jobs = grid.gpu_jobs()
    bf16 = next(j for j in jobs if j.case == "long" and j.dtype == "bfloat16" and j.mode == "forward")
    assert harness.job_id(bf16) == "long/B64-T1024-I64-H128-O1/bfloat16/bf16/forward/stock+fused+fused_graph"
    args = run.parse_args(["--only", harness.job_id(bf16), "--impls", "fused,fused_graph"])
    assert run.select_jobs(args, jobs) == [bf16._replace(impls=("fused", "fused_graph"))]
    with pytest.raises(SystemExit):
        run.select_jobs(run.parse_args(["--only", "long/no-such-job"]), jobs)


def test_gpu_proof_summary_names_the_faulting_job():
    reason = (f"{harness.STICKY_FAULT} in job long/B64-T1024-I64-H128-O1/bfloat16/bf16/forward/stock+fused "
              f"during timing stock, fused: AcceleratorError: {ILLEGAL_ADDRESS}")
    skipped = [dict(case="long", mode="forward", impl=impl, reason=reason) for impl in ("stock", "fused")]
    text = gpu_proof.summary_text([("benchmark suite", 0, 100.0, "rows")], [], {}, skipped, "", 120)
    assert "CUDA faults: 1" in text
    assert f"- {reason}" in text.split("CUDA faults: 1")[1]


def test_a_worker_hung_past_the_deadline_is_killed_and_its_job_named(tmp_path, monkeypatch):
    jobs = grid.smoke_jobs(False)
    # A worker that reports job 1 as running, then hangs.
    hang = ("import json, sys, time; f = sys.argv[sys.argv.index('--worker') + 1]; "
            "open(f, 'w').write(json.dumps(dict(next=1, running=True))); time.sleep(60)")
    # The supervisor kills a hung worker before gpu_proof kills the suite, so that it can name the job.
    assert run.HANG_GRACE_S < gpu_proof.JOB_GRACE_S
    monkeypatch.setattr(run, "WORKER", [sys.executable, "-c", hang])
    monkeypatch.setattr(run, "HANG_GRACE_S", 0.5)
    start = time.monotonic()
    deadline = start + 1.0     # the worker is killed 1.5 s from now
    rc = run.supervise(jobs, tmp_path / "r.json", ENV, run.worker_runner([], tmp_path / "r.json"), deadline,
                       log=lambda *a: None)
    assert rc == 0 and time.monotonic() - start < 20
    data = json.loads((tmp_path / "r.json").read_text())
    died = [s for s in data["skipped"] if s["reason"].startswith(run.WORKER_DIED)]
    assert [s["impl"] for s in died] == list(jobs[1].impls)
    assert all("SIGKILL" in s["reason"] and harness.job_id(jobs[1]) in s["reason"] for s in died)
    # The deadline has passed: the jobs after it are recorded as not run for lack of time, not started.
    assert len(data["skipped"]) == len(died) + sum(len(j.impls) for j in jobs[2:])


def test_isolated_suite_with_a_relative_out_writes_where_it_was_asked(tmp_path):
    """run.py --out DIR is relative to the caller's working directory, for the supervisor and its workers
    alike: the rows land in DIR there, and nothing is written relative to the checkout."""
    import os
    import subprocess
    relative = f"rel_out_{os.getpid()}"
    stray = ROOT / relative
    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--isolate",
                               "--out", relative, "--no-progress", "--no-tables", "--cases", "seed"],
                              cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert not stray.exists(), f"the worker wrote into {stray}"
        (path,) = (tmp_path / relative).glob("*.json")
        data = json.loads(path.read_text())
        seed_jobs = [j for j in grid.smoke_jobs(False) if j.case == "seed"]
        assert len(data["rows"]) + len(data["skipped"]) == sum(len(j.impls) for j in seed_jobs)
        assert data["rows"]
    finally:
        import shutil
        shutil.rmtree(stray, ignore_errors=True)


def test_the_device_probe_calls_a_full_device_usable(monkeypatch):
    """After an out-of-memory error the probe's own allocation can fail for lack of memory too: the device
    answered (it is full, not faulted), so the job is an ordinary failure, not a sticky fault that costs a
    fresh worker and is reported among the CUDA faults."""
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")

    monkeypatch.setattr(torch, "ones", full)
    cuda = torch.device("cuda")
    assert harness.device_usable(cuda)
    assert not harness.poisons_context(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), cuda)


def test_gpu_proof_gives_the_suite_the_folder_it_writes_into(tmp_path, monkeypatch):
    """gpu_proof writes its logs and summary into --out DIR relative to its working directory; the suite
    step runs in the checkout's root, so the DIR it is given must name that same folder."""
    commands = []

    def fake_run_step(cmd, log_path, timeout_s, env, **options):
        commands.append(cmd)
        open(log_path, "w").close()
        return 0, 0.0

    monkeypatch.setattr(gpu_proof, "run_step", fake_run_step)
    monkeypatch.chdir(tmp_path)
    gpu_proof.gpu_proof("proof_out", cuda=True)
    (suite,) = [cmd for cmd in commands if str(cmd[1]).endswith("run.py")]
    given = suite[suite.index("--out") + 1]
    assert (ROOT / given).resolve() == (tmp_path / "proof_out").resolve(), given
