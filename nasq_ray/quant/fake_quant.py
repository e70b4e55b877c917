"""Straight-through-estimator (STE) fake quantizers, written by hand.

The forward pass matches ``torch.fake_quantize_per_tensor_affine`` and
``torch.fake_quantize_per_channel_affine`` bit for bit (same rounding: ``round_half_even(x * (1 /
scale)) + zero_point``, then clamp, then dequantize). The backward pass is the straight-through
estimator with the clipping mask: the gradient passes unchanged where the rounded value lies inside
``[qmin, qmax]`` and is zero where it was clipped.

Conventions: ``bits >= FLOAT_BITS`` (32) means float, i.e. no quantizer at all.
"""

from __future__ import annotations

import torch

FLOAT_BITS = 32
MAX_INT_BITS = 16
_EPS = 1e-8


def is_float(bits: int) -> bool:
    """32 bits means a float layer: nothing is quantized."""
    return bits >= FLOAT_BITS


def signed_range(bits: int) -> tuple[int, int]:
    """Integer range of a symmetric signed quantizer, restricted to be symmetric around 0.

    ``b`` bits hold ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (for example [-7, 7] at 4 bits), as in
    TensorRT and torchao's symmetric weight quantization. One bit is binary: {-1, +1}.
    """
    if bits == 1:
        return -1, 1
    q = 2 ** (bits - 1) - 1
    return -q, q


def unsigned_range(bits: int) -> tuple[int, int]:
    """Integer range of an affine (asymmetric) quantizer: ``[0, 2^b - 1]``."""
    return 0, 2**bits - 1


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):  # noqa: D401 - autograd API
        q = torch.round(x * (1.0 / scale)) + zero_point
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return (q.clamp(qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad_out):
        (inside,) = ctx.saved_tensors
        return grad_out * inside, None, None, None, None


class _BinarySTE(torch.autograd.Function):
    """One-bit weights: ``sign(w) * scale`` (XNOR-Net); the gradient passes where ``|w| <= 1`` (BinaryConnect)."""

    @staticmethod
    def forward(ctx, w, scale):
        ctx.save_for_backward(w)
        return torch.where(w >= 0, scale, -scale)

    @staticmethod
    def backward(ctx, grad_out):
        (w,) = ctx.saved_tensors
        return grad_out * (w.abs() <= 1.0), None


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, qmin: int, qmax: int) -> torch.Tensor:
    """Quantize-dequantize ``x`` with a straight-through gradient.

    ``scale`` and ``zero_point`` broadcast against ``x`` (a scalar for per-tensor, shape ``(C, 1, ...)``
    for per-channel along dimension 0).
    """
    return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax)


def weight_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel scale, shaped to broadcast against ``w``."""
    dims = tuple(range(1, w.dim()))
    if bits == 1:
        s = w.detach().abs().mean(dim=dims, keepdim=True)
    else:
        s = w.detach().abs().amax(dim=dims, keepdim=True) / signed_range(bits)[1]
    return s.clamp_min(_EPS)


def fake_quant_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel weight fake-quant (zero point 0)."""
    scale = weight_scale(w, bits)
    if bits == 1:
        return _BinarySTE.apply(w, scale)
    qmin, qmax = signed_range(bits)
    return fake_quant(w, scale, 0, qmin, qmax)


def affine_params(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point of an affine quantizer for the range ``[lo, hi]``.

    The range is widened to hold 0, so that zero (padding, ReLU's output) is exact. After a ReLU
    ``lo == 0`` and the zero point is 0: the quantizer is unsigned.
    """
    qmin, qmax = unsigned_range(bits)
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = ((hi - lo) / float(qmax - qmin)).clamp_min(_EPS)
    zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zero_point
