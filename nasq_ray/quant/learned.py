"""Quantizers with learned ranges: LSQ (weights and activations) and PACT (activations).

* LSQ, "Learned Step Size Quantization" (Esser et al., ICLR 2020): the step ``s`` is a parameter;
  ``q = clamp(round(x / s), qmin, qmax) * s`` with a straight-through round, so ``s`` gets the
  gradient of the rounding error and of the clipping, scaled by ``g = 1 / sqrt(n * qmax)`` (``n``:
  the number of values one step serves). Initial step ``2 * mean(|x|) / sqrt(qmax)`` from the first
  batch (weights: per output channel).
* PACT, "Parameterized Clipping Activation" (Choi et al., 2018): a learned clipping level
  ``alpha``; ``y = clamp(x, 0, alpha)`` (``[-alpha, alpha]`` for inputs with negative values), then
  uniform quantization of ``[0, alpha]`` with a straight-through round. ``alpha`` starts at the
  first batch's largest magnitude and is learned with the rest of the network.

The integer grids are the ones of ``fake_quant``: symmetric signed ``[-(2^(b-1) - 1), 2^(b-1) - 1]``
for weights and signed activations, unsigned ``[0, 2^b - 1]`` for non-negative activations, so that
export stores the same integers. Ranges are decided on the first training batch (or the first
input seen) and stored in buffers, so a checkpoint restores them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .fake_quant import fake_quant_weight, is_float, signed_range, unsigned_range

_EPS = 1e-8


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g: float):
        ctx.g = g
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * ctx.g, None


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.round()

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` in the forward pass (exactly); its gradient multiplied by ``g`` in the backward pass."""
    return _GradScale.apply(x, g)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass (exactly, so export stores the same integers), identity backward."""
    return _RoundSTE.apply(x)


def lsq(x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int, g: float) -> torch.Tensor:
    s = grad_scale(step, g)
    return round_ste(torch.clamp(x / s, qmin, qmax)) * s


class LSQWeight(nn.Module):
    """Per-output-channel LSQ step for a weight of shape ``(out, ...)``."""

    def __init__(self, out_channels: int, weight_dims: int, bits: int, per_channel: bool = True):
        super().__init__()
        self.bits = int(bits)
        self.per_channel = per_channel
        self.step = nn.Parameter(torch.ones((out_channels if per_channel else 1,) + (1,) * (weight_dims - 1)))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"bits={self.bits}"

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if is_float(self.bits):
            return w
        if self.bits == 1:
            return fake_quant_weight(w, 1, self.per_channel)  # binary: sign * mean |w| (XNOR-Net)
        qmin, qmax = signed_range(self.bits)
        if not bool(self.initialized):
            with torch.no_grad():
                dims = tuple(range(1 if self.per_channel else 0, w.dim()))
                self.step.copy_((2 * w.abs().mean(dim=dims, keepdim=True) / math.sqrt(qmax)).clamp_min(_EPS))
                self.initialized.fill_(True)
        g = 1.0 / math.sqrt((w[0].numel() if self.per_channel else w.numel()) * qmax)
        return lsq(w, self.step.abs() + _EPS, qmin, qmax, g)

    def scale(self) -> torch.Tensor:
        """The step as export stores it (float32)."""
        return (self.step.detach().abs() + _EPS).float()


class _LearnedAct(nn.Module):
    """Shared part of the learned activation quantizers: signedness fixed on the first input."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = int(bits)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"bits={self.bits}"

    def grid(self) -> tuple[int, int]:
        return signed_range(self.bits) if bool(self.signed) else unsigned_range(self.bits)

    def _init(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_float(self.bits):
            return x
        if not bool(self.initialized):
            with torch.no_grad():
                self.signed.fill_(bool((x < 0).any()))
                self._init(x.detach())
                self.initialized.fill_(True)
        return self._quant(x)

    def _quant(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LSQAct(_LearnedAct):
    """Per-tensor LSQ step for an activation."""

    def __init__(self, bits: int):
        super().__init__(bits)
        self.step = nn.Parameter(torch.ones(()))

    def _init(self, x: torch.Tensor) -> None:
        qmax = self.grid()[1]
        self.step.copy_((2 * x.abs().mean() / math.sqrt(qmax)).clamp_min(_EPS))

    def _quant(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.grid()
        g = 1.0 / math.sqrt(max(x[0].numel(), 1) * qmax)
        return lsq(x, self.step.abs() + _EPS, qmin, qmax, g)

    def qparams(self) -> tuple[float, float]:
        """Scale and zero point (0: the grid is symmetric or starts at 0)."""
        return float(self.step.detach().abs() + _EPS), 0.0


class PACTAct(_LearnedAct):
    """PACT: learned clipping level ``alpha``, uniform levels on ``[0, alpha]`` (or ``[-alpha, alpha]``)."""

    def __init__(self, bits: int):
        super().__init__(bits)
        self.alpha = nn.Parameter(torch.ones(()))

    def _init(self, x: torch.Tensor) -> None:
        self.alpha.copy_(x.abs().max().clamp_min(_EPS))

    def _quant(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.abs() + _EPS
        lo = -alpha if bool(self.signed) else torch.zeros_like(alpha)
        y = torch.minimum(torch.maximum(x, lo), alpha)  # gradient to alpha where x is clipped
        qmax = self.grid()[1]
        scale = alpha / qmax
        return round_ste(y / scale) * scale

    def qparams(self) -> tuple[float, float]:
        return float(self.alpha.detach().abs() + _EPS) / self.grid()[1], 0.0
