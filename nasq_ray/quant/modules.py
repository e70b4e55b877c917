"""Fake-quantized layers: ``QuantConv2d``, ``QuantLinear`` and the activation quantizer ``ActFakeQuant``.

A quantized layer quantizes its *input* activation (``a_bits``, affine per tensor) and its weight
(``w_bits``, symmetric per output channel), so that BitOPs = MACs x ``w_bits`` x ``a_bits`` describe
exactly what it computes. Layers convert both ways: ``from_float`` and ``to_float``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .learned import LSQAct, LSQWeight, PACTAct
from .options import QUANT_OPTIONS
from .fake_quant import (
    FLOAT_BITS,
    StaticQuantPlan,
    _f32,
    act_qparams,
    attach_ste,
    dynamic_qparams,
    fake_quant,
    fake_quant_weight,
    is_float,
    signed_range,
    weight_maxabs_values,
    weight_scale,
)


class ActFakeQuant(nn.Module):
    """Per-tensor activation fake-quant with a running (EMA) min/max range, or a dynamic one.

    ``scheme``: ``affine`` (a zero point; unsigned grid ``[0, 2^b - 1]``) or ``symmetric`` (zero
    point 0; unsigned grid for a range without negatives, signed otherwise).

    Static (default): in training the range follows an exponential moving average of each batch's
    min and max (the first batch sets it); in evaluation the range is frozen (before any training,
    evaluation uses each input's own range and records nothing). Dynamic: every sample is quantized
    with its own range, in training and at inference (nothing is frozen). ``bits >= 32`` makes it
    the identity.
    """

    def __init__(self, bits: int, momentum: float = 0.1, scheme: str = "affine", dynamic: bool = False):
        super().__init__()
        self.bits = int(bits)
        self.momentum = momentum
        self.scheme = scheme
        self.dynamic = bool(dynamic)
        self.register_buffer("running_min", torch.zeros(()))
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._range: tuple[float, float] | None = None
        self._plan: StaticQuantPlan | None = None

    def extra_repr(self) -> str:
        mode = ", dynamic" if self.dynamic else ""
        return f"bits={self.bits}, {self.scheme}{mode}"

    def _observe(self, x: torch.Tensor) -> tuple[float, float] | None:
        """Move the running range toward this batch's; returns the batch's (min, max), or None for a
        non-finite batch. (No torch.no_grad(): x is detached, and the context costs 20 us.)"""
        lo_t, hi_t = torch.aminmax(x.detach())
        batch = lo, hi = lo_t.item(), hi_t.item()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None  # a diverging batch must not poison the range; the loss check ends the trial
        if self._range is not None:
            m, (old_lo, old_hi) = self.momentum, self._range
            lo, hi = old_lo + m * (lo - old_lo), old_hi + m * (hi - old_hi)
        else:
            self.initialized.fill_(True)
        lo, hi = _f32(lo), _f32(hi)  # the buffers' precision
        self._buffers["running_min"].fill_(lo)
        self._buffers["running_max"].fill_(hi)
        self._set_range(lo, hi)
        return batch

    def _set_range(self, lo: float, hi: float) -> None:
        # Python copy of the buffers (reading a tensor per forward costs more than the quantization);
        # its quantizer is built when the torch path needs it (set through __dict__:
        # nn.Module.__setattr__ is slow)
        self.__dict__["_range"] = (lo, hi)
        self.__dict__["_plan"] = None

    def _current_plan(self) -> StaticQuantPlan:
        if self._plan is None:
            self.__dict__["_plan"] = StaticQuantPlan(*act_qparams(*self._range, self.bits, self.scheme))
        return self._plan

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.__dict__["_range"] = self.__dict__["_plan"] = None
        if bool(self.initialized):
            self._set_range(float(self.running_min), float(self.running_max))

    def qparams(self) -> tuple[float, float]:
        """Scale and zero point of the current (running) range."""
        return act_qparams(float(self.running_min), float(self.running_max), self.bits, self.scheme)[:2]

    def grid(self) -> tuple[int, int]:
        """Integer range ``(qmin, qmax)`` of the current (running) range."""
        return act_qparams(float(self.running_min), float(self.running_max), self.bits, self.scheme)[2:]

    def plan_for(self, x: torch.Tensor) -> tuple[StaticQuantPlan, bool]:
        """The static quantizer for ``x`` (observing it first in training) and whether it may clip
        ``x``. Never trained: ``x``'s own range, nothing recorded."""
        if self.training:
            batch = self._observe(x)
            if batch is not None:
                plan = self._current_plan()
                return plan, plan.clips(*batch)
        if self._range is None:
            lo, hi = torch.aminmax(x.detach())
            return StaticQuantPlan(*act_qparams(float(lo), float(hi), self.bits, self.scheme)), True
        return self._current_plan(), True

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` fake-quantized by the static quantizer (observing ``x`` first in training), without
        gradient, and the float mask of unclipped values (None when nothing was clipped)."""
        running_min = self._buffers["running_min"]
        if native.usable(x) and native.usable(running_min):
            mode = native.OBSERVE if self.training else native.FROZEN if self._range is not None else native.OWN_RANGE
            out, inside, seen = native.act_quant(x, running_min, self._buffers["running_max"], mode, self.momentum,
                                                 self._range is not None, self.bits, self.scheme == "symmetric")
            if seen is not None:
                if self._range is None:
                    self.initialized.fill_(True)
                self._set_range(*seen)
            return out, inside
        plan, clip = self.plan_for(x)
        return plan.quantize(x, clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits >= FLOAT_BITS:
            return x
        if self.dynamic:
            return fake_quant(x, *dynamic_qparams(x, self.bits, self.scheme))
        return attach_ste(x, *self.quantize(x))


class _QuantMixin:
    """Shared conversion logic of the quantized layers."""

    _float_cls: type[nn.Module]

    def _init_quant(self, w_bits: int, a_bits: int, **options) -> None:
        """Quantizers for ``w_bits`` / ``a_bits`` with ``options`` (names of ``QUANT_OPTIONS``;
        missing ones take their defaults)."""

        unknown = set(options) - set(QUANT_OPTIONS)
        if unknown:
            raise TypeError(f"unknown quantizer options {sorted(unknown)}")
        opts = {k: options.get(k, v[0]) for k, v in QUANT_OPTIONS.items()}
        self.w_bits = int(w_bits)
        self.a_bits = int(a_bits)
        self.w_quantizer, self.a_quantizer = opts["w_quantizer"], opts["a_quantizer"]
        self.w_per_channel = opts["w_granularity"] == "channel"
        self.act_quant = make_act_quant(opts["a_quantizer"], a_bits, opts["a_scheme"], opts["a_mode"] == "dynamic")
        if opts["w_quantizer"] == "lsq" and not is_float(self.w_bits):
            self.w_quant = LSQWeight(self.weight.shape[0], self.weight.dim(), self.w_bits, self.w_per_channel)
        aq = self.act_quant
        # static min/max activations and max-abs weights, both quantized: one autograd node for both
        self._paired = (type(aq) is ActFakeQuant and not aq.dynamic and not is_float(self.a_bits)
                        and 2 <= self.w_bits < FLOAT_BITS and "w_quant" not in self._modules)

    def operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's input and weight as it computes with them (fake-quantized)."""
        if self._paired:
            w = self.weight
            return attach_ste(x, *self.act_quant.quantize(x), w, weight_maxabs_values(w, self.w_bits, self.w_per_channel))
        return self.act_quant(x), self.quantized_weight()

    def quantized_weight(self) -> torch.Tensor:
        if is_float(self.w_bits):
            return self.weight
        if "w_quant" in self._modules:
            return self.w_quant(self.weight)
        return fake_quant_weight(self.weight, self.w_bits, self.w_per_channel)

    def integer_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The integers ``q`` and float32 scales (per output channel, or one) with ``q * scale ==``
        the fake-quant weight, bit for bit."""
        w, bits = self.weight.detach(), self.w_bits
        if "w_quant" in self._modules and bits > 1:
            scale = self.w_quant.scale()
            qmin, qmax = signed_range(bits)
            return torch.clamp(w / scale, qmin, qmax).round(), scale
        scale = weight_scale(w, bits, self.w_per_channel)
        if bits == 1:
            return torch.where(w >= 0, 1.0, -1.0), scale
        qmax = signed_range(bits)[1]
        return (w * (1.0 / scale)).round().clamp(-qmax, qmax), scale

    @staticmethod
    def _hparams(mod: nn.Module) -> tuple[tuple, dict]:
        raise NotImplementedError

    @classmethod
    def from_float(cls, mod: nn.Module, w_bits: int, a_bits: int, **options):
        """A quantized layer that shares ``mod``'s parameters (``options``: see ``_init_quant``)."""
        args, kwargs = cls._hparams(mod)
        with torch.device("meta"):
            new = cls(*args, **kwargs, w_bits=w_bits, a_bits=a_bits)
        new.weight, new.bias = mod.weight, mod.bias
        new._init_quant(w_bits, a_bits, **options)  # the quantizers on the real device
        return new.to(mod.weight.device)

    def to_float(self) -> nn.Module:
        """The plain float layer sharing this layer's (unquantized) parameters."""
        args, kwargs = self._hparams(self)
        with torch.device("meta"):
            mod = self._float_cls(*args, **kwargs)
        mod.weight, mod.bias = self.weight, self.bias
        return mod

    def extra_repr(self) -> str:
        return super().extra_repr() + f", w_bits={self.w_bits}, a_bits={self.a_bits}"


class QuantConv2d(_QuantMixin, nn.Conv2d):
    _float_cls = nn.Conv2d

    def __init__(self, *args, w_bits: int = 8, a_bits: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(w_bits, a_bits)

    @staticmethod
    def _hparams(mod: nn.Conv2d) -> tuple[tuple, dict]:
        return (mod.in_channels, mod.out_channels, mod.kernel_size), dict(
            stride=mod.stride, padding=mod.padding, dilation=mod.dilation, groups=mod.groups,
            bias=mod.bias is not None, padding_mode=mod.padding_mode,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(*self.operands(x), self.bias)


class QuantLinear(_QuantMixin, nn.Linear):
    _float_cls = nn.Linear

    def __init__(self, *args, w_bits: int = 8, a_bits: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(w_bits, a_bits)

    @staticmethod
    def _hparams(mod: nn.Linear) -> tuple[tuple, dict]:
        return (mod.in_features, mod.out_features), dict(bias=mod.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(*self.operands(x), self.bias)


def make_act_quant(kind: str, bits: int, scheme: str = "affine", dynamic: bool = False) -> nn.Module:
    """The activation quantizer ``kind`` (ema | lsq | pact). Dynamic ranges are min/max ranges of
    each input, so ``dynamic`` gives the min/max quantizer whatever ``kind`` says; ``scheme``
    applies to min/max ranges (LSQ and PACT fix their own zero point at 0)."""
    if kind == "ema" or dynamic or bits >= FLOAT_BITS:
        return ActFakeQuant(bits, scheme=scheme, dynamic=dynamic)
    if kind == "lsq":
        return LSQAct(bits)
    if kind == "pact":
        return PACTAct(bits)
    raise ValueError(f"a_quantizer: unknown name '{kind}'; allowed: ema, lsq, pact")
