"""``QuantConfig`` (data only) and the one in-place verb ``quantize_``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from ..errors import SearchSpaceError
from .fake_quant import FLOAT_BITS, MAX_INT_BITS, is_float
from .modules import ActFakeQuant, QuantConv2d, QuantLinear

ALLOWED_BITS = "integers 1..16, or 32 (float)"


def check_bits(field_name: str, bits: object) -> int:
    """Return ``bits`` as int if it is a valid bit-width, else raise naming ``field_name``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not (1 <= bits <= MAX_INT_BITS or bits == FLOAT_BITS):
        raise SearchSpaceError(f"{field_name}: bit-width {bits!r} is not allowed; allowed: {ALLOWED_BITS}")
    return bits


@dataclass(frozen=True)
class LayerBits:
    """Bit-widths of one quantized layer: its weight and its input activation."""

    w_bits: int = 8
    a_bits: int = 8

    def __post_init__(self):
        check_bits("w_bits", self.w_bits)
        check_bits("a_bits", self.a_bits)


# The per-experiment quantizer options (searchable like any choice); the first name is the default.
QUANT_OPTIONS = {
    "w_quantizer": ("minmax", "lsq"),  # max-abs range | learned step (LSQ)
    "a_quantizer": ("ema", "lsq", "pact"),  # running min/max | learned step | learned clipping
    "w_granularity": ("channel", "tensor"),  # one weight scale per output channel | per layer
    "a_scheme": ("affine", "symmetric"),  # activation grid with a zero point | centred on 0
    "a_mode": ("static", "dynamic"),  # ranges frozen after training | computed per input at inference
}


@dataclass(frozen=True)
class QuantConfig:
    """Which layers (by module path) get which bit-widths, the bits of the logits, and the quantizer
    options of ``QUANT_OPTIONS`` (one value each for the whole network).

    ``logit_bits`` quantizes the values that enter the loss (the model's output) with a
    straight-through estimator; 32 leaves them float.
    """

    layers: Mapping[str, LayerBits] = field(default_factory=dict)
    logit_bits: int = FLOAT_BITS
    w_quantizer: str = "minmax"
    a_quantizer: str = "ema"
    w_granularity: str = "channel"
    a_scheme: str = "affine"
    a_mode: str = "static"

    def options(self) -> dict[str, str]:
        """The quantizer options by name (keyword arguments of the layers' ``from_float``)."""
        return {name: getattr(self, name) for name in QUANT_OPTIONS}

    def __post_init__(self):
        check_bits("logit_bits", self.logit_bits)
        for name, allowed in QUANT_OPTIONS.items():
            if getattr(self, name) not in allowed:
                raise SearchSpaceError(f"quant.{name}: unknown name '{getattr(self, name)}'; allowed: "
                                       f"{', '.join(allowed)}")
        for path, bits in self.layers.items():
            if not isinstance(bits, LayerBits):
                raise SearchSpaceError(f"layers[{path}]: expected LayerBits, got {type(bits).__name__}")


_QUANT_CLS = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}


def quantize_(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Swap the named Conv2d/Linear layers of ``model`` for fake-quant layers, in place.

    A layer at 32/32 bits stays a plain float layer. If ``model`` has a ``logit_quant`` attribute it
    is replaced by an activation quantizer at ``config.logit_bits``. Returns ``model``.
    """
    modules = dict(model.named_modules())
    for path in config.layers:  # check every path before changing anything
        if type(modules.get(path)) not in _QUANT_CLS:
            raise SearchSpaceError(f"quant layer '{path}': the model has no Conv2d or Linear layer by that name")
    for path, bits in config.layers.items():
        if is_float(bits.w_bits) and is_float(bits.a_bits):
            continue
        mod = modules[path]
        parent_path, _, attr = path.rpartition(".")
        parent = modules[parent_path] if parent_path else model
        new = _QUANT_CLS[type(mod)].from_float(mod, bits.w_bits, bits.a_bits, **config.options())
        setattr(parent, attr, new.train(mod.training))
    if hasattr(model, "logit_quant"):
        logit = nn.Identity() if is_float(config.logit_bits) else ActFakeQuant(
            config.logit_bits, scheme=config.a_scheme, dynamic=config.a_mode == "dynamic")
        model.logit_quant = logit.train(model.training)
    return model


def dequantize_(model: nn.Module) -> nn.Module:
    """Turn every fake-quant layer of ``model`` back into its float layer, in place."""
    for path, mod in list(model.named_modules()):
        if isinstance(mod, (QuantConv2d, QuantLinear)):
            parent_path, _, attr = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, attr, mod.to_float())
    if hasattr(model, "logit_quant"):
        model.logit_quant = nn.Identity()
    return model
