"""Quantization options as data: bit-widths per layer, the quantizer option table, and the
:class:`QuantConfig` that ``quantize_`` reads (no torch here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ..errors import SearchSpaceError
from ..cost import FLOAT_BITS

MAX_INT_BITS = 16


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
    straight-through estimator; 32 leaves them float. ``merge_bits`` quantizes the tensors that meet
    at a merge (both inputs of a residual or parallel sum, of a concatenation) and the input of the
    head's average pooling, as an integer runtime holds them; 32 (the default) leaves them float.
    """

    layers: Mapping[str, LayerBits] = field(default_factory=dict)
    logit_bits: int = FLOAT_BITS
    merge_bits: int = FLOAT_BITS
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
        check_bits("merge_bits", self.merge_bits)
        for name, allowed in QUANT_OPTIONS.items():
            if getattr(self, name) not in allowed:
                raise SearchSpaceError(f"quant.{name}: unknown name '{getattr(self, name)}'; allowed: "
                                       f"{', '.join(allowed)}")
        if not isinstance(self.layers, Mapping):
            raise SearchSpaceError(f"layers: expected a mapping of layer paths to LayerBits, such as "
                                   f"{{'head.out': LayerBits(4, 8)}}, got {type(self.layers).__name__}")
        for path, bits in self.layers.items():
            if not isinstance(bits, LayerBits):
                raise SearchSpaceError(f"layers[{path}]: expected LayerBits, got {type(bits).__name__}")
