"""Bit-widths chosen from the value range: the smallest width whose quantization error is small enough.

Policy ``auto`` of a search space: before training, a trial runs its float model on a few training
batches, and for each layer picks the smallest candidate width at which the fake-quantized weights
(and, separately, the layer's input activations) keep a signal-to-quantization-noise ratio of at
least ``sqnr_db_min`` decibels; 32 (float) when no candidate does.

Why this follows the range: a uniform quantizer spreads ``2^b`` levels over the range it must
cover, so its noise is set by the range (max-abs, or max - min) while the signal is set by the bulk
of the values (their RMS). SQNR is about ``6.02 b + 4.77 - 20 log10(max / RMS)`` dB: values that
fill a narrow range evenly (max / RMS small, e.g. uniform weights) need few bits; a wide range with
most values near zero (a few outliers, max / RMS large) needs many.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..errors import NasqError
from .options import LayerBits, check_bits
from .fake_quant import FLOAT_BITS, act_qparams, fake_quant, fake_quant_weight, is_float

MAX_CALIBRATION_VALUES = 1 << 20  # per layer and batch: larger inputs are subsampled (evenly) for the SQNR


def sqnr_db(x: torch.Tensor, xq: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum(x^2) / sum((x - xq)^2))``.

    ``inf`` when ``xq`` equals ``x``; sums are taken in float64.
    """
    x, xq = x.detach().double(), xq.detach().double()
    noise = float((x - xq).square().sum())
    if noise == 0.0:
        return math.inf
    signal = float(x.square().sum())
    return 10.0 * math.log10(signal / noise) if signal > 0.0 else -math.inf


def _integer_widths(candidates: Iterable[int]) -> list[int]:
    """The integer (non-float) widths of ``candidates``, checked and ascending."""
    return sorted({check_bits("candidates", b) for b in candidates if not is_float(b)})


@torch.no_grad()
def weight_bits(w: torch.Tensor, candidates: Iterable[int], sqnr_db_min: float, per_channel: bool = True) -> int:
    """The smallest of ``candidates`` at which the symmetric max-abs fake-quant of ``w`` (one scale
    per output channel, or per tensor) keeps SQNR >= ``sqnr_db_min``; 32 (float) when none does."""
    for bits in _integer_widths(candidates):
        if sqnr_db(w, fake_quant_weight(w, bits, per_channel)) >= sqnr_db_min:
            return bits
    return FLOAT_BITS


@torch.no_grad()
def activation_bits(x: torch.Tensor, candidates: Iterable[int], sqnr_db_min: float, scheme: str = "affine",
                    value_range: tuple[float, float] | None = None) -> int:
    """The smallest of ``candidates`` at which per-tensor quantization of ``x`` over its observed
    range (``value_range``, else ``x``'s min and max) keeps SQNR >= ``sqnr_db_min``; 32 when none does.

    ``scheme`` is the activation grid: ``affine`` (a zero point, the default) or ``symmetric``.
    """
    lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
    for bits in _integer_widths(candidates):
        scale, zero_point, qmin, qmax = act_qparams(lo, hi, bits, scheme)
        if sqnr_db(x, fake_quant(x, scale, zero_point, qmin, qmax)) >= sqnr_db_min:
            return bits
    return FLOAT_BITS


class _InputRecorder:
    """Forward pre-hook keeping a layer's inputs: their exact min/max, and the values themselves
    (evenly subsampled where a batch holds more than ``MAX_CALIBRATION_VALUES``)."""

    def __init__(self):
        self.chunks: list[torch.Tensor] = []
        self.lo, self.hi = math.inf, -math.inf

    def __call__(self, mod, args):
        x = args[0].detach()
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        flat = x.flatten()
        step = max(1, math.ceil(flat.numel() / MAX_CALIBRATION_VALUES))
        self.chunks.append(flat[::step].clone())

    def values(self) -> torch.Tensor:
        return torch.cat(self.chunks)


@torch.no_grad()
def choose_bits(model: nn.Module, batches: Iterable[torch.Tensor], w_candidates: Sequence[int],
                a_candidates: Sequence[int], sqnr_db_min: float, layers: Iterable[str],
                per_channel: bool = True, scheme: str = "affine") -> dict[str, LayerBits]:
    """Bits per layer of a float ``model`` (before ``quantize_``), by path: each of ``layers`` (its
    Conv2d / Linear layers) gets the smallest weight and activation widths that keep SQNR >=
    ``sqnr_db_min`` (see :func:`weight_bits`, :func:`activation_bits`).

    The model runs on ``batches`` as the caller left it (in training mode BatchNorm normalizes by
    the batch, as it will in training, and updates its running statistics); forward pre-hooks keep
    each layer's inputs. ``per_channel`` and ``scheme`` match the trial's weight granularity and
    activation grid.
    """
    modules = dict(model.named_modules())
    layers = list(layers)
    for path in layers:
        if not isinstance(modules.get(path), (nn.Conv2d, nn.Linear)):
            raise NasqError(f"auto bits: the model has no Conv2d or Linear layer '{path}'")
    recorders = {path: _InputRecorder() for path in layers}
    hooks = [modules[path].register_forward_pre_hook(rec) for path, rec in recorders.items()]
    try:
        n = 0
        for x in batches:
            model(x)
            n += 1
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise NasqError("auto bits: no calibration batch was given")
    out = {}
    for path in layers:
        rec = recorders[path]
        if not rec.chunks:  # a layer the forward pass never reached keeps the float width
            out[path] = LayerBits(FLOAT_BITS, FLOAT_BITS)
            continue
        out[path] = LayerBits(
            weight_bits(modules[path].weight, w_candidates, sqnr_db_min, per_channel),
            activation_bits(rec.values(), a_candidates, sqnr_db_min, scheme, (rec.lo, rec.hi)),
        )
    return out


def bits_table(bits: Mapping[str, LayerBits], layers: Sequence[str]) -> torch.Tensor:
    """``bits`` of ``layers`` as an int tensor of shape ``(len(layers), 2)`` (w_bits, a_bits): the
    form a checkpoint keeps them in."""
    return torch.tensor([[bits[L].w_bits, bits[L].a_bits] for L in layers], dtype=torch.int64)


def bits_from_table(table: torch.Tensor, layers: Sequence[str]) -> dict[str, LayerBits]:
    """Inverse of :func:`bits_table`."""
    if tuple(table.shape) != (len(layers), 2):
        raise NasqError(f"auto bits: the saved table holds {tuple(table.shape)} values; this config has "
                        f"{len(layers)} layers with chosen bits (expected ({len(layers)}, 2))")
    return {L: LayerBits(int(w), int(a)) for L, (w, a) in zip(layers, table.tolist())}
