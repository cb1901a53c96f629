"""Static performance report of the Triton kernels for Hopper (sm_90a), without a GPU.

    PYTHONPATH=/tmp/t36:. python benchmarks/static_report.py [--out DIR] [--only NAMES] [--jobs N]

(``pip install --target /tmp/t36 --no-deps triton==3.6.0`` gives the GPU machines' triton beside
the installed one.) For each configuration it calls the real launchers in
``fused_rnn.kernels`` (``rnn_linear``: the one-layer Elman RNN with its fused
Linear head; ``elman``, ``gru``, ``lstm``: one layer-direction of the
recurrence from a precomputed input projection) on CPU tensors with Triton's driver replaced by a
stand-in for an sm_90 device, so each launch goes through ``JITFunction.run``:
the same arguments, the same JIT specialization (16-byte divisibility, ints
equal to 1, ``do_not_specialize``) and the same meta-parameters as a GPU call.
``run`` is recorded with ``warmup=True``: the kernel compiles and nothing
launches. Then it disassembles the cubin (nvdisasm), finds the time loop (the
largest backward branch), and counts its instructions per warp.

It writes ``static_sm90a_triton<version>.json`` into DIR (default
``benchmarks/results``): one row per configuration, with
``issue_slots_per_smsp = loop_instructions_per_warp × ceil(num_warps / 4)``
(4 SM sub-partitions, each issuing one warp instruction per cycle), and two more lower bounds on a
step's cycles, from pipes that finish fewer instructions per cycle than are issued:

* ``mufu_cycles``: the loop's MUFU instructions (tanh.approx, ex2, rcp) per SM sub-partition × 8.
  Hopper's special-function units finish 16 lanes per cycle per SM (CUDA C++ Programming Guide,
  arithmetic instruction throughput, compute capability 9.0: ex2, rcp, rsqrt, lg2, sin, cos; the
  guide does not list tanh.approx, one MUFU operation as they are, taken at the same rate), 4 per
  sub-partition: 8 cycles a warp.
* ``tensor_cycles``: the loop's MMA multiply-adds (each HGMMA's or HMMA's M·N·K from its opcode,
  times the warpgroups or warps that issue it) over the SM's dense tensor rate: 2048 bf16/fp16 and
  1024 TF32 multiply-adds per cycle (H100 SXM: 989 and 495 TFLOPS at 1.83 GHz over 132 SMs; mma.sync
  is taken at the same rate, which it may not reach: a floor either way).

``step_floor_cycles`` is the largest of the three. It is a floor, not a prediction: it counts no
latency, and one program per SM runs too few warps to hide much of it.
"""

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
KERNEL_SOURCES = sorted((ROOT / "fused_rnn" / "kernels").glob("*.py"))
# Counted per loop even when 0, so rows compare column by column.
COUNTED = ("HMMA", "HGMMA", "FFMA", "FMUL", "FADD", "MUFU", "LDS", "LDSM", "STS", "LDG", "STG", "BAR",
           "WARPGROUP", "WARPSYNC", "SHFL")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Named rows (the targets are read from these) and the grid "auto" can pick.
# (B, T, I, H, O)
SEED, LONG = (32, 5, 10, 20, 1), (64, 1024, 64, 128, 1)
NAMED = {
    "seed_fp32_forward": (SEED, "fp32", "forward", None),
    "seed_fp32_ieee_forward": (SEED, "fp32", "forward", False),
    "seed_fp32_train_forward": (SEED, "fp32", "train_forward", None),
    "seed_fp32_backward": (SEED, "fp32", "backward", None),
    "long_fp32_forward": (LONG, "fp32", "forward", None),
    "long_fp32_ieee_forward": (LONG, "fp32", "forward", False),
    "long_bf16_forward": (LONG, "bf16", "forward", None),
    "long_bf16_train_forward": (LONG, "bf16", "train_forward", None),
    "long_fp32_backward": (LONG, "fp32", "backward", None),
    "long_fp32_ieee_backward": (LONG, "fp32", "backward", False),
    "long_bf16_backward": (LONG, "bf16", "backward", None),
    "h256_bf16_forward": ((64, 1024, 64, 256, 1), "bf16", "forward", None),
}
# One layer-direction of the recurrence (fused_rnn/kernels/{elman,gru,lstm}.py): the layers of a
# multi-layer or bidirectional model whose output the next layer reads, and GRU/LSTM models.
# config: (cell, (B, T, I, H), dtype, mode, allow_tf32, direction, store_out). I is the model's input
# size: the input projection is one GEMM outside the loop, so it does not change the kernel.
# (B, T, I, H, O): with a head of O outputs fused after the loop (SimpleRNN's last GRU or LSTM layer).
# direction: "forward", "reverse", or "both" (a bidirectional Elman layer's one launch, grid axis 1).
LONG_LAYER = (64, 1024, 64, 128)
PADDED_LAYER = (64, 1024, 64, 100)
LONG_HEAD_LAYER = (*LONG_LAYER, 1)
# The widest head the kernels take (rnn_linear.MAX_BLOCK outputs) where it costs the most shared memory.
WIDE_HEAD_LAYER = (*LONG_LAYER, 256)
NAMED_LAYERS = {
    "long_layer_bf16_forward": ("rnn_tanh", LONG_LAYER, "bf16", "forward", None, "forward", True),
    "long_layer_bf16_reverse_forward": ("rnn_tanh", LONG_LAYER, "bf16", "forward", None, "reverse", True),
    "long_bidir_layer_bf16_forward": ("rnn_tanh", LONG_LAYER, "bf16", "forward", None, "both", True),
    "long_bidir_layer_bf16_backward": ("rnn_tanh", LONG_LAYER, "bf16", "backward", None, "both", True),
    "long_layer_fp32_forward": ("rnn_tanh", LONG_LAYER, "fp32", "forward", None, "forward", True),
    "long_layer_bf16_train_forward": ("rnn_tanh", LONG_LAYER, "bf16", "train_forward", None, "forward", True),
    "long_layer_bf16_backward": ("rnn_tanh", LONG_LAYER, "bf16", "backward", None, "forward", True),
    "long_layer_fp32_backward": ("rnn_tanh", LONG_LAYER, "fp32", "backward", None, "forward", True),
    "long_lstm_bf16_forward": ("lstm", LONG_LAYER, "bf16", "forward", None, "forward", False),
    "long_lstm_bf16_train_forward": ("lstm", LONG_LAYER, "bf16", "train_forward", None, "forward", True),
    # The reverse direction of a bidirectional LSTM (with lengths: over packed sequences, below).
    "long_lstm_bf16_reverse_train_forward": ("lstm", LONG_LAYER, "bf16", "train_forward", None, "reverse", True),
    "long_lstm_bf16_backward": ("lstm", LONG_LAYER, "bf16", "backward", None, "forward", True),
    "long_lstm_fp32_forward": ("lstm", LONG_LAYER, "fp32", "forward", None, "forward", False),
    "long_gru_bf16_forward": ("gru", LONG_LAYER, "bf16", "forward", None, "forward", False),
    "long_gru_bf16_train_forward": ("gru", LONG_LAYER, "bf16", "train_forward", None, "forward", True),
    "long_gru_bf16_backward": ("gru", LONG_LAYER, "bf16", "backward", None, "forward", True),
    "long_gru_fp32_forward": ("gru", LONG_LAYER, "fp32", "forward", None, "forward", False),
    # The last layer of SimpleRNN(cell="gru" | "lstm"): h_n into the fused head.
    "long_gru_bf16_head_forward": ("gru", LONG_HEAD_LAYER, "bf16", "forward", None, "forward", False),
    "long_gru_bf16_head_train_forward": ("gru", LONG_HEAD_LAYER, "bf16", "train_forward", None, "forward", False),
    "long_lstm_bf16_head_forward": ("lstm", LONG_HEAD_LAYER, "bf16", "forward", None, "forward", False),
    "long_lstm_bf16_head_train_forward": ("lstm", LONG_HEAD_LAYER, "bf16", "train_forward", None, "forward",
                                          False),
    "long_gru_fp16_head256_forward": ("gru", WIDE_HEAD_LAYER, "fp16", "forward", None, "forward", False),
    "long_lstm_bf16_head256_train_forward": ("lstm", WIDE_HEAD_LAYER, "bf16", "train_forward", None, "forward",
                                             False),
    # fp32 heads at H = 64 (fp32 W_hh at 128 passes shared memory with a head): TF32, and 3xTF32 (the
    # head's weight split in two like W_hh), O = 10.
    "h64_lstm_fp32_head_train_forward": ("lstm", (64, 1024, 64, 64, 10), "fp32", "train_forward", None, "forward",
                                         False),
    "h64_gru_fp32_ieee_head_forward": ("gru", (64, 1024, 64, 64, 10), "fp32", "forward", False, "forward", False),
    # A hidden size that is not a power of two (padded to 128, MASK_H): what most models have.
    "padded_layer_h100_bf16_forward": ("rnn_tanh", PADDED_LAYER, "bf16", "forward", None, "forward", True),
    "padded_layer_h100_bf16_train_forward": ("rnn_tanh", PADDED_LAYER, "bf16", "train_forward", None, "forward",
                                             True),
    "padded_layer_h100_bf16_backward": ("rnn_tanh", PADDED_LAYER, "bf16", "backward", None, "forward", True),
    "padded_lstm_h100_bf16_forward": ("lstm", PADDED_LAYER, "bf16", "forward", None, "forward", False),
    "padded_lstm_h100_bf16_train_forward": ("lstm", PADDED_LAYER, "bf16", "train_forward", None, "forward", True),
    "padded_lstm_h100_bf16_backward": ("lstm", PADDED_LAYER, "bf16", "backward", None, "forward", True),
    "padded_gru_h100_bf16_forward": ("gru", PADDED_LAYER, "bf16", "forward", None, "forward", False),
    "padded_gru_h100_bf16_train_forward": ("gru", PADDED_LAYER, "bf16", "train_forward", None, "forward", True),
    "padded_gru_h100_bf16_backward": ("gru", PADDED_LAYER, "bf16", "backward", None, "forward", True),
}
# Named rows compiled again with per-sequence lengths (HAS_LENGTHS: a PackedSequence, or SimpleRNN's
# lengths), another kernel each, for the same checks: shared memory, spills, registers read unwritten.
WITH_LENGTHS = ("long_fp32_forward", "long_bf16_forward", "long_bf16_train_forward", "long_bf16_backward",
                "long_layer_bf16_forward", "long_bidir_layer_bf16_forward", "long_layer_bf16_backward",
                "long_gru_bf16_train_forward", "long_gru_bf16_backward", "long_lstm_bf16_train_forward",
                "long_lstm_bf16_reverse_train_forward", "long_lstm_bf16_backward", "padded_layer_h100_bf16_backward")
# The kernel module of each cell (fused_rnn.kernels.<module>) and its gate count.
LAYER_KERNELS = {"rnn_tanh": ("elman", 1), "rnn_relu": ("elman", 1), "gru": ("gru", 3), "lstm": ("lstm", 4)}

# allow_tf32=None is the default: it follows torch.backends.cudnn.allow_tf32, True unless a user changes it.
DEFAULT_ALLOW_TF32 = True


class _Sm90Driver:
    """Just enough of Triton's driver for JITFunction.run to compile for sm_90 with no GPU."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return TARGET

    def get_active_torch_device(self):
        return torch.device("cpu")

    def is_active(self):
        return True


_COMPILED = []
# Kernels a launcher runs before the recurrence that have no time loop: rnn_linear's one
# elementwise pass splitting fp32 weights for 3xTF32 products. The report reads time loops.
NO_TIME_LOOP = {"_split_tf32_kernel"}


def _recording_run(self, *args, grid, warmup, **kwargs):
    kernel = _ORIGINAL_RUN(self, *args, grid=grid, warmup=True, **kwargs)
    _COMPILED.append((self.fn.__name__, kernel, kwargs))
    return kernel


_ORIGINAL_RUN = JITFunction.run


def _recurrence_launches():
    return [launch for launch in _COMPILED if launch[0] not in NO_TIME_LOOP]


def _install_recorder():
    driver.set_active(_Sm90Driver())
    JITFunction.run = _recording_run


def _lengths(B, T, with_lengths):
    return torch.full((B,), T, dtype=torch.int64) if with_lengths else None


def compile_launches(mode, shape, dtype, allow_tf32, with_lengths=False):
    """Run the launcher for one configuration; return [(kernel name, compiled kernel, launch kwargs)]."""
    from fused_rnn.kernels import rnn_linear as kernels

    B, T, I, H, O = shape
    lengths = _lengths(B, T, with_lengths)
    _COMPILED.clear()
    weights = [torch.zeros(s, dtype=dtype) for s in ((H, I), (H, H), (H,), (H,), (O, H), (O,))]
    if mode in ("forward", "train_forward"):
        x = torch.zeros(B, T, I, dtype=dtype)
        training = mode == "train_forward"
        kernels.rnn_linear_fwd(x, *weights, None, lengths, allow_tf32=allow_tf32,
                               store_hn=training, store_hs=training)
    else:
        hs = torch.zeros(B, T, H)
        kernels.rnn_linear_bwd_sweep(hs, weights[1], weights[4], torch.zeros(B, O, dtype=dtype), None, lengths,
                                     allow_tf32=allow_tf32)
    return _recurrence_launches()


def layer_kernels(cell):
    import importlib
    return importlib.import_module(f"fused_rnn.kernels.{LAYER_KERNELS[cell][0]}")


def compile_layer_launches(cell, mode, shape, dtype, allow_tf32, direction, store_out, with_lengths=False):
    """As compile_launches, for one layer-direction of the recurrence (the layer contract, fused_rnn/cells)."""
    kernels = layer_kernels(cell)
    B, T, _, H, *head_outputs = shape
    G = LAYER_KERNELS[cell][1]
    train = mode != "forward"
    lengths = _lengths(B, T, with_lengths)
    _COMPILED.clear()
    if direction == "both":
        xp = torch.zeros(B, T, 2 * H, dtype=dtype)
        w_hh, b_hh = torch.zeros(2, H, H, dtype=dtype), torch.zeros(2, H, dtype=dtype)
        _, _, _, hs, _ = kernels.bidirectional_fwd(cell, xp, w_hh, b_hh, None, lengths, allow_tf32=allow_tf32,
                                                   store_out=store_out, store_saved=train)
        if mode == "backward":
            _COMPILED.clear()
            kernels.bidirectional_bwd(cell, hs, w_hh, torch.zeros(B, T, 2 * H, dtype=dtype), None, lengths,
                                      allow_tf32=allow_tf32)
        return _recurrence_launches()
    reverse = direction == "reverse"
    xp = torch.zeros(B, T, G * H, dtype=dtype)
    w_hh, b_hh = torch.zeros(G * H, H, dtype=dtype), torch.zeros(G * H, dtype=dtype)
    head = None
    if head_outputs:
        O, = head_outputs
        head = (torch.zeros(O, H, dtype=dtype), torch.zeros(O, dtype=dtype))
    out, h_n, c_n, hs, aux = kernels.recurrence_fwd(cell, xp, w_hh, b_hh, None, None, lengths, reverse=reverse,
                                                    allow_tf32=allow_tf32, store_out=store_out, store_saved=train,
                                                    head=head)
    if mode == "backward":
        _COMPILED.clear()
        dout = torch.zeros(B, T, H, dtype=dtype)
        kernels.recurrence_bwd(cell, hs, aux, w_hh, b_hh, None, None, dout, None, None, lengths, reverse=reverse,
                               allow_tf32=allow_tf32)
    return _recurrence_launches()


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Za-z0-9_.]*)")
_BRANCH = re.compile(r"BRA\s+`\(\.(L_x_\d+)\)")
_LABEL = re.compile(r"^\.(L_x_\d+):")
# MMA opcodes: wgmma "HGMMA.64x16x16.F32.BF16" (M x N x K), mma.sync "HMMA.16816.F32.BF16" (m16 n8 k16).
_HGMMA_SHAPE = re.compile(r"^HGMMA\.(\d+)x(\d+)x(\d+)\.")
_HMMA_SHAPE = {"HMMA.16816": (16, 8, 16), "HMMA.1688": (16, 8, 8)}
# Per SM and cycle (see the module docstring).
MUFU_CYCLES_PER_WARP_INSTRUCTION = 8
TENSOR_FMA_PER_CYCLE = {"tf32": 1024, "16-bit": 2048}


def _nvdisasm():
    """The nvdisasm triton bundles (beside its ptxas)."""
    from triton.backends.nvidia import compiler as nvidia
    return str(Path(nvidia.__file__).parent / "bin" / "nvdisasm")


def sass_of(cubin):
    nvdisasm = _nvdisasm()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        return subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout


def time_loop(sass):
    """Opcodes of the largest loop (a backward branch and everything between its target and it)."""
    instructions, labels, branches = [], {}, []
    for line in sass.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            labels[label.group(1)] = len(instructions)
            continue
        m = _INSTR.search(line)
        if not m:
            continue
        instructions.append(m.group(3))
        branch = _BRANCH.search(line)
        if branch:
            branches.append((len(instructions) - 1, branch.group(1)))
    loops = [(at - labels[target] + 1, labels[target], at) for at, target in branches
             if target in labels and labels[target] < at]
    if not loops:
        return []
    _, start, end = max(loops)
    return instructions[start:end + 1]


# A miscompile only a GPU shows in the numbers, visible in the SASS: ptxas 12.8 (triton 3.6's) built
# the bf16/fp16 backward sweep's wgmma descriptors at BLOCK_H = 128 from a uniform register it never
# wrote (UR9), so K-steps 1-7 multiplied the wrong shared memory (the H200's fp16 dx failure, see
# tests/test_gpu_diagnostics.py). Every row counts such reads; the tests want none.
_SASS_LINE = re.compile(r"/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?(?P<op>[A-Z][A-Za-z0-9_.]*)\s*(?P<args>[^;]*);")


def uniform_registers_read_before_written(sass):
    """[(instruction, register)] for each uniform register (URn) an instruction reads that no earlier
    instruction (in address order) wrote. Register pairs: .64 operations read and write two, WIDE
    ones write two, desc[URn] reads two, gdesc[URn] four (A's and B's descriptors) or, with A in
    registers, URn+2 and URn+3 (B's)."""
    written, found = {"URZ"}, []
    for line in sass.splitlines():
        m = _SASS_LINE.search(line)
        if not m:
            continue
        op, args = m.group("op"), [a.strip() for a in m.group("args").split(",")]
        pair_op = ".64" in op
        dst = args[0] if args and re.fullmatch(r"UR\d+", args[0]) else None
        for i, arg in enumerate(args):
            if i == 0 and dst is not None:
                continue
            for reg in re.finditer(r"(g?desc)\[UR(\d+)\]|UR(\d+)", arg):
                if reg.group(1) == "gdesc":
                    # URn, URn+1: A's descriptor, unused where A is in registers; URn+2, URn+3: B's.
                    a_in_registers = any(re.fullmatch(r"R\d+", x) for x in args[1:i])
                    regs = range(int(reg.group(2)) + (2 if a_in_registers else 0), int(reg.group(2)) + 4)
                elif reg.group(1) == "desc":
                    regs = range(int(reg.group(2)), int(reg.group(2)) + 2)
                else:
                    n = int(reg.group(3))
                    regs = range(n, n + (2 if pair_op and re.fullmatch(r"-?UR\d+(\.reuse)?", arg) else 1))
                found += [(line.strip(), f"UR{r}") for r in regs if f"UR{r}" not in written]
        if dst:
            n = int(dst[2:])
            written.update(f"UR{r}" for r in range(n, n + (2 if pair_op or "WIDE" in op else 1)))
    return found


def mma_shape(opcode):
    """(M, N, K, "tf32" or "16-bit") of an HGMMA or HMMA opcode; a ValueError for a shape not known here."""
    operands = "tf32" if ".TF32" in opcode else "16-bit"
    wgmma = _HGMMA_SHAPE.match(opcode)
    if wgmma:
        return (*map(int, wgmma.groups()), operands)
    for prefix, shape in _HMMA_SHAPE.items():
        if opcode.startswith(prefix + "."):
            return (*shape, operands)
    raise ValueError(f"an MMA opcode whose shape this report does not know: {opcode}")


def mma_work(loop, warps):
    """The MMA multiply-adds of one step (all warps), {"tf32" or "16-bit": count}."""
    work = Counter()
    for op in loop:
        if op.startswith(("HGMMA", "HMMA")):
            m, n, k, operands = mma_shape(op)
            # One wgmma is one warpgroup's (its 4 warps each issue it); one mma.sync is one warp's.
            work[operands] += m * n * k * (warps // 4 if op.startswith("HGMMA") else warps)
    return work


def pipe_cycles(loop, warps):
    """The time loop's lower bounds in cycles per step (module docstring): issue, MUFU and tensor."""
    per_smsp = math.ceil(warps / 4)
    mufu = sum(op.startswith("MUFU") for op in loop)
    tensor = sum(fma / TENSOR_FMA_PER_CYCLE[operands] for operands, fma in mma_work(loop, warps).items())
    return {"issue": len(loop) * per_smsp, "mufu": mufu * per_smsp * MUFU_CYCLES_PER_WARP_INSTRUCTION,
            "tensor": round(tensor)}


def resource_usage(kernel):
    """(registers, spill store bytes) per thread, from ptxas -v on the kernel's PTX."""
    from triton.backends.nvidia import compiler as nvidia
    ptxas = nvidia.get_ptxas(TARGET.arch).path if hasattr(nvidia, "get_ptxas") else \
        triton.knobs.nvidia.ptxas.path
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(kernel.asm["ptx"])
        out = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", path, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True, check=True).stderr
    regs = int(re.search(r"Used (\d+) registers", out).group(1))
    spills = int(re.search(r"(\d+) bytes spill stores", out).group(1))
    return regs, spills


def report_row(config, shape, dtype_name, mode, allow_tf32, auto, layer=None, with_lengths=False):
    """One row. layer: None for rnn_linear, else (cell, direction, store_out) for a recurrence kernel."""
    from fused_rnn.kernels import rnn_linear as kernels

    dtype = DTYPES[dtype_name]
    allow = DEFAULT_ALLOW_TF32 if allow_tf32 is None else allow_tf32
    if layer is None:
        B, T, I, H, O = shape
        (name, kernel, kwargs), = compile_launches(mode, shape, dtype, allow, with_lengths)
        block_h = kernels.block(H) if mode == "backward" else \
            kernels.forward_block_h(H, kernels.precision(dtype, allow, interpreted=False))
        estimate = kernels.smem_bytes(dtype, kernels.block(I), block_h, kernels.block(O), allow,
                                      store_hs=mode == "train_forward", backward=mode == "backward")
        extra = {}
    else:
        cell, direction, store_out = layer
        B, T, I, H, *head_outputs = shape
        O = head_outputs[0] if head_outputs else None   # a fused head's outputs
        (name, kernel, kwargs), = compile_layer_launches(cell, mode, shape, dtype, allow, direction, store_out,
                                                         with_lengths)
        estimate = layer_kernels(cell).smem_bytes(dtype, kernels.block(H), allow,
                                                  store_saved=mode == "train_forward", backward=mode == "backward",
                                                  **({"block_o": kernels.block(O)} if O else {}))
        extra = {"cell": cell, "direction": direction, "store_out": store_out}
    sass = sass_of(kernel.asm["cubin"])
    loop = time_loop(sass)
    counts = Counter(op.split(".")[0] for op in loop)
    regs, spills = resource_usage(kernel)
    warps = kwargs["num_warps"]
    cycles = pipe_cycles(loop, warps)
    return {
        "config": config, "kernel": name, "B": B, "T": T, "I": I, "H": H, "O": O, **extra,
        "lengths": with_lengths,
        "dtype": dtype_name, "mode": mode, "precision": kernels.precision(dtype, allow),
        "num_warps": warps, "regs": regs, "spills": spills, "smem_bytes": kernel.metadata.shared,
        "smem_estimate": estimate,
        "loop_instructions_per_warp": len(loop),
        "issue_slots_per_smsp": cycles["issue"],
        "mufu_cycles": cycles["mufu"], "tensor_cycles": cycles["tensor"],
        "tensor_fma_per_step": sum(mma_work(loop, warps).values()),
        "step_floor_cycles": max(cycles.values()),
        "unwritten_uniform_reads": sorted({reg for _, reg in uniform_registers_read_before_written(sass)}),
        "counts": {op: counts.get(op, 0) for op in COUNTED} | {
            "other": sum(n for op, n in counts.items() if op not in COUNTED)},
        "auto": auto,
    }


def configurations():
    """(config, shape, dtype, mode, allow_tf32, auto): the named rows, then the padded-size grid up to auto's line."""
    from fused_rnn.kernels import rnn_linear as kernels

    def auto(dtype, I, H, O, allow, mode):
        allow = DEFAULT_ALLOW_TF32 if allow is None else allow
        return kernels.auto_takes(DTYPES[dtype], I, H, O, allow, needs_grad=mode != "forward")

    for config, (shape, dtype, mode, allow) in NAMED.items():
        B, T, I, H, O = shape
        yield config, shape, dtype, mode, allow, auto(dtype, I, H, O, allow, mode)
    for config in WITH_LENGTHS:
        if config in NAMED:
            shape, dtype, mode, allow = NAMED[config]
            B, T, I, H, O = shape
            yield f"{config}_lengths", shape, dtype, mode, allow, auto(dtype, I, H, O, allow, mode), None, True
    sizes = [s for s in (16, 32, 64, 128, 256) if s <= kernels.AUTO_MAX_BLOCK]
    precisions = (("fp32", True), ("fp32", False), ("bf16", None), ("fp16", None))
    for I, H, O in itertools.product(sizes, sizes, sizes):
        for (dtype, allow), mode in itertools.product(precisions, ("forward", "train_forward", "backward")):
            if mode == "backward" and I != sizes[0]:
                continue  # the backward sweep does not read x or W_ih: one row per (H, O)
            tag = f"{dtype}{'_ieee' if allow is False else ''}"
            yield (f"grid_I{I}_H{H}_O{O}_{tag}_{mode}", (16, 8, I, H, O), dtype, mode, allow,
                   auto(dtype, I, H, O, allow, mode))
    yield from layer_configurations(sizes, precisions)


def layer_configurations(sizes, precisions):
    """The recurrence kernels' named rows, then every (cell, H, precision, mode) "auto" can pick."""
    from fused_rnn.kernels import rnn_linear as kernels

    def auto(cell, dtype, H, allow, mode):
        allow = DEFAULT_ALLOW_TF32 if allow is None else allow
        return kernels.block(H) <= kernels.AUTO_MAX_BLOCK and layer_kernels(cell).unsupported_reason(
            cell, DTYPES[dtype], H, allow, needs_grad=mode != "forward") is None

    for config, (cell, shape, dtype, mode, allow, direction, store_out) in NAMED_LAYERS.items():
        yield config, shape, dtype, mode, allow, auto(cell, dtype, shape[3], allow, mode), (cell, direction, store_out)
    for config in WITH_LENGTHS:
        if config in NAMED_LAYERS:
            cell, shape, dtype, mode, allow, direction, store_out = NAMED_LAYERS[config]
            yield (f"{config}_lengths", shape, dtype, mode, allow, auto(cell, dtype, shape[3], allow, mode),
                   (cell, direction, store_out), True)
    for cell in ("rnn_tanh", "gru", "lstm"):
        for H in sizes:
            for (dtype, allow), mode in itertools.product(precisions, ("forward", "train_forward", "backward")):
                if not auto(cell, dtype, H, allow, mode):
                    continue   # rows are for what auto can pick; the refusals are tested against smem_bytes
                tag = f"{dtype}{'_ieee' if allow is False else ''}"
                yield (f"grid_{cell}_H{H}_{tag}_{mode}", (16, 8, 16, H), dtype, mode, allow, True,
                       (cell, "forward", True))


def _row_worker(args):
    _install_recorder()
    return report_row(*args)


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def kernel_source_sha256():
    """Ties a report to the kernel sources it measured, fused_rnn/kernels/*.py (tests check it is current)."""
    digest = hashlib.sha256()
    for path in KERNEL_SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", nargs="*", help="configuration names (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--print", action="store_true", help="print the named rows as a table")
    parser.add_argument("--readme", action="store_true",
                        help="only rewrite README.md's static table from the committed report, compiling nothing")
    args = parser.parse_args(argv)
    if args.readme:
        write_readme_table()
        return None
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("static_report.py compiles kernels; run it without TRITON_INTERPRET=1")

    work = [c for c in configurations() if not args.only or c[0] in args.only]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(_row_worker, work))
    report = {"target": "sm_90a", "triton": triton.__version__, "torch": torch.__version__,
              "commit": git_commit(), "kernel_source_sha256": kernel_source_sha256(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    major_minor = ".".join(triton.__version__.split(".")[:2])
    path = args.out / f"static_sm90a_triton{major_minor}.json"
    if args.only:
        path = args.out / f"static_sm90a_triton{major_minor}_partial.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path} ({len(rows)} rows)")
    if args.print or args.only:
        print(table([r for r in rows if not r["config"].startswith("grid_")] or rows))
    return report


README = ROOT / "README.md"
COMMITTED = ROOT / "benchmarks" / "results" / "static_sm90a_triton3.6.json"
TABLE_BEGIN, TABLE_END = "<!-- static-table:begin -->", "<!-- static-table:end -->"


def readme_table(report):
    """The README's table: the named rows of a report, with where it came from."""
    named = [r for r in report["rows"] if not r["config"].startswith("grid_")]
    auto = [r for r in report["rows"] if r["auto"]]
    return "\n".join([
        f"Generated by `benchmarks/static_report.py --readme` from `{COMMITTED.relative_to(ROOT)}` "
        f"(triton {report['triton']}, sm_90a, commit `{(report['commit'] or 'unknown')[:10]}`). "
        f"Per time step: issue slots per SM sub-partition, and the cycles the special-function (MUFU) "
        f"and tensor pipes need at their peak rates; the step floor is the largest of the three "
        f"(module docstring of the script). `ieee` rows are `allow_tf32=False`.",
        "",
        table(named),
        "",
        f"All {len(auto)} configurations `auto` can pick in the report: at most "
        f"{max(r['smem_bytes'] for r in auto)} B of shared memory (limit 232448); "
        f"{max(r['spills'] for r in auto if not padded(r))} B of spills at power-of-two sizes, up to "
        f"{max(r['spills'] for r in auto if padded(r))} B where H is padded (the seed's and the `padded_*` rows). "
        f"{bounds(auto)}",
    ])


def bounds(rows):
    """Which floor bounds how many rows: issue slots, or a pipe's cycles above them."""
    pipe = [r for r in rows if max(r["mufu_cycles"], r["tensor_cycles"]) > r["issue_slots_per_smsp"]]
    mufu = sum(r["mufu_cycles"] >= r["tensor_cycles"] for r in pipe)
    return (f"Their step floor is the issue slots in {len(rows) - len(pipe)}, the tensor pipe's cycles in "
            f"{len(pipe) - mufu} and the MUFU pipe's in {mufu}.")


def padded(row):
    """Whether the row's hidden size is padded to its block (MASK_H in the kernels)."""
    return row["H"] & (row["H"] - 1) != 0 or row["H"] < 16


def write_readme_table():
    report = json.loads(COMMITTED.read_text())
    text = README.read_text()
    start, end = text.index(TABLE_BEGIN) + len(TABLE_BEGIN), text.index(TABLE_END)
    README.write_text(text[:start] + "\n" + readme_table(report) + "\n" + text[end:])


def table(rows):
    lines = ["| config | prec | warps | regs | spills | smem B | loop instr./warp | issue slots/SMSP | "
             "MUFU cycles | tensor cycles | step floor | HGMMA | HMMA | FFMA | MUFU | LDS | LDSM | STS | BAR |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["counts"]
        lines.append(f"| {r['config']} | {r['precision']} | {r['num_warps']} | {r['regs']} | {r['spills']} | "
                     f"{r['smem_bytes']} | {r['loop_instructions_per_warp']} | {r['issue_slots_per_smsp']} | "
                     f"{r['mufu_cycles']} | {r['tensor_cycles']} | {r['step_floor_cycles']} | "
                     f"{c['HGMMA']} | {c['HMMA']} | {c['FFMA']} | {c['MUFU']} | {c['LDS']} | {c['LDSM']} | "
                     f"{c['STS']} | {c['BAR']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
