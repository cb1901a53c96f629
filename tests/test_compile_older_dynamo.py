"""torch.compile as the GPU machines' torch (2.11) traces it, where that differs from CI's (2.13).

Found by tracing the CUDA path on fake CUDA tensors with torch 2.11
(/work/notes/fakecuda_repros/); each test here states the 2.11 behaviour it brings back on 2.13.
"""

from helpers import run_python

# torch <= 2.11's Dynamo traces into pad_packed_sequence; 2.13 skips it (pytorch/pytorch#162374).
# Traced, its _VF call meets a fake batch_sizes: "The tensor has a non-zero number of elements, but its
# data is not allocated yet" (TorchRuntimeError, not a graph break), so the compile fails, fullgraph or not.
INLINE_PAD_PACKED = """
import torch
import torch._dynamo.trace_rules as trace_rules
trace_rules.manual_torch_name_rule_map.pop("torch.nn.utils.rnn.pad_packed_sequence", None)
trace_rules.get_torch_obj_rule_map.cache_clear()
"""

PACKED_CALLS = INLINE_PAD_PACKED + """
import fused_rnn
from torch.nn.utils.rnn import pack_padded_sequence
torch.manual_seed(0)
hooked = fused_rnn.SimpleRNN(5, 20, 2, cell="lstm")
hooked.fc.register_forward_hook(lambda module, args, out: out * 2)     # the submodules' path: rnn(packed), fc
x = torch.randn(4, 7, 5)
packed = pack_padded_sequence(x, torch.tensor([3, 7, 1, 4]), batch_first=True, enforce_sorted=False)
for model in (fused_rnn.GRU(5, 20, num_layers=2, bidirectional=True, batch_first=True),
              fused_rnn.LSTM(5, 20, batch_first=True),
              fused_rnn.SimpleRNN(5, 20, 2, cell="rnn"),
              fused_rnn.SimpleRNN(5, 20, 2, cell="gru", num_layers=2, bidirectional=True),
              hooked):
    torch._dynamo.reset()
    got, want = torch.compile(model, backend="eager")(packed), model(packed)
    if isinstance(want, tuple):
        torch.testing.assert_close(got[0].data, want[0].data, atol=1e-6, rtol=1e-5)
        got, want = got[1], want[1]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    print(type(model).__name__, "ok")
"""


def test_compile_takes_a_packed_sequence_where_dynamo_traces_pad_packed_sequence():
    """A PackedSequence input compiled without fullgraph: unpacked outside the graph (a graph break), on
    torch 2.11's Dynamo too. Compared with the eager call (the stock path on CPU, exact to 1e-6)."""
    out = run_python("-c", PACKED_CALLS)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.count(" ok") == 5, out.stdout
