"""``python -m fused_rnn``: the seed notebook's demo, run through fused_rnn.SimpleRNN.

Prints a short summary: the output's shape and first values, which backend ran
and why, the largest difference to the seed model's own forward on the same
weights, and a parameter summary (661 in all). On a GPU the fused Triton
kernel runs; on CPU the stock nn.RNN path does, so both sides of the
comparison are the same stock math and the summary says so.
"""

import torch

from fused_rnn import SimpleRNN
from fused_rnn.backends import RnnLinearRequest, triton

INPUT_SIZE, HIDDEN_SIZE, OUTPUT_SIZE, SEQ_LENGTH, BATCH = 10, 20, 1, 5, 32
SHOWN_VALUES = 4


def seed_forward(model, x):
    """The seed notebook's SimpleRNN.forward (tests/seed_model.py), on the model's own rnn and fc."""
    h0 = torch.zeros(1, x.size(0), model.hidden_size).to(x.device)
    out, _ = model.rnn(x, h0)
    return model.fc(out[:, -1, :])


def backend_line(model, x):
    """Which backend forward runs for x, and why."""
    backend = model.backend_for(x)
    if backend == "triton":
        return f"backend: fused Triton kernel on {torch.cuda.get_device_name(x.device)}"
    if x.device.type != "cuda":
        why = 'backend="auto" runs the fused kernel on CUDA tensors only, and there is no GPU here'
    else:
        request = RnnLinearRequest.of(x, model.hidden_size, model.fc.out_features, allow_tf32=model.allow_tf32)
        why = triton.unsupported_reason(request, auto=True)
    return f"backend: stock nn.RNN + nn.Linear on {x.device.type} ({why})"


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
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Compare like with like: cuDNN's RNN would otherwise multiply in TF32 (~1e-3).
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = SimpleRNN(INPUT_SIZE, HIDDEN_SIZE, OUTPUT_SIZE).to(device)
    x = torch.randn((BATCH, SEQ_LENGTH, INPUT_SIZE), device=device)

    with torch.no_grad():
        output = model(x)
        seed = seed_forward(model, x)
    ran_stock = model.backend_for(x) == "torch"

    print(f"SimpleRNN({INPUT_SIZE}, {HIDDEN_SIZE}, {OUTPUT_SIZE}) on x = randn({BATCH}, {SEQ_LENGTH}, "
          f"{INPUT_SIZE}), as in the seed notebook")
    print(f"output: {output.shape}; first {SHOWN_VALUES} values "
          + ", ".join(f"{v:.4f}" for v in output[:SHOWN_VALUES, 0].tolist()))
    print(backend_line(model, x))
    print(f"max |output - seed model's forward| = {(output - seed).abs().max().item():.3e}"
          + (" (both ran the same stock math)" if ran_stock else " (fused kernel against cuDNN, IEEE fp32)"))
    print(parameter_summary(model, x))


if __name__ == "__main__":
    main()
