"""What the benchmarks time: cases (shapes) × implementations × modes, in the order they run.

The grid is the one of issue 11, with issue 13's and 14's cells and stacks. Each
``Job`` is one shape, dtype, precision and mode with the implementations timed side
by side (interleaved) on it. GPU jobs are ordered by what a run cut short by its
time budget must still answer: issue 4's targets (seed forward and train, long
forward), then issue 14's GRU and LSTM against cuDNN (forward, then training),
then the T sweep (inference memory up to T = 65,536), then the rest.
"""

from typing import NamedTuple

MODES = ("forward", "train")
# fused: fused_rnn.SimpleRNN as users get it (backend "auto"); fused_kernel: the same with backend
# "triton", timed where "auto" leaves a call to cuDNN (float32 calls that stream their weights from
# shared memory, fused_rnn/backends/triton.py), so that the kernels' own speed there stays measured.
IMPLS = ("stock", "stock_compiled", "fused", "fused_kernel", "fused_graph", "fused_cuda")
# Implementations with no backward: they are timed in forward mode only.
FORWARD_ONLY = ("fused_graph", "fused_cuda")

SEED = dict(B=32, T=5, I=10, H=20, O=1)
LONG = dict(B=64, T=1024, I=64, H=128, O=1)
WIDE = dict(B=64, T=512, I=256, H=1024, O=1)
BATCH_SWEEP = dict(T=64, I=32, H=64, O=1)      # B varies
T_SWEEP = dict(B=64, I=32, H=64, O=1)          # T varies
# The sweeps' fp32 precision on a GPU: TF32, cuDNN's default, where the kernels hold H = 64's weights
# in registers ("auto" runs them at every B and T). The H200 runs of 2026-11-26 swept "ieee" (3xTF32).
GPU_SWEEP_PRECISION = "tf32"
H_SWEEP = dict(B=64, T=256, I=64, O=1)         # H varies

GPU_BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
GPU_TS = (16, 64, 256, 1024, 4096, 16384, 65536)
GPU_TRAIN_MAX_T = 4096      # training saves [B, T, H] states: the sweep's memory claim is inference
# One fused call at T = 65,536 takes 65 ms on the H200, and cuDNN refuses stock's
# (CUDNN_STATUS_NOT_SUPPORTED): that job times fused alone, in the fewest rounds (~1 s in all).
LONGEST_T_BUDGET_S = 0.25
GPU_HS = (16, 32, 64, 128, 256, 512, 1024)
# CPU sizes: one thread runs ~15 µs per step at B = 64, H = 64, so T = 4096 is ~60 ms a call.
CPU_BATCHES = (1, 4, 16, 64, 256)
CPU_TS = (16, 64, 256, 1024, 4096)


# The generalized seed (issues 13 and 14): nn.RNN/GRU/LSTM(batch_first=True, num_layers, bidirectional)
# then nn.Linear on out[:, -1], against fused_rnn.SimpleRNN with the same options. case: (model, shape).
# lstm_anchor is the reference point: cuDNN's LSTM takes about 2.0 µs/step forward there on an
# H100 in fp16, FlashRNN's fused kernel about 4.8.
FAMILY = {
    "long_2layer": (dict(cell="rnn", num_layers=2), LONG),
    "long_bidir": (dict(cell="rnn", bidirectional=True), LONG),
    "long_2layer_bidir_gru": (dict(cell="gru", num_layers=2, bidirectional=True), LONG),
    "long_lstm": (dict(cell="lstm"), LONG),
    "long_gru": (dict(cell="gru"), LONG),
    "lstm_anchor": (dict(cell="lstm"), dict(B=16, T=1024, I=768, H=768, O=1)),
}
# Issue 14's single-layer cells, timed early against cuDNN.
FAMILY_CELLS = ("long_lstm", "long_gru")
# Stock's fp16 RNNs run cuDNN; its bf16 ones ATen's per-step loop (the Elman long forward on the
# H200: 12.6 ms in bf16, 1.19 ms in fp16), a weak baseline. Low precisions in this order.
LOW_PRECISIONS = (("float16", "fp16"), ("bfloat16", "bf16"))

# Seconds a GPU job takes beyond its timing budget (building the models, compiling and warming up,
# the peak-memory call, the clean-up), averaged with the worker's start: the second H200 run did
# its first 18 jobs (budgets of 1 and 1.5 s) in ~165 s. What estimated_s plans the order with.
JOB_OVERHEAD_S = 7.5


class Job(NamedTuple):
    case: str           # seed, long, wide, batch_sweep, T_sweep, H_sweep, or a FAMILY case
    shape: dict         # B, T, I, H, O
    dtype: str          # float32, bfloat16 or float16
    precision: str      # ieee, tf32 (fp32 products rounded to TF32 on both sides), bf16 or fp16
    mode: str           # forward or train
    impls: tuple        # implementations timed side by side
    budget_s: float = 1.0   # timing time for the whole job (all its impls), warm-up not counted
    model: tuple = ()   # SimpleRNN options beyond the seed's, as (name, value) pairs: cell, num_layers, ...


def family_job(case, dtype, precision, mode, impls=("stock", "fused"), budget_s=1.0, **shape):
    model, base = FAMILY[case]
    return Job(case, dict(base, **shape), dtype, precision, mode, impls, budget_s, tuple(sorted(model.items())))


def _impls(mode, impls):
    return tuple(i for i in impls if mode == "forward" or i not in FORWARD_ONLY)


def _with_kernel(precision, impls):
    """impls, with fused_kernel after fused where "auto" leaves the long case to cuDNN (3xTF32, B = 64)."""
    if precision != "ieee":
        return impls
    i = impls.index("fused") + 1
    return (*impls[:i], "fused_kernel", *impls[i:])


def estimated_s(jobs):
    """Roughly how long jobs take on a GPU whose kernels are compiled (JOB_OVERHEAD_S)."""
    return sum(job.budget_s + JOB_OVERHEAD_S for job in jobs)


def gpu_jobs():
    jobs = []
    # Issue 4's targets first.
    for precision in ("ieee", "tf32"):
        for mode in MODES:
            jobs.append(Job("seed", SEED, "float32", precision, mode,
                            _impls(mode, ("stock", "fused", "fused_graph")), 1.5))
        jobs.append(Job("long", LONG, "float32", precision, "forward", _with_kernel(precision, ("stock", "fused",
                                                                                            "fused_graph")), 1.5))
    # Then issue 14's LSTM and GRU against cuDNN, forward first.
    for dtype, precision in LOW_PRECISIONS:
        for case in FAMILY_CELLS:
            jobs.append(family_job(case, dtype, precision, "forward"))
    jobs.append(family_job("long_gru", "float32", "tf32", "forward", ("stock", "fused", "fused_kernel")))
    jobs.append(family_job("lstm_anchor", "float16", "fp16", "forward"))
    # The fp32 LSTM's four W_hh blocks at H = 128 need 296 KB of shared memory with TF32 products, more
    # than a Hopper block's 227 KB: fused runs the stock path, and this row is what that costs.
    jobs.append(family_job("long_lstm", "float32", "tf32", "forward"))
    for dtype, precision in LOW_PRECISIONS:
        for case in FAMILY_CELLS:
            jobs.append(family_job(case, dtype, precision, "train"))
    # Then the T sweep's inference memory (issue 4's last target): its shortest and longest T first,
    # which the target compares.
    shortest, longest = min(GPU_TS), max(GPU_TS)
    for T in (shortest, longest, *sorted(set(GPU_TS) - {shortest, longest})):
        if T == longest:
            jobs.append(Job("T_sweep", dict(T_SWEEP, T=T), "float32", GPU_SWEEP_PRECISION, "forward", ("fused",),
                            LONGEST_T_BUDGET_S))
        else:
            jobs.append(Job("T_sweep", dict(T_SWEEP, T=T), "float32", GPU_SWEEP_PRECISION, "forward",
                            ("stock", "fused")))
    # Then the rest of the grid.
    for precision in ("ieee", "tf32"):
        jobs.append(Job("long", LONG, "float32", precision, "train", _with_kernel(precision, ("stock", "fused"))))
    for mode in MODES:
        jobs.append(Job("long", LONG, "bfloat16", "bf16", mode, _impls(mode, ("stock", "fused", "fused_graph"))))
    # fp16 as well: stock's bf16 RNN runs ATen's per-step loop (12.9 ms for the long forward on the H200),
    # its fp16 one cuDNN, the low-precision baseline to beat.
    for mode in MODES:
        jobs.append(Job("long", LONG, "float16", "fp16", mode, _impls(mode, ("stock", "fused", "fused_graph"))))
    for B in GPU_BATCHES:
        for mode in MODES:
            jobs.append(Job("batch_sweep", dict(BATCH_SWEEP, B=B), "float32", GPU_SWEEP_PRECISION, mode,
                            ("stock", "fused")))
    for T in GPU_TS:
        if T <= GPU_TRAIN_MAX_T:
            jobs.append(Job("T_sweep", dict(T_SWEEP, T=T), "float32", GPU_SWEEP_PRECISION, "train",
                            ("stock", "fused")))
    for H in GPU_HS:
        for mode in MODES:
            jobs.append(Job("H_sweep", dict(H_SWEEP, H=H), "bfloat16", "bf16", mode, ("stock", "fused")))
    for mode in MODES:
        jobs.append(Job("wide", WIDE, "bfloat16", "bf16", mode, ("stock", "fused")))
    # Issue 13's stacked and bidirectional cases; cuDNN (fp16) first, as above.
    for case in FAMILY:
        if case in FAMILY_CELLS or case == "lstm_anchor":
            continue
        for dtype, precision in LOW_PRECISIONS:
            for mode in MODES:
                jobs.append(family_job(case, dtype, precision, mode))
        jobs.append(family_job(case, "float32", "tf32", "forward",
                               ("stock", "fused", "fused_kernel") if case == "long_2layer_bidir_gru" else
                               ("stock", "fused")))
    # torch.compile costs tens of seconds per shape: late, so that it cannot crowd out the rest.
    for case, shape in (("seed", SEED), ("long", LONG)):
        for mode in MODES:
            jobs.append(Job(case, shape, "float32", "ieee", mode, ("stock_compiled",)))
    # The csrc kernel last of all: it may build just in time (minutes), and it has
    # never run on a GPU, so a fault that poisons the CUDA context can only cost these rows.
    jobs.append(Job("wide", WIDE, "bfloat16", "bf16", "forward", ("fused_cuda",)))
    for H in GPU_HS:
        jobs.append(Job("H_sweep", dict(H_SWEEP, H=H), "bfloat16", "bf16", "forward", ("fused_cuda",)))
    for case, shape in (("seed", SEED), ("long", LONG)):
        jobs.append(Job(case, shape, "float32", "ieee", "forward", ("fused_cuda",)))
    return jobs


def cpu_jobs():
    # The seed forward gets the longest budget: the fused fallback's overhead
    # over stock (a few µs on ~60) must be resolved to ~1%.
    jobs = [Job("seed", SEED, "float32", "ieee", "forward", ("stock", "fused"), 8.0),
            Job("seed", SEED, "float32", "ieee", "train", ("stock", "fused"), 3.0)]
    for B in CPU_BATCHES:
        for mode in MODES:
            jobs.append(Job("batch_sweep", dict(BATCH_SWEEP, B=B), "float32", "ieee", mode, ("stock", "fused")))
    for T in CPU_TS:
        for mode in MODES:
            jobs.append(Job("T_sweep", dict(T_SWEEP, T=T), "float32", "ieee", mode, ("stock", "fused")))
    return jobs


def smoke_jobs(cuda):
    """A few tiny jobs that touch every code path the device has, in seconds."""
    seed_impls = ("stock", "fused", "fused_graph") if cuda else ("stock", "fused")
    jobs = [Job("seed", SEED, "float32", "ieee", mode, _impls(mode, seed_impls), 0.05) for mode in MODES]
    jobs += [Job("T_sweep", dict(T_SWEEP, B=4, T=T), "float32", "ieee", "forward", ("stock", "fused"), 0.05)
             for T in (16, 64)]
    jobs.append(Job("batch_sweep", dict(BATCH_SWEEP, B=2), "float32", "ieee", "train", ("stock", "fused"), 0.05))
    # Every cell, stacked and bidirectional, at a tiny size.
    tiny = dict(B=3, T=6, I=8, H=16)
    jobs += [family_job(case, "float32", "ieee", "train", budget_s=0.05, **tiny)
             for case in ("long_2layer", "long_2layer_bidir_gru", "long_lstm")]
    return jobs


def jobs_for(profile, cuda):
    """profile: "full" or "smoke"; cuda: whether the run is on a GPU."""
    if profile == "smoke":
        return smoke_jobs(cuda)
    return gpu_jobs() if cuda else cpu_jobs()
