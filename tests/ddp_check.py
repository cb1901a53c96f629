"""DistributedDataParallel with 2 gloo processes on CPU vs one process on the same data.

    python tests/ddp_check.py BACKEND      # BACKEND: triton (set TRITON_INTERPRET=1) or torch

Each rank takes half the batch; DDP averages the two ranks' gradients, which
equals the gradient of the mean loss over the whole batch in one process.
Exits non-zero if any parameter's gradient differs by more than 1e-5.
"""

import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from fused_rnn import SimpleRNN

WORLD = 2


def data():
    torch.manual_seed(0)
    return torch.randn(8, 6, 4), torch.randn(8, 2)


def new_model(backend):
    torch.manual_seed(1)
    return SimpleRNN(4, 16, 2, backend=backend)


def gradients(model, x, target):
    torch.nn.functional.mse_loss(model(x), target).backward()
    return [p.grad for p in model.parameters()]


def rank_main(rank, backend, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, target = data()
        shard = slice(rank * len(x) // WORLD, (rank + 1) * len(x) // WORLD)
        grads = gradients(DistributedDataParallel(new_model(backend)), x[shard], target[shard])
        if rank == 0:
            torch.save(grads, out_file)
        # Both ranks reach here before either tears gloo down: a rank leaving
        # while the other still talks to it aborted the pair (SIGABRT) under load.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's and C++'s exit-time teardown: with the work done and gloo shut
    # down, a rank still aborted there under load ("terminate called without an active exception",
    # SIGABRT, seen twice in CI runs on 2 busy cores), from a thread destroyed while joinable.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main():
    backend = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "grads.pt")
        mp.spawn(rank_main, args=(backend, os.path.join(tmp, "init"), out_file), nprocs=WORLD)
        ddp = torch.load(out_file)
    single = gradients(new_model(backend), *data())
    worst = max((a - b).abs().max().item() for a, b in zip(ddp, single))
    print(f"backend={backend}: largest gradient difference DDP vs single process = {worst:.2e}")
    sys.exit(0 if worst <= 1e-5 else 1)


if __name__ == "__main__":
    main()
