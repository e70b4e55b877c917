"""Straight-through-estimator (STE) fake quantizers, written by hand.

The forward pass matches ``torch.fake_quantize_per_tensor_affine`` and
``torch.fake_quantize_per_channel_affine`` bit for bit (same rounding: ``round_half_even(x * (1 /
scale)) + zero_point``, then clamp, then dequantize). The backward pass is the straight-through
estimator with the clipping mask: the gradient passes unchanged where the rounded value lies inside
``[qmin, qmax]`` and is zero where it was clipped.

Contiguous float32 CPU tensors are quantized by fused C kernels (``native``: one call instead of
3-8 torch operations, the same float32 arithmetic, identical results); other tensors, or a machine
without a C compiler, take torch operations. Quantized values are computed outside autograd and
attached to their inputs' graph by one node per layer (``attach_ste``).

Conventions: ``bits >= FLOAT_BITS`` (32) means float, i.e. no quantizer at all.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch

from . import native
from .options import FLOAT_BITS

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


_FLOAT32 = struct.Struct("f")


def _f32(v: float) -> float:
    """``v`` rounded to float32 (to nearest, ties to even), as the quantization kernels hold it."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(v))[0]
    except OverflowError:  # beyond float32's range: infinity, as numpy rounds it
        return float(np.float32(v))


def _round_scale(x: torch.Tensor, inv_scale, scale) -> torch.Tensor:
    """``round(x * inv_scale) * scale`` (no gradient)."""
    return (x.detach() * inv_scale).round_().mul_(scale)


def _clip_round_scale(x: torch.Tensor, inv_scale, scale, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``clamp(round(x * inv_scale), lo, hi) * scale`` and the float mask of unclipped values (no
    gradient); float scales: the fused kernel (``native``). Callers fold the zero point into the
    bounds: ``clamp(round(x / s) + z, qmin, qmax) - z == clamp(round(x / s), qmin - z, qmax - z)``
    exactly, all values being small integers.

    The torch path is written for speed on small tensors: bounds are Python numbers (tensor bounds
    take a slow path in ``torch.clamp``), scales are tensors (a Python number is wrapped into a
    tensor and converted on every operation), and the mask is a float tensor (boolean kernels are
    several times slower on CPU)."""
    if type(inv_scale) is float:
        return native.fake_quant(x, inv_scale, scale, lo, hi)
    rounded = (x.detach() * inv_scale).round_()
    out = torch.clamp(rounded, lo, hi)
    inside = rounded.eq_(out)  # 1.0 where nothing was clipped
    return out.mul_(scale), inside


def weight_maxabs_values(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Symmetric max-abs fake-quant values of a weight (no gradient).

    The max-abs scale never clips: ``|w| * (1 / s) <= qmax * (1 + 3 * 2^-24)`` rounds to at most
    ``qmax`` (and ``s`` only grows where it is clamped at ``1e-8``), so the clipped straight-through
    estimator is the identity and no clamp or mask is computed.
    """
    if native.usable(w):
        return native.weight_maxabs(w, signed_range(bits)[1], per_channel)
    scale = weight_scale(w, bits, per_channel)
    return _round_scale(w, scale.reciprocal(), scale)  # reciprocal == torch's 1.0f / scale


class _AttachSTE(torch.autograd.Function):
    """The straight-through node of every min/max quantizer here. Fake-quant values computed outside
    autograd, ``done = (xq, mask, wq)``, attached to the graph of their float inputs ``x`` and
    (unless None) ``w``: the gradient of ``x`` masked by ``mask`` (None: nothing was clipped, the
    identity) and that of ``w`` passed unchanged (max-abs weights cannot clip). One node for a
    layer's two operands: on small networks a node costs more than its arithmetic."""

    @staticmethod
    def forward(ctx, x, w, done):
        xq, mask, wq = done
        ctx.set_materialize_grads(False)
        ctx.masked = mask is not None and ctx.needs_input_grad[0]
        if ctx.masked:
            ctx.save_for_backward(mask)
        if not ctx.needs_input_grad[0]:
            ctx.mark_non_differentiable(xq)  # no input gradient computed for a layer reading the data
        if w is None:
            return xq
        if not ctx.needs_input_grad[1]:
            ctx.mark_non_differentiable(wq)
        return xq, wq

    @staticmethod
    def backward(ctx, grad_x, grad_w=None):
        if ctx.masked and grad_x is not None:
            grad_x = grad_x * ctx.saved_tensors[0]
        return grad_x, grad_w, None


def attach_ste(x: torch.Tensor, xq: torch.Tensor, mask: torch.Tensor | None, w: torch.Tensor | None = None,
               wq: torch.Tensor | None = None):
    """``xq`` (and ``wq``) with the straight-through gradients of ``x`` (masked by ``mask``) and ``w``."""
    return _AttachSTE.apply(x, w, (xq, mask, wq))


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


def fake_quant(x: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | float, qmin: int,
               qmax: int) -> torch.Tensor:
    """Quantize-dequantize ``x`` with a straight-through gradient.

    ``scale`` and ``zero_point`` are numbers (per tensor) or tensors that broadcast against ``x``
    (shape ``(C, 1, ...)`` for per-channel along dimension 0).
    """
    if isinstance(scale, torch.Tensor):
        inv = scale.reciprocal()  # torch's kernels: x * (1.0f / scale)
        if isinstance(zero_point, torch.Tensor):
            lo, hi = qmin - zero_point, qmax - zero_point
        else:
            lo, hi = float(qmin - zero_point), float(qmax - zero_point)
        return attach_ste(x, *_clip_round_scale(x, inv, scale, lo, hi))
    return StaticQuantPlan(scale, zero_point, qmin, qmax).apply(x)


class StaticQuantPlan:
    """A per-tensor quantizer's arguments, computed once per range: float32 ``scale`` and its
    inverse, clamp bounds with the zero point folded in, and the input interval that cannot be
    clipped (in which the quantizer skips the clamp and the mask)."""

    __slots__ = ("scale", "inv_scale", "lo", "hi", "safe_lo", "safe_hi", "_tensors")

    def __init__(self, scale: float, zero_point: float, qmin: int, qmax: int):
        self.scale = _f32(scale)
        # torch's kernels: 1.0f / scale (rounding the double quotient to float32 gives the same value)
        self.inv_scale = _f32(1.0 / self.scale)
        self.lo, self.hi = float(qmin - zero_point), float(qmax - zero_point)
        # round(v * inv) stays in [lo, hi] for v in [safe_lo, safe_hi]: a margin of 0.01 of a step
        # covers float32 rounding of the product (relative 2^-24, and |v * inv| <= 2^16 here)
        self.safe_lo, self.safe_hi = (self.lo - 0.49) / self.inv_scale, (self.hi + 0.49) / self.inv_scale
        self._tensors = None

    def scales(self, x: torch.Tensor) -> tuple:
        """``(inv_scale, scale)`` for quantizing ``x``: floats for the fused kernel, else float32 tensors."""
        if native.usable(x):
            return self.inv_scale, self.scale
        if self._tensors is None:
            self._tensors = (torch.tensor(self.inv_scale), torch.tensor(self.scale))
        return self._tensors

    def clips(self, batch_min: float, batch_max: float) -> bool:
        """Whether some value in ``[batch_min, batch_max]`` may be clipped."""
        return not (self.safe_lo <= batch_min and batch_max <= self.safe_hi)

    def quantize(self, x: torch.Tensor, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` quantized (no gradient) and the mask of unclipped values; ``clip=False`` (``x``
        cannot be clipped) skips the clamp and the mask (None)."""
        inv_scale, scale = self.scales(x)
        if clip or type(inv_scale) is float:  # (the fused kernel always clamps)
            out, inside = _clip_round_scale(x, inv_scale, scale, self.lo, self.hi)
            return out, (inside if clip else None)
        return _round_scale(x, inv_scale, scale), None

    def apply(self, x: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """``x`` fake-quantized with the straight-through gradient."""
        return attach_ste(x, *self.quantize(x, clip))


def weight_scale(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Symmetric max-abs scale, one per output channel (or one for the tensor), shaped to broadcast
    against ``w``."""
    dims = tuple(range(1 if per_channel else 0, w.dim()))
    w = w.detach().abs()
    if bits == 1:
        s = w.mean(dim=dims, keepdim=True)
    else:
        s = w.amax(dim=dims, keepdim=True).div_(_qmax_tensor(bits))
    return s.clamp_min_(_EPS)


_QMAX_TENSORS: dict[int, torch.Tensor] = {}


def _qmax_tensor(bits: int) -> torch.Tensor:
    """``signed_range(bits)[1]`` as a float32 tensor (dividing by a Python number converts it each time)."""
    t = _QMAX_TENSORS.get(bits)
    if t is None:
        t = _QMAX_TENSORS[bits] = torch.tensor(float(signed_range(bits)[1]))
    return t


def fake_quant_weight(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Symmetric weight fake-quant (zero point 0, max-abs scale per output channel or per tensor)."""
    if bits == 1:
        return _BinarySTE.apply(w, weight_scale(w, bits, per_channel))
    return attach_ste(w, weight_maxabs_values(w, bits, per_channel), None)  # cannot clip: identity gradient


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
