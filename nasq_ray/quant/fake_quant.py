"""Straight-through-estimator (STE) fake quantizers, written by hand.

The forward pass matches ``torch.fake_quantize_per_tensor_affine`` and
``torch.fake_quantize_per_channel_affine`` bit for bit (same rounding: ``round_half_even(x * (1 /
scale)) + zero_point``, then clamp, then dequantize). The backward pass is the straight-through
estimator with the clipping mask: the gradient passes unchanged where the rounded value lies inside
``[qmin, qmax]`` and is zero where it was clipped.

Conventions: ``bits >= FLOAT_BITS`` (32) means float, i.e. no quantizer at all.
"""

from __future__ import annotations

import math

import numpy as np
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


def _f32(v: float) -> float:
    """``v`` rounded to float32, as the quantization kernels hold it."""
    return float(np.float32(v))


class _FakeQuantSTE(torch.autograd.Function):
    """Quantize-dequantize with the clipped straight-through gradient.

    Written for speed on small tensors: the zero point is folded into the clamp bounds
    (``clamp(round(x / s) + z, qmin, qmax) - z == clamp(round(x / s), qmin - z, qmax - z)``
    exactly, all values being small integers), bounds and per-tensor qparams are Python numbers
    (tensor bounds take a slow path in ``torch.clamp``), and the mask is kept as a float tensor
    (boolean kernels are several times slower on CPU).
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):  # noqa: D401 - autograd API
        if isinstance(scale, torch.Tensor):
            inv = 1.0 / scale
        else:
            scale = _f32(scale)
            inv = float(np.float32(1.0) / np.float32(scale))  # torch's kernels: 1.0f / scale
        if isinstance(zero_point, torch.Tensor):
            lo, hi = qmin - zero_point, qmax - zero_point
        else:
            lo, hi = float(qmin - zero_point), float(qmax - zero_point)
        rounded = (x * inv).round_()
        clamped = torch.clamp(rounded, lo, hi)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(rounded.eq_(clamped))  # 1.0 where nothing was clipped
        return clamped.mul_(scale)

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

    ``scale`` and ``zero_point`` are numbers (per tensor) or tensors that broadcast against ``x``
    (shape ``(C, 1, ...)`` for per-channel along dimension 0).
    """
    return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax)


def weight_scale(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Symmetric max-abs scale, one per output channel (or one for the tensor), shaped to broadcast
    against ``w``."""
    dims = tuple(range(1 if per_channel else 0, w.dim()))
    w = w.detach()
    if bits == 1:
        s = w.abs().mean(dim=dims, keepdim=True)
    else:
        s = torch.linalg.vector_norm(w, ord=float("inf"), dim=dims, keepdim=True).div_(signed_range(bits)[1])
    return s.clamp_min_(_EPS)


class _MaxAbsWeightSTE(torch.autograd.Function):
    """Weight fake-quant with the max-abs scale. That scale never clips (``|w| / s <= qmax``), so
    the clipped straight-through estimator is the identity here: no mask is computed or kept."""

    @staticmethod
    def forward(ctx, w, scale, qmax: int):
        return (w * (1.0 / scale)).round_().clamp_(-qmax, qmax).mul_(scale)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None, None


def fake_quant_weight(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Symmetric weight fake-quant (zero point 0, max-abs scale per output channel or per tensor)."""
    scale = weight_scale(w, bits, per_channel)
    if bits == 1:
        return _BinarySTE.apply(w, scale)
    return _MaxAbsWeightSTE.apply(w, scale, signed_range(bits)[1])


def affine_qparams(lo: float, hi: float, bits: int) -> tuple[float, float]:
    """Scale (float32) and integer zero point of an affine quantizer for the range ``[lo, hi]``.

    The range is widened to hold 0, so that zero (padding, ReLU's output) is exact. After a ReLU
    ``lo == 0`` and the zero point is 0: the quantizer is unsigned.
    """
    qmin, qmax = unsigned_range(bits)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo = hi = 0.0  # a non-finite input has no meaningful range; its output is non-finite anyway
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(_f32((hi - lo) / (qmax - qmin)), _EPS)
    zero_point = float(min(max(qmin - round(lo / scale), qmin), qmax))
    return scale, zero_point


def symmetric_qparams(lo: float, hi: float, bits: int) -> tuple[float, float, int, int]:
    """Scale, zero point (0) and grid of a symmetric activation quantizer for ``[lo, hi]``: the
    unsigned grid ``[0, 2^b - 1]`` when the range holds no negative value (after a ReLU), else the
    signed ``[-(2^(b-1) - 1), 2^(b-1) - 1]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo = hi = 0.0
    qmin, qmax = unsigned_range(bits) if lo >= 0 else signed_range(bits)
    scale = max(_f32(max(-lo, hi, 0.0) / qmax), _EPS)
    return scale, 0.0, qmin, qmax


def act_qparams(lo: float, hi: float, bits: int, scheme: str = "affine") -> tuple[float, float, int, int]:
    """Scale, zero point and integer grid ``(qmin, qmax)`` of an activation range ``[lo, hi]``."""
    if scheme == "symmetric":
        return symmetric_qparams(lo, hi, bits)
    return (*affine_qparams(lo, hi, bits), *unsigned_range(bits))


def dynamic_qparams(x: torch.Tensor, bits: int, scheme: str = "affine"):
    """Per-sample (first dimension) scale, zero point and grid bounds of ``x``'s own range, as tensors
    shaped ``(N, 1, ...)``: the same arithmetic as ``act_qparams``, one row at a time."""
    dims = tuple(range(1, x.dim()))
    x = x.detach()
    lo = x.amin(dim=dims, keepdim=True).clamp(max=0.0)
    hi = x.amax(dim=dims, keepdim=True).clamp(min=0.0)
    bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
    lo, hi = lo.masked_fill(bad, 0.0), hi.masked_fill(bad, 0.0)
    if scheme == "symmetric":
        neg = lo < 0
        q = signed_range(bits)[1]
        qmax = torch.where(neg, float(q), float(2**bits - 1))
        qmin = torch.where(neg, -float(q), 0.0)
        scale = (torch.maximum(-lo, hi) / qmax).clamp_min(_EPS)
        return scale, torch.zeros_like(scale), qmin, qmax
    qmin, qmax = unsigned_range(bits)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(_EPS)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero_point, qmin, qmax
