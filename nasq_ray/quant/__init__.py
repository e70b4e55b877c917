"""Fake quantization: STE quantizers, quantized layers and the ``quantize_`` verb."""

from .options import ALLOWED_BITS, LayerBits, QuantConfig, check_bits
from .api import dequantize_, quantize_
from .fake_quant import FLOAT_BITS, fake_quant, fake_quant_weight, is_float
from .modules import ActFakeQuant, QuantConv2d, QuantLinear

__all__ = [
    "ALLOWED_BITS", "FLOAT_BITS", "ActFakeQuant", "LayerBits", "QuantConfig", "QuantConv2d", "QuantLinear",
    "check_bits", "dequantize_", "fake_quant", "fake_quant_weight", "is_float", "quantize_",
]
