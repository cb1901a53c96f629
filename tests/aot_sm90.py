"""Compile every kernel configuration the launchers choose for Hopper (sm_90a), without a GPU.

    python tests/aot_sm90.py            # prints registers and spills per configuration

The Triton interpreter accepts kernels a GPU compiler rejects (tl.dot sizes,
layouts, constexpr misuse). Triton compiles ahead of time for a named target
with no GPU present, so this script runs each launcher on small CPU tensors
with the kernels swapped for recorders, then compiles exactly what each launch
would have launched, and reads ptxas's register and spill counts for it.
It must run without TRITON_INTERPRET=1 (interpreted kernels cannot be compiled).
"""

import itertools
import os
import re
import subprocess
import sys
import tempfile

import torch

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("aot_sm90.py compiles kernels; run it without TRITON_INTERPRET=1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from fused_rnn.kernels import rnn_linear as kernels  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
PTR_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.int64: "*i64"}


class Recorder:
    """Stands in for a JITFunction: ``kernel[grid](*args, **kwargs)`` records the launch."""

    def __init__(self, fn):
        self.fn = fn
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((args, kwargs))


def compile_launch(fn, args, kwargs):
    """Compile one recorded launch of JITFunction ``fn`` for TARGET; return its PTX."""
    values = dict(zip(fn.arg_names, args), **{k: v for k, v in kwargs.items() if k in fn.arg_names})
    options = {k: v for k, v in kwargs.items() if k not in fn.arg_names}
    signature, constexprs = {}, {}
    for param in fn.params:
        value = values[param.name]
        if param.is_constexpr or value is None:
            signature[param.name], constexprs[param.name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[param.name] = PTR_TYPES[value.dtype]
        else:
            signature[param.name] = "i64" if abs(value) >= 2**31 else "i32"
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=TARGET, options=options).asm["ptx"]


def ptxas_path():
    """The ptxas triton itself uses for sm_90 (triton 3.9 bundles two; the older one rejects its PTX)."""
    from triton.backends.nvidia import compiler as nvidia
    if hasattr(nvidia, "get_ptxas"):
        return nvidia.get_ptxas(TARGET.arch).path
    return triton.knobs.nvidia.ptxas.path


def ptxas_usage(ptx):
    """(registers, spill store bytes) per thread, from ptxas -v."""
    ptxas = ptxas_path()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", path, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True, check=True).stderr
    regs = int(re.search(r"Used (\d+) registers", out).group(1))
    spills = int(re.search(r"(\d+) bytes spill stores", out).group(1))
    return regs, spills


def launches():
    """Yield (label, kernel, args, kwargs) for the configurations worth compiling."""
    fwd, bwd = Recorder(kernels._rnn_linear_fwd_kernel), Recorder(kernels._rnn_linear_bwd_kernel)
    kernels._rnn_linear_fwd_kernel, kernels._rnn_linear_bwd_kernel = fwd, bwd
    shapes = [(10, 20, 1), (3, 70, 5), (64, 128, 10), (32, 64, 1), (128, 128, 128), (128, 128, 64), (256, 128, 10), (100, 128, 256),
              (256, 256, 10), (1, 256, 1)]
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    B, T = 3, 4
    for (I, H, O), dtype in itertools.product(shapes, dtypes):
        w = [torch.zeros(s, dtype=dtype) for s in ((H, I), (H, H), (H,), (H,), (O, H), (O,))]
        x = torch.zeros(B, T, I, dtype=dtype)
        h0 = torch.zeros(B, H, dtype=dtype)
        lengths = torch.ones(B, dtype=torch.int64)
        variants = [dict(), dict(h0=h0, lengths=lengths, relu=True, store_hn=True, store_hs=True)]
        if dtype == torch.float32:
            variants.append(dict(allow_tf32=True))
        for v in variants:
            fwd.launches.clear()
            kernels.rnn_linear_fwd(x, *w, v.get("h0"), v.get("lengths"), relu=v.get("relu", False),
                                   allow_tf32=v.get("allow_tf32", False), store_hn=v.get("store_hn", False),
                                   store_hs=v.get("store_hs", False))
            label = f"fwd I={I} H={H} O={O} {str(dtype)[6:]} {sorted(v) or ['plain']}"
            yield label, fwd.fn, *fwd.launches[0]
        bwd.launches.clear()
        hs = torch.zeros(B, T, H)
        kernels.rnn_linear_bwd_sweep(hs, w[1], w[4], torch.zeros(B, O, dtype=dtype), h0, lengths)
        yield f"bwd I={I} H={H} O={O} {str(dtype)[6:]}", bwd.fn, *bwd.launches[0]


def main():
    failures = 0
    for label, fn, args, kwargs in launches():
        try:
            regs, spills = ptxas_usage(compile_launch(fn, args, kwargs))
        except Exception as e:  # report every configuration, then fail
            failures += 1
            print(f"FAILED  {label}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        hoist = kwargs["HOIST_W"]
        print(f"ok  {label:<72} warps={kwargs['num_warps']:<2} hoist={hoist!s:<5} regs={regs:<3} "
              f"spill={spills}B")
    if failures:
        sys.exit(f"{failures} configuration(s) failed to compile for sm_90a")
    print(f"all configurations compile for sm_90a (triton {triton.__version__})")


if __name__ == "__main__":
    main()
