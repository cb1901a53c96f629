"""Test set-up: where the kernel runs, the gpu marker, and poisoned kernel outputs.

Without CUDA the Triton kernels run through the interpreter on CPU tensors; it
must be switched on before triton is imported, i.e. here, before any test
module imports fused_rnn's kernels. Helpers that are not fixtures are in
helpers.py (imported here too, for tests that take them from conftest).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fused_rnn.kernels import rnn_linear as kernels  # noqa: E402  (after TRITON_INTERPRET)
from helpers import DEVICE, ROOT, TOL, as_float64, make_params, run_python  # noqa: E402,F401  (re-exported)

# cuDNN's RNNs use TF32 by default (torch.backends.cudnn.allow_tf32 = True), ~1e-3
# relative error; the comparisons with the stock path need IEEE fp32 on both sides.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (runs the kernel compiled, not interpreted)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every buffer a kernel launch allocates starts as NaN, so an unwritten lane shows."""
    def nan_empty(*args, **kwargs):
        return torch.empty(*args, **kwargs).fill_(float("nan"))
    monkeypatch.setattr(kernels, "new_empty", nan_empty)


@pytest.fixture
def launched(monkeypatch):
    """The keyword arguments of every recurrence kernel launch (rnn_linear, elman, gru, lstm), none of them run."""
    from fused_rnn.kernels import elman, gru, lstm
    calls = []
    for module in (kernels, elman, gru, lstm):
        monkeypatch.setattr(module, "_launch", lambda kernel, grid, wrap, *args, **kw: calls.append(kw))
    return calls


@pytest.fixture
def layer_launches(monkeypatch):
    """The keyword arguments of every layer kernel launch (elman, gru, lstm: forward and backward), which still
    run. (Not rnn_linear's: its 3xTF32 weight split is a launch of its own.)"""
    from fused_rnn.kernels import elman, gru, lstm
    calls = []
    for module in (elman, gru, lstm):
        launch = module._launch

        def record(kernel, grid, wrap, *args, _launch=launch, **kw):
            calls.append(kw)
            return _launch(kernel, grid, wrap, *args, **kw)
        monkeypatch.setattr(module, "_launch", record)
    return calls


@pytest.fixture
def layer_backend_asks(monkeypatch):
    """(batch_size, steps) of every recurrence.select_layer_backend call, which still decides."""
    from fused_rnn import recurrence
    asked = []
    real = recurrence.select_layer_backend

    def select(*args, **kw):
        asked.append((kw.get("batch_size"), kw.get("steps")))
        return real(*args, **kw)

    monkeypatch.setattr(recurrence, "select_layer_backend", select)
    return asked


@pytest.fixture
def cudnn_available(monkeypatch):
    """cuDNN as on a GPU machine (this CPU build of torch has none)."""
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
