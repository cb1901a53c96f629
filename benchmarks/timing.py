"""Timers: interleaved blocks of back-to-back calls, CUDA events on a GPU, perf_counter on CPU.

Why blocks of back-to-back calls and not ``triton.testing.do_bench``: do_bench
zeroes a 256 MB buffer before every call, and while the GPU clears it the host
runs ahead and queues the timed call, so the host's launch overhead (tens of µs
for nn.RNN at the seed shape, more than its kernels) drops out of the number. A
user's loop pays it; a block of n calls between two events pays it too, and the
block's time over n is the time per call in such a loop.

Why interleaved: the implementations of one job take turns block by block, in
alternating order (A B, B A, ...), so that drift in clocks or in the load of the
machine lands on all of them alike; each sample is one block's time per call,
and the row reports the median and the 20th and 80th percentiles of the samples.
"""

import gc
import time
from typing import Callable, NamedTuple

import torch

now = time.perf_counter     # the host clock (a module global, so a test can substitute a virtual one)


class Candidate(NamedTuple):
    fn: Callable[[], object]
    calls: int = 1          # model calls one fn() makes (a CUDA graph replays several)


class Stats(NamedTuple):
    median_ms: float
    p20_ms: float
    p80_ms: float
    samples: int            # blocks timed
    calls: int              # model calls timed in all


class Settings(NamedTuple):
    block_s: float          # time one block should take
    min_rounds: int
    max_rounds: int
    warmup_s: float         # per candidate, after its first calls


FULL = Settings(block_s=2e-3, min_rounds=5, max_rounds=4000, warmup_s=0.2)
# On a shared CPU, shorter blocks keep the two halves of a pair within ~1 ms of each
# other: on a loaded 2-core machine the seed forward's fused/stock ratio repeated
# to 1.064–1.065 over three runs, where 2 ms blocks gave 1.00–1.08.
FULL_CPU = FULL._replace(block_s=5e-4, min_rounds=10)
SMOKE = Settings(block_s=5e-4, min_rounds=3, max_rounds=5, warmup_s=0.0)


def quantile(sorted_values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class _Clock:
    """Times a block of calls: CUDA events on a GPU (read after the round), perf_counter on CPU."""

    def __init__(self, cuda):
        self.cuda = cuda

    def start(self):
        if self.cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            return begin, end
        return now()

    def stop(self, token):
        if self.cuda:
            token[1].record()
            return token
        return now() - token

    def seconds(self, token):
        if self.cuda:
            return token[0].elapsed_time(token[1]) * 1e-3   # after a synchronize
        return token

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


def _time_block(clock, fn, n):
    token = clock.start()
    for _ in range(n):
        fn()
    token = clock.stop(token)
    clock.sync()
    return clock.seconds(token)


def measure(candidates, *, cuda, budget_s, settings=FULL):
    """({name: Stats}, {name: [seconds per call, one per round]}) for {name: Candidate},
    timed in interleaved blocks.

    budget_s: the time all rounds together should take (at least min_rounds).
    """
    clock = _Clock(cuda)
    block = {}
    for name, cand in candidates.items():
        for _ in range(3):      # first calls: compilation, autotuning, cuDNN plans, allocator growth
            cand.fn()
        clock.sync()
        deadline = now() + settings.warmup_s
        while now() < deadline:
            cand.fn()
        clock.sync()
        per_call = max(_time_block(clock, cand.fn, 2) / 2, 1e-7)
        block[name] = max(1, round(settings.block_s / per_call))
    round_s = sum(n * _time_block(clock, candidates[name].fn, 1) for name, n in block.items())
    rounds = min(settings.max_rounds, max(settings.min_rounds, round(budget_s / max(round_s, 1e-9))))

    samples = {name: [] for name in candidates}
    names = list(candidates)
    gc_was_enabled = gc.isenabled()
    gc.disable()    # a collection inside one block would be one outlier sample
    try:
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            tokens = []
            for name in order:
                token = clock.start()
                for _ in range(block[name]):
                    candidates[name].fn()
                tokens.append((name, clock.stop(token)))
            clock.sync()
            for name, token in tokens:
                samples[name].append(clock.seconds(token) / (block[name] * candidates[name].calls))
    finally:
        if gc_was_enabled:
            gc.enable()
    result = {}
    for name, values in samples.items():
        ordered = sorted(values)
        result[name] = Stats(quantile(ordered, 0.5) * 1e3, quantile(ordered, 0.2) * 1e3, quantile(ordered, 0.8) * 1e3,
                             len(values), len(values) * block[name] * candidates[name].calls)
    return result, samples


def paired_ratio(samples, name, reference):
    """Median over rounds of name's time over reference's time in the same round.

    Both ran within milliseconds of each other in every round, so a slow spell
    of the machine (other processes on a shared CPU) scales both and cancels
    here, where it would widen the spread of each median on its own.
    """
    ratios = sorted(a / b for a, b in zip(samples[name], samples[reference]))
    return quantile(ratios, 0.5)


def cuda_peak_bytes(fn):
    """Bytes one call allocates above what was allocated before it (CUDA's allocator statistics)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base
