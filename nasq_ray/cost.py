"""Cost model: pure, exact functions of layer shapes and bit-widths.

Per layer (Conv2d or Linear, for one input sample):

* ``macs``      multiply-accumulates: ``out_ch * out_h * out_w * (in_ch / groups) * k_h * k_w``
                (``in * out`` for a Linear layer). Pooling, BatchNorm, additions and ReLU are not
                counted, as in ``torch.utils.flop_counter`` (MACs = FLOPs / 2).
* ``bitops``    ``macs * w_bits * a_bits`` where ``a_bits`` is the bit-width of the layer's input.
* ``size_bits`` what must be stored to run the layer: weights at ``w_bits``; at 32 bits each: the
                bias, one weight scale per output channel (or one per layer for per-tensor weights;
                none for float weights), the BatchNorm that follows the layer in its inference form
                (one scale and one shift per channel), and the input quantizer's scale and zero
                point (when it is quantized with a static range; a dynamic one computes them per
                input and stores nothing).

A float layer is one at 32 bits: no scales, no quantizer parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerShape:
    """Shape and bit-widths of one Conv2d/Linear layer (plain data, from ``models.trace_layers``)."""

    name: str
    kind: str  # "conv" or "linear"
    in_ch: int
    out_ch: int
    kernel: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]
    has_bias: bool
    bn_channels: int
    w_bits: int
    a_bits: int
    w_scales: int | None = None  # weight scales stored: one per output channel (None) or 1 (per tensor)
    a_static: bool = True  # a static activation quantizer stores its scale and zero point; dynamic none

    @property
    def n_weights(self) -> int:
        return self.out_ch * (self.in_ch // self.groups) * self.kernel[0] * self.kernel[1]


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str
    w_bits: int
    a_bits: int
    n_weights: int
    macs: int
    bitops: int
    size_bits: int


@dataclass(frozen=True)
class CostSummary:
    macs: int
    bitops: int
    size_bits: int
    n_weights: int
    avg_w_bits: float

    @property
    def size_kb(self) -> float:
        """Size in kilobytes (1 kB = 1000 bytes = 8000 bits)."""
        return self.size_bits / 8000.0

    def as_metrics(self) -> dict:
        """The cost entries of a trial report."""
        return {**asdict(self), "size_kb": self.size_kb}


def layer_macs(layer: LayerShape) -> int:
    return layer.n_weights * layer.out_hw[0] * layer.out_hw[1]


def layer_bitops(macs: int, w_bits: int, a_bits: int) -> int:
    return macs * w_bits * a_bits


def layer_size_bits(layer: LayerShape) -> int:
    w_quant = layer.w_bits < FLOAT_BITS
    a_quant = layer.a_bits < FLOAT_BITS
    bits = layer.n_weights * layer.w_bits
    bits += FLOAT_BITS * layer.out_ch * int(layer.has_bias)
    bits += FLOAT_BITS * (layer.out_ch if layer.w_scales is None else layer.w_scales) * int(w_quant)
    bits += FLOAT_BITS * 2 * layer.bn_channels
    bits += FLOAT_BITS * 2 * int(a_quant and layer.a_static)
    return bits


def layer_cost(layer: LayerShape) -> LayerCost:
    macs = layer_macs(layer)
    return LayerCost(
        name=layer.name, kind=layer.kind, w_bits=layer.w_bits, a_bits=layer.a_bits,
        n_weights=layer.n_weights, macs=macs, bitops=layer_bitops(macs, layer.w_bits, layer.a_bits),
        size_bits=layer_size_bits(layer),
    )


def summarize(costs: Sequence[LayerCost], extra_size_bits: int = 0) -> CostSummary:
    """Totals over layers. ``extra_size_bits`` adds storage outside the layers (the logit quantizer)."""
    n_weights = sum(c.n_weights for c in costs)
    return CostSummary(
        macs=sum(c.macs for c in costs),
        bitops=sum(c.bitops for c in costs),
        size_bits=sum(c.size_bits for c in costs) + extra_size_bits,
        n_weights=n_weights,
        avg_w_bits=sum(c.n_weights * c.w_bits for c in costs) / max(1, n_weights),
    )


SHAPE_FIELDS = ("in_ch", "out_ch", "groups", "bn_channels")  # what channel pruning changes in a LayerShape


def pruned_shapes(shapes: Sequence[LayerShape], deltas: Mapping[str, Mapping[str, Mapping[str, int]]],
                  removed: Mapping[str, int]) -> list[LayerShape]:
    """``shapes`` after channel pruning: ``removed[group]`` channels of each group go, and each layer's
    field changes by ``deltas[group][layer][field]`` per channel removed (the coupling measured on
    the model once, :func:`nasq_ray.models.pruning.shape_deltas`)."""
    change: dict[str, dict[str, int]] = {}
    for group, n in removed.items():
        for layer, fields in deltas.get(group, {}).items():
            for f, d in fields.items():
                change.setdefault(layer, {})
                change[layer][f] = change[layer].get(f, 0) + n * d
    return [replace(s, **{f: getattr(s, f) + d for f, d in change[s.name].items()}) if s.name in change else s
            for s in shapes]


def with_bits(shapes: Sequence[LayerShape], bits: Mapping[str, tuple[int, int]], per_channel: bool = True,
              static: bool = True) -> list[LayerShape]:
    """``shapes`` with the (w_bits, a_bits) of the layers ``bits`` names, their weight scales per
    output channel (or one per layer) and a static (or dynamic) input quantizer."""
    return [replace(s, w_bits=bits[s.name][0], a_bits=bits[s.name][1], w_scales=None if per_channel else 1,
                    a_static=static) if s.name in bits else s for s in shapes]


def logit_quant_size_bits(logit_bits: int) -> int:
    """A quantizer on the logits stores its scale and zero point."""
    return 2 * FLOAT_BITS if logit_bits < FLOAT_BITS else 0


def cost_table(costs: Sequence[LayerCost]) -> str:
    """A per-layer text table."""
    head = f"{'layer':<22} {'kind':<6} {'W':>3} {'A':>3} {'weights':>8} {'MACs':>10} {'BitOPs':>13} {'size_bits':>10}"
    rows = [head, "-" * len(head)]
    for c in costs:
        rows.append(f"{c.name:<22} {c.kind:<6} {c.w_bits:>3} {c.a_bits:>3} {c.n_weights:>8} {c.macs:>10} "
                    f"{c.bitops:>13} {c.size_bits:>10}")
    s = summarize(costs)
    rows.append("-" * len(head))
    rows.append(f"{'total':<22} {'':<6} {'':>3} {'':>3} {s.n_weights:>8} {s.macs:>10} {s.bitops:>13} {s.size_bits:>10}")
    return "\n".join(rows)
