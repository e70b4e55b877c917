"""``build_model(arch, quant, seed)``: an :class:`ArchSpec` becomes a ``torch.nn.Module``.

Module paths are the layer names used by the search space (``s0.b1.op.conv``, ``head.out``), so
that a :class:`QuantConfig` addresses layers by the same names as the bit-width parameters.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError, as_sizes, is_int
from ..cost import CostSummary, LayerCost, LayerShape, layer_cost, logit_quant_size_bits, summarize
from ..quant import QuantConfig, quantize_
from .blocks import Block

if TYPE_CHECKING:
    from ..space.specs import ArchSpec


class Head(nn.Module):
    """Fully connected classifier: ``fc0 .. fc{n-1}`` (Linear -> ReLU) then ``out``."""

    def __init__(self, in_features: int, widths: tuple[int, ...], num_classes: int):
        super().__init__()
        self.n_hidden = len(widths)
        for k, w in enumerate(widths):
            self.add_module(f"fc{k}", nn.Linear(in_features, w))
            in_features = w
        self.out = nn.Linear(in_features, num_classes)
        self.act = nn.ReLU()

    def forward(self, x):
        for k in range(self.n_hidden):
            x = self.act(getattr(self, f"fc{k}")(x))
        return self.out(x)


class Net(nn.Module):
    """Stages of blocks (``s0``, ``s1``, ...), global average pooling or flattening, the FC head,
    and ``logit_quant`` on the values that enter the loss."""

    def __init__(self, arch: ArchSpec):
        super().__init__()
        self.n_stages = len(arch.stages)
        for i, stage in enumerate(arch.stages):
            blocks = OrderedDict(
                (f"b{j}", Block(b.op, b.connection, b.op_b, b.merge, b.in_ch, b.out_ch, b.stride))
                for j, b in enumerate(stage)
            )
            self.add_module(f"s{i}", nn.Sequential(blocks))
        feat = arch.feature_shape()
        self.pool = arch.head_pool if arch.stages else "flatten"
        in_features = feat[0] if self.pool == "avg" else math.prod(feat)
        self.head = Head(in_features, arch.head_widths, arch.num_classes)
        self.logit_quant: nn.Module = nn.Identity()
        self.pool_quant: nn.Module = nn.Identity()  # the average pooling's input, at quant.merge_bits

    def forward(self, x):
        for i in range(self.n_stages):
            x = getattr(self, f"s{i}")(x)
        x = self.pool_quant(x).mean(dim=(2, 3)) if self.pool == "avg" else x.flatten(1)
        return self.logit_quant(self.head(x))


def build_model(arch: ArchSpec, quant: QuantConfig | None = None, seed: int = 0) -> Net:
    """Build the network of ``arch``, fake-quantized by ``quant``; deterministic given (arch, quant, seed).

    The global torch RNG is left as it was.
    """
    if not all(hasattr(arch, f) for f in ("input_shape", "num_classes", "stages", "head_widths")):  # an ArchSpec
        hint = " (pass spec.arch and spec.quant of a TrialSpec)" if hasattr(arch, "arch") else \
            " (space.decode(config).arch)"
        raise ConfigError(f"arch: expected an ArchSpec{hint}, got {type(arch).__name__}")
    if quant is not None and not isinstance(quant, QuantConfig):
        raise ConfigError(f"quant: expected a QuantConfig or None (space.decode(config).quant), got {type(quant).__name__}")
    if not is_int(seed):
        raise ConfigError(f"seed: {seed!r} is not allowed; allowed: an integer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = Net(arch)
    if quant is not None:
        quantize_(model, quant)
    return model


def trace_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerShape]:
    """Run one sample through ``model`` and record the shape of every Conv2d/Linear layer, in order.

    A BatchNorm that consumes a layer's output is recorded with that layer (it folds into it at
    inference). Bit-widths are read from fake-quant layers; float layers count 32 bits.
    """
    return [LayerShape(**r) for r in _trace(model, input_shape)[0].values()]


def batchnorm_after(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, nn.Module]:
    """Each Conv2d/Linear (by name) whose output feeds a BatchNorm directly, with that BatchNorm:
    the pairs ``trace_layers`` counts as one layer."""
    return _trace(model, input_shape)[1]


@torch.no_grad()
def _trace(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, dict], dict[str, nn.Module]]:
    """One sample through ``model`` in evaluation mode: each Conv2d/Linear layer's record (the fields
    of ``LayerShape``) in forward order, and the BatchNorm that consumes its output, by layer name."""
    records: dict[str, dict] = {}
    batchnorms: dict[str, nn.Module] = {}
    outputs: dict[int, str] = {}
    hooks = []
    names = {m: n for n, m in model.named_modules()}

    def on_layer(mod, inp, out):
        name = names[mod]
        is_conv = isinstance(mod, nn.Conv2d)
        records[name] = dict(
            name=name, kind="conv" if is_conv else "linear",
            in_ch=mod.in_channels if is_conv else mod.in_features,
            out_ch=mod.out_channels if is_conv else mod.out_features,
            kernel=tuple(mod.kernel_size) if is_conv else (1, 1),
            groups=mod.groups if is_conv else 1,
            out_hw=tuple(out.shape[2:]) if is_conv else (1, 1),
            has_bias=mod.bias is not None, bn_channels=0,
            w_bits=getattr(mod, "w_bits", 32), a_bits=getattr(mod, "a_bits", 32),
            w_scales=None if getattr(mod, "w_per_channel", True) else 1,
            a_static=not getattr(getattr(mod, "act_quant", None), "dynamic", False),
        )
        outputs[id(out)] = name

    def on_bn(mod, inp, out):
        owner = outputs.get(id(inp[0]))
        if owner is not None:
            records[owner]["bn_channels"] = mod.num_features
            batchnorms[owner] = mod

    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(on_layer))
        elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            hooks.append(mod.register_forward_hook(on_bn))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return records, batchnorms


def cost_of(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[CostSummary, list[LayerCost]]:
    """:func:`measure_cost` without its argument checks: for networks nasq-ray built or already traced,
    whose forward errors are the trial's to report, not a wrong ``input_shape``."""
    layers = [layer_cost(s) for s in trace_layers(model, input_shape)]
    return _summary(model, layers)


def _summary(model: nn.Module, layers: list[LayerCost]) -> tuple[CostSummary, list[LayerCost]]:
    logit = getattr(model, "logit_quant", None)
    logit_bits = 32 if getattr(logit, "dynamic", False) else getattr(logit, "bits", 32)
    return summarize(layers, extra_size_bits=logit_quant_size_bits(logit_bits)), layers


def measure_cost(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[CostSummary, list[LayerCost]]:
    """Totals and the per-layer table of ``model``'s cost (see :mod:`nasq_ray.cost`); a model or shape
    that does not fit is one ConfigError."""
    if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
        what = type(model).__name__ if not isinstance(model, nn.Module) else f"a {type(model).__name__} without parameters"
        raise ConfigError(f"model: expected a torch.nn.Module with parameters, got {what}")
    shape = as_sizes(input_shape)
    if shape is None:
        raise ConfigError(f"input_shape: {input_shape!r} is not allowed; allowed: a tuple of positive integers without "
                          "the batch dimension, such as (1, 8, 8) or (64,)")
    try:
        shapes = trace_layers(model, shape)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:  # torch's shape errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"input_shape: {shape} does not fit the model ({first}); allowed: the shape of one "
                          "sample as the model takes it, without the batch dimension") from None
    return _summary(model, [layer_cost(s) for s in shapes])
