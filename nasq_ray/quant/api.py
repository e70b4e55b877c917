"""``quantize_`` / ``dequantize_``: swap a model's Conv2d and Linear layers for fake-quant layers and back.
"""

from __future__ import annotations

from torch import nn
from ..errors import ConfigError, SearchSpaceError
from .fake_quant import is_float
from .modules import ActFakeQuant, QuantConv2d, QuantLinear
from .options import QuantConfig


_QUANT_CLS = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}
MERGE_QUANTS = ("merge_quant_a", "merge_quant_b", "pool_quant")  # placeholders quantized at merge_bits


def quantize_(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Swap the named Conv2d/Linear layers of ``model`` for fake-quant layers, in place.

    A layer at 32/32 bits stays a plain float layer. If ``model`` has a ``logit_quant`` attribute it
    is replaced by an activation quantizer at ``config.logit_bits``; its ``nn.Identity`` placeholders
    named in ``MERGE_QUANTS`` by quantizers at ``config.merge_bits`` (unless 32). Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"config: expected a QuantConfig, got {type(config).__name__}")
    modules = dict(model.named_modules())
    for path in config.layers:  # check every path before changing anything
        mod = modules.get(path)
        if type(mod) not in _QUANT_CLS:
            raise SearchSpaceError(f"quant layer '{path}': {_not_quantizable(mod)}")
    for path, bits in config.layers.items():
        if is_float(bits.w_bits) and is_float(bits.a_bits):
            continue
        mod = modules[path]
        new = _QUANT_CLS[type(mod)].from_float(mod, bits.w_bits, bits.a_bits, **config.options())
        _replace(model, path, new.train(mod.training))
    if hasattr(model, "logit_quant"):
        logit = nn.Identity() if is_float(config.logit_bits) else ActFakeQuant(
            config.logit_bits, scheme=config.a_scheme, dynamic=config.a_mode == "dynamic")
        model.logit_quant = logit.train(model.training)
    if not is_float(config.merge_bits):
        for path, mod in list(model.named_modules()):
            if path.rpartition(".")[2] in MERGE_QUANTS and isinstance(mod, nn.Identity):
                _replace(model, path, ActFakeQuant(config.merge_bits, scheme=config.a_scheme,
                                                   dynamic=config.a_mode == "dynamic").train(model.training))
    return model


def _not_quantizable(mod) -> str:
    if mod is None:
        return "the model has no layer by that name"
    if isinstance(mod, (QuantConv2d, QuantLinear)):
        return f"already a fake-quant layer ({type(mod).__name__})"
    base = next((c.__name__ for c in _QUANT_CLS if isinstance(mod, c)), None)
    if base:  # its own forward would be replaced by the fake-quant layer's
        return (f"a {type(mod).__name__}, a subclass of {base} whose forward may differ; allowed: plain nn.Conv2d "
                "and nn.Linear layers")
    return f"a {type(mod).__name__}; allowed: nn.Conv2d and nn.Linear layers"


def dequantize_(model: nn.Module) -> nn.Module:
    """Turn every fake-quant layer of ``model`` back into its float layer, in place."""
    for path, mod in list(model.named_modules()):
        if isinstance(mod, (QuantConv2d, QuantLinear)):
            _replace(model, path, mod.to_float())
    if hasattr(model, "logit_quant"):
        model.logit_quant = nn.Identity()
    for path, mod in list(model.named_modules()):
        if path.rpartition(".")[2] in MERGE_QUANTS and isinstance(mod, ActFakeQuant):
            _replace(model, path, nn.Identity())
    return model


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)
