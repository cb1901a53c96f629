"""Train fused_rnn.SimpleRNN to output the sum of a sequence, through the fused kernels.

    python examples/train_sum.py [--steps 300]

On a GPU the compiled Triton forward and backward run; without one this script
switches on the Triton interpreter (slow but the same kernels), so the loss you
see falling is always the fused path's.
"""

import argparse
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before fused_rnn imports triton

from fused_rnn import SimpleRNN  # noqa: E402


def batch(B, T, device):
    x = torch.rand(B, T, 1, device=device) * 2 - 1
    return x, x.sum(dim=1)  # target: [B, 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=10)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = SimpleRNN(1, 32, 1, backend="triton").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(args.steps + 1):
        x, target = batch(64, args.seq_len, device)
        loss = torch.nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")

    x, target = batch(1000, args.seq_len, device)
    with torch.no_grad():
        test_loss = torch.nn.functional.mse_loss(model(x), target).item()
    print(f"held-out loss {test_loss:.4f} (predicting 0 gives {target.square().mean().item():.4f})")


if __name__ == "__main__":
    main()
