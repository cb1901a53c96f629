"""``convert``: swap every stock torch.nn RNN, GRU and LSTM inside a model for fused_rnn's, in place.

The replacement shares the stock module's Parameter objects (``is``, not
copies), so an optimizer built before the conversion keeps updating the
weights the model uses, and its training mode, device and dtype are those of
the stock module. A one-line speed-up for models we never see::

    model = fused_rnn.convert(model)
"""

import warnings

from torch import nn

from .rnn import GRU, LSTM, RNN, LAYER_BACKENDS

# Exact types: a subclass may override forward or add state, so it is left alone.
REPLACEMENTS = {nn.RNN: RNN, nn.GRU: GRU, nn.LSTM: LSTM}

# Hook tables a stock module may carry that the replacement would not run.
_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                "_load_state_dict_post_hooks")


def unconvertible_reason(module):
    """Why ``module`` (a stock nn.RNN, GRU or LSTM) keeps its class, or None if it can be converted.

    The fused modules express every constructor configuration (an LSTM's
    proj_size runs their stock path); what they cannot carry over is state the
    stock module was given afterwards: hooks (weight_norm, torchinfo), a weight
    replaced by a plain tensor, extra parameters, buffers or submodules, and
    instance attributes its class does not set (a ``forward`` replaced on the
    instance, as accelerate's add_hook_to_module does, with its ``_old_forward``).
    """
    hooks = [name for name in _HOOK_TABLES if getattr(module, name, None)]
    if hooks:
        return f"it has hooks ({', '.join(hooks)})"
    names = list(module._flat_weights_names)
    if list(module._parameters) != names:
        return f"its parameters {list(module._parameters)} are not its weights {names}"
    if module._buffers or module._modules:
        return "it has buffers or submodules"
    extra = sorted(set(vars(module)) - _stock_attributes(type(module)))
    if extra:
        return f"it has instance attributes its class does not set ({', '.join(extra)}): a replaced forward, a wrapper's state"
    return None


_STOCK_ATTRIBUTES = {}


def _stock_attributes(cls):
    """The instance attributes a freshly built ``cls`` (nn.RNN, GRU or LSTM) has, from a 1×1 module on meta."""
    if cls not in _STOCK_ATTRIBUTES:
        _STOCK_ATTRIBUTES[cls] = frozenset(vars(cls(1, 1, device="meta")))
    return _STOCK_ATTRIBUTES[cls]


def _replacement(module, backend, allow_tf32):
    """The fused module for a stock one, holding the same Parameter objects (built on meta: no copy, no RNG)."""
    cls = REPLACEMENTS[type(module)]
    options = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                   dropout=module.dropout, bidirectional=module.bidirectional, device="meta",
                   dtype=module.weight_ih_l0.dtype, backend=backend, allow_tf32=allow_tf32)
    if cls is RNN:
        options["nonlinearity"] = module.nonlinearity
    if cls is LSTM:
        options["proj_size"] = module.proj_size
    with warnings.catch_warnings():
        # The stock module's constructor already warned about this configuration (dropout with one layer).
        warnings.simplefilter("ignore", UserWarning)
        fused = cls(module.input_size, module.hidden_size, **options)
    for name in module._flat_weights_names:
        setattr(fused, name, module._parameters[name])
    if cls is RNN:
        # nn.RNN's forward takes its activation from mode, which code may have changed apart from
        # nonlinearity (the constructor sets both); both as they are, so the same activation runs.
        fused.mode, fused.nonlinearity = module.mode, module.nonlinearity
    fused.train(module.training)
    return fused


def convert(module, *, backend="auto", allow_tf32=None):
    """Replace every ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` inside ``module`` with fused_rnn's, in place.

    Recursive: children, children's children, containers (Sequential,
    ModuleList, ModuleDict). Only those exact classes are replaced (subclasses
    are left alone), and only where ``unconvertible_reason`` finds nothing; a
    module held at two places becomes one fused module held at both. The
    replacements share the stock modules' Parameter objects and have their
    training mode, device and dtype; ``backend`` and ``allow_tf32`` are the
    fused modules' (see :class:`fused_rnn.RNN`).

    Returns ``module``, converted in place; if ``module`` itself is a stock
    RNN, GRU or LSTM there is no parent to change, so its replacement is
    returned instead (the stock module is not modified; both then hold the
    same parameters).
    """
    if backend not in LAYER_BACKENDS:
        raise ValueError(f"backend must be one of {LAYER_BACKENDS}, got {backend!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert takes an nn.Module, got {type(module).__name__}")
    done = {}     # id(stock module) -> (the stock module, kept alive so its id stays its own; its replacement)

    def swap(m):
        if type(m) not in REPLACEMENTS or unconvertible_reason(m) is not None:
            return m
        if id(m) not in done:
            done[id(m)] = (m, _replacement(m, backend, allow_tf32))
        return done[id(m)][1]

    visited = set()

    def visit(parent):
        if id(parent) in visited:
            return
        visited.add(id(parent))
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            new = swap(child)
            if new is not child:
                parent._modules[name] = new
            else:
                visit(child)

    top = swap(module)
    if top is not module:
        return top
    visit(module)
    return module
