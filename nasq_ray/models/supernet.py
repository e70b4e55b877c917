"""A quantization-aware super-network over a generated space: one set of weights holding every
sub-network (weight sharing, Once-for-All style).

* **Elastic width**: a layer's channels are the leading slice of the widest choice's weights (its
  output channels, and its input channels: the leading channels of the layer before).
* **Elastic depth**: a stage with ``k`` blocks uses its first ``k`` blocks.
* **Ops**: each candidate op of a block position has its own weights (``s1.b0.op:conv3x3.conv``);
  a parallel branch's op its own again (``par:``); the shortcut ``skip`` one per position.
* **Head**: the classifier layers' weights are shared across widths (leading slices); a head reading
  a flattened feature map is keyed by the map's height and width (flattening is channel-major, so
  fewer channels are the leading features only at the same resolution).
* **Bits**: each sub-network's layers are fake-quantized at its own bits; the weight quantizers
  (max-abs) keep no state, the activation quantizers' running ranges are kept per layer *and* per
  width (``s0.b0.op:conv3x3.conv@4``), so a 4-bit and an 8-bit sub-network do not share a range.

A sub-network runs as the stand-alone network :func:`nasq_ray.models.build_model` builds for its
config, with its parameters replaced by slices of the shared ones (``torch.func.functional_call``):
gradients flow into the shared weights, and :meth:`SuperNet.subnet` gives the same network with the
slices copied in, computing exactly what the super-network computes for that config.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from ..quant import ActFakeQuant, QuantConfig
from .blocks import branch_channels, needs_skip_proj
from ._registry import get_op
from .builder import Net, build_model

_BLOCK_PARAM = re.compile(r"^(s\d+)\.(b\d+)\.(op|par)\.(.+)$")
_HEAD_PARAM = re.compile(r"^head\.(fc\d+|out)\.(weight|bias)$")
CACHE_SIZE = 64  # sub-network modules kept built (a structure is rebuilt when it falls out)


def _safe(key: str) -> str:
    return key.replace(".", "/")


def _values(domain) -> tuple:
    from ..space.parse import _values as values

    return values(domain)


def _choices(space, name: str, absent: tuple = ()) -> tuple:
    """The values ``name`` takes in ``space`` (searched or constant); ``absent`` where it has none."""
    return _values(space._value_domain(name)) if name in space._by_name or name in space.constants else absent


class SuperNet(nn.Module):
    """The shared weights of every sub-network of ``space`` (a generated space, not a table)."""

    def __init__(self, space, seed: int = 0):
        super().__init__()
        self.space = space
        shapes = self._max_shapes()
        self.weights = nn.ParameterDict()
        self._bn: dict[str, int] = {}
        gen = torch.Generator().manual_seed(seed)
        self.bn_stats = nn.Module()  # BatchNorm running statistics, shared like the weights (leading slices)
        for key, shape in shapes.items():
            self.weights[_safe(key)] = nn.Parameter(_init(key, shape, gen))
            if _is_bn(key) and key.endswith(".weight"):
                stem = _safe(key[: -len(".weight")])
                self.bn_stats.register_buffer(f"{stem}.running_mean".replace(".", "/"), torch.zeros(shape))
                self.bn_stats.register_buffer(f"{stem}.running_var".replace(".", "/"), torch.ones(shape))
        self.ranges = nn.Module()  # activation ranges per (layer, width): buffers created on first use
        self._cache: OrderedDict = OrderedDict()

    def load_shared(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a saved state (weights, BatchNorm statistics, the ranges per layer and width seen so far)."""
        for key, value in state.items():
            if key.startswith("ranges.") and not hasattr(self.ranges, key[len("ranges."):]):
                self.ranges.register_buffer(key[len("ranges."):], torch.zeros_like(value))
        self.load_state_dict(state)

    # ---------------------------------------------------------------------------- structure
    def _block_shapes(self, i: int, j: int, out: dict) -> None:
        v = self.space
        outs = _values(v._value_domain(f"s{i}.channels"))
        if j == 0:
            ins = _values(v._value_domain(f"s{i - 1}.channels")) if i > 0 else (v.input_shape[0],)
            strides = _values(v._value_domain(f"s{i}.stride"))
        else:
            ins, strides = outs, (1,)
        prefix = f"s{i}.b{j}"
        ops = _choices(v, f"{prefix}.op")
        conns = _values(v._value_domain(f"{prefix}.conn"))
        par_ops = _choices(v, f"{prefix}.op_b")
        merges = _choices(v, f"{prefix}.merge", absent=(None,))
        for in_ch, out_ch, stride, conn, merge in itertools.product(ins, outs, strides, conns, merges):
            ca, cb = branch_channels(conn, merge, out_ch)
            for op in ops:
                _record(out, f"{prefix}.op:{op}", get_op(op), in_ch, ca, stride)
            if conn == "parallel":
                for op in par_ops:
                    _record(out, f"{prefix}.par:{op}", get_op(op), in_ch, cb, stride)
            if needs_skip_proj(conn, in_ch, out_ch, stride):
                _merge(out, f"{prefix}.skip.weight", (out_ch, in_ch, 1, 1))
                _merge(out, f"{prefix}.skip_bn.weight", (out_ch,))
                _merge(out, f"{prefix}.skip_bn.bias", (out_ch,))

    def _max_shapes(self) -> dict[str, tuple[int, ...]]:
        v = self.space
        out: dict[str, tuple[int, ...]] = {}
        for i in range(v.n_stages):
            for j in range(max(_values(v._value_domain(f"s{i}.repeats")))):
                self._block_shapes(i, j, out)
        for feat, width_in, head_key in self._head_inputs():
            layers = _values(v._value_domain("head.layers"))
            widths = _choices(v, "head.fc0.width")
            for n in layers:
                if n == 0:
                    _merge(out, f"head.out@{head_key}.weight", (v.num_classes, feat))
                    _merge(out, f"head.out@{head_key}.bias", (v.num_classes,))
                    continue
                wmax = max(widths)
                _merge(out, f"head.fc0@{head_key}.weight", (wmax, feat))
                _merge(out, f"head.fc0@{head_key}.bias", (wmax,))
                for k in range(1, n):
                    _merge(out, f"head.fc{k}.weight", (wmax, wmax))
                    _merge(out, f"head.fc{k}.bias", (wmax,))
                _merge(out, "head.out@fc.weight", (v.num_classes, wmax))
                _merge(out, "head.out@fc.bias", (v.num_classes,))
        return out

    def _head_inputs(self):
        """(max input features, None, key) for each way features can reach the head: average pooled
        (``avg``), or flattened at one of the resolutions the strides allow (``flatten7x7``)."""
        v = self.space
        pools = _choices(v, "head.pool", absent=("avg",))
        if v.n_stages == 0:
            yield math.prod(v.input_shape), None, "flat"
            return
        cmax = max(_values(v._value_domain(f"s{v.n_stages - 1}.channels")))
        stride_sets = [_values(v._value_domain(f"s{i}.stride")) for i in range(v.n_stages)]
        hws = set()
        for strides in itertools.product(*stride_sets):
            if v._spatial_violation(list(strides)):
                continue
            h, w = v.input_shape[1:]
            for s in strides:
                h, w = -(-h // s), -(-w // s)
            hws.add((h, w))
        for pool in pools:
            if pool == "avg":
                yield cmax, None, "avg"
            else:
                for h, w in sorted(hws):
                    yield cmax * h * w, None, f"flatten{h}x{w}"

    # ------------------------------------------------------------------------------- keys
    def store_key(self, name: str, arch) -> str:
        """Where a stand-alone sub-network's parameter ``name`` lives in the shared weights."""
        m = _BLOCK_PARAM.match(name)
        if m:
            stage, block, branch, rest = m.groups()
            b = arch.stages[int(stage[1:])][int(block[1:])]
            return f"{stage}.{block}.{branch}:{b.op if branch == 'op' else b.op_b}.{rest}"
        m = _HEAD_PARAM.match(name)
        if m:
            layer, what = m.groups()
            feature_layer = "fc0" if arch.head_widths else "out"
            if layer == feature_layer:
                return f"head.{layer}@{self._feature_key(arch)}.{what}"
            return f"head.out@fc.{what}" if layer == "out" else name
        return name  # s{i}.b{j}.skip*, the same at every config

    def _feature_key(self, arch) -> str:
        if not arch.stages:
            return "flat"
        if arch.head_pool == "avg":
            return "avg"
        _, h, w = arch.feature_shape()
        return f"flatten{h}x{w}"

    def _slices(self, sub: nn.Module, arch) -> dict[str, torch.Tensor]:
        """The sub-network's parameters and BatchNorm statistics as views of the shared tensors."""
        out = {}
        for name, p in sub.named_parameters():
            shared = self.weights[_safe(self.store_key(name, arch))]
            out[name] = shared[tuple(slice(0, n) for n in p.shape)]
        for name, b in sub.named_buffers():
            stat = name.rpartition(".")[2]
            if stat in ("running_mean", "running_var"):
                bn = name[: -len(stat) - 1]
                key = self.store_key(f"{bn}.weight", arch)[: -len(".weight")]
                out[name] = getattr(self.bn_stats, _safe(f"{key}.{stat}"))[: b.shape[0]]
        return out

    # -------------------------------------------------------------------------- sub-networks
    def _module(self, spec) -> Net:
        key = repr((spec.arch, spec.quant))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        sub = build_model(spec.arch, spec.quant, seed=0).to(next(self.parameters()).device)
        self._cache[key] = sub
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return sub

    def _range_state(self, key: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (min, max, initialized) buffers of the range kept under ``key``, created on first use."""
        if not hasattr(self.ranges, f"{key}_min"):
            device = next(self.parameters()).device
            self.ranges.register_buffer(f"{key}_min", torch.tensor(0.0, device=device))
            self.ranges.register_buffer(f"{key}_max", torch.tensor(0.0, device=device))
            self.ranges.register_buffer(f"{key}_init", torch.tensor(False, device=device))
        return tuple(getattr(self.ranges, f"{key}_{s}") for s in ("min", "max", "init"))

    def _range_key(self, name: str, bits: int, arch) -> str:
        """Where the range of quantizer ``name`` at ``bits`` lives: per layer (its shared weights) and
        width; the merge, pooling and logit quantizers per position and width."""
        if name in ("logit_quant",) or name.rpartition(".")[2] in ("merge_quant_a", "merge_quant_b", "pool_quant"):
            return _safe(f"{name}@{bits}")
        layer = name.rsplit(".", 1)[0] if name.endswith(".act_quant") else name
        return _safe(f"{self.store_key(layer + '.weight', arch).rsplit('.', 1)[0]}@{bits}")

    def _quantizers(self, sub: nn.Module):
        for name, mod in sub.named_modules():
            if isinstance(mod, ActFakeQuant) and mod.bits < 32 and not mod.dynamic:
                yield name, mod

    def _load_ranges(self, sub: nn.Module, arch) -> list:
        pairs = []
        for name, q in self._quantizers(sub):
            lo, hi, init = self._range_state(self._range_key(name, q.bits, arch))
            q.load_state_dict({"running_min": lo, "running_max": hi, "initialized": init}, strict=True)
            pairs.append((q, lo, hi, init))
        return pairs

    @staticmethod
    def _store_ranges(pairs: list) -> None:
        for q, lo, hi, init in pairs:
            lo.copy_(q.running_min)
            hi.copy_(q.running_max)
            init.copy_(q.initialized)

    def forward(self, x: torch.Tensor, spec):
        """The sub-network of ``spec`` (a decoded config) on ``x``, computed with the shared weights;
        for a list of specs, their outputs (one forward call: what a data-parallel wrapper expects)."""
        if isinstance(spec, (list, tuple)):
            return [self._forward(x, one) for one in spec]
        return self._forward(x, spec)

    def _forward(self, x: torch.Tensor, spec) -> torch.Tensor:
        sub = self._module(spec)
        sub.train(self.training)
        pairs = self._load_ranges(sub, spec.arch)
        tensors = {k: v.contiguous() if isinstance(v, nn.Parameter) or v.requires_grad else v
                   for k, v in self._slices(sub, spec.arch).items()}
        out = functional_call(sub, tensors, (x,))
        with torch.no_grad():
            self._store_ranges(pairs)
        return out

    @torch.no_grad()
    def subnet(self, spec, quant: QuantConfig | None = None) -> Net:
        """The stand-alone network of ``spec`` with the shared weights copied in, and its activation
        ranges (per layer at its width) where the super-network has observed them."""
        sub = build_model(spec.arch, spec.quant if quant is None else quant, seed=0).to(next(self.parameters()).device)
        own = dict(sub.named_parameters()) | dict(sub.named_buffers())
        for name, t in self._slices(sub, spec.arch).items():
            own[name].copy_(t)
        self._load_ranges(sub, spec.arch)
        return sub


def _merge(out: dict, key: str, shape: tuple[int, ...]) -> None:
    old = out.get(key)
    out[key] = tuple(shape) if old is None else tuple(max(a, b) for a, b in zip(old, shape))


_META_CACHE: dict = {}


def _record(out: dict, prefix: str, op_cls, in_ch: int, out_ch: int, stride: int) -> None:
    key = (op_cls, in_ch, out_ch, stride)
    if key not in _META_CACHE:
        with torch.device("meta"):
            mod = op_cls(in_ch, out_ch, stride)
        _META_CACHE[key] = [(n, tuple(p.shape)) for n, p in mod.named_parameters()]
    for name, shape in _META_CACHE[key]:
        _merge(out, f"{prefix}.{name}", shape)


def _is_bn(key: str) -> bool:
    return "bn" in key.rsplit(".", 1)[0].rsplit(".", 1)[-1]


def _init(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """PyTorch's default initialization for the widest shape (Kaiming-uniform weights, BatchNorm
    scale 1 and shift 0, biases uniform in +-1/sqrt(fan_in))."""
    name = key.rsplit(".", 1)[-1]
    if _is_bn(key):
        return torch.ones(shape) if name == "weight" else torch.zeros(shape)
    if name == "bias":
        return torch.empty(shape).uniform_(-0.1, 0.1, generator=gen)
    fan_in = math.prod(shape[1:])
    bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_ with a = sqrt(5), PyTorch's Conv/Linear default
    return torch.empty(shape).uniform_(-bound, bound, generator=gen)


def sandwich(space, rng, n_random: int = 2) -> list[dict]:
    """The configs of one training step: the largest (every ordered choice at its top: channels,
    depth, widths, bits), the smallest (every one at its bottom), and ``n_random`` random ones;
    unordered choices (ops, connections) are drawn at random in all of them."""
    from ..space.domains import Ordinal

    def extreme(top: bool):
        def ask(prm, view):
            d = prm.domain
            if isinstance(d, Ordinal) and prm.group in ("arch", "quant"):
                return max(d.values) if top else min(d.values)
            return d.sample(rng)
        for _ in range(100):
            cfg = space.walk(ask)
            if not space.violation(cfg):
                return cfg
        return space.sample(rng)

    return [extreme(True), extreme(False), *(space.sample(rng) for _ in range(n_random))]

