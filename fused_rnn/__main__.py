"""``python -m fused_rnn``: the seed notebook's demo, run through fused_rnn.SimpleRNN.

On a GPU the fused Triton kernel runs; on CPU the stock nn.RNN path does. Either
way it prints the seed's output, which backend ran, the largest difference to
the stock path with the same weights, and a parameter summary (661 in all).
"""

import torch

from fused_rnn import SimpleRNN
from fused_rnn.reference import rnn_linear_stock

BACKEND_NAMES = {"triton": "fused Triton kernel", "torch": "stock nn.RNN + nn.Linear"}


def parameter_summary(model, x):
    """torchinfo's summary where installed (torchsummary reports 0 for nn.RNN), then per submodule."""
    lines = []
    try:
        import torchinfo
    except ImportError:
        lines.append("(pip install torchinfo for the full summary)")
    else:
        lines.append(str(torchinfo.summary(model, input_data=[x], verbose=0)))
    per_module = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    lines.append("Parameters: " + ", ".join(
        f"{name} ({type(m).__name__}) {per_module[name]}" for name, m in model.named_children())
        + f"; total {sum(per_module.values())}")
    return "\n".join(lines)


def main():
    input_size, hidden_size, output_size, seq_length = 10, 20, 1, 5
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Compare like with like: cuDNN's RNN would otherwise multiply in TF32 (~1e-3).
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = SimpleRNN(input_size, hidden_size, output_size).to(device)
    x = torch.randn((32, seq_length, input_size), device=device)

    with torch.no_grad():
        output = model(x)
        rnn, fc = model.rnn, model.fc
        stock, _ = rnn_linear_stock(x, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0,
                                    rnn.bias_hh_l0, fc.weight, fc.bias)

    print(output.shape)  # torch.Size([32, 1]): batch 32, output size 1
    print(output)
    print(f"backend: {BACKEND_NAMES[model.backend_for(x)]} on {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))
    print(f"max |fused - stock| = {(output - stock).abs().max().item():.3e}")
    print(parameter_summary(model, x))


if __name__ == "__main__":
    main()
