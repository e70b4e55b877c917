"""Structured channel pruning of a user's model with torch-pruning's dependency graph (DepGraph).

torch-pruning traces the model (through autograd, so it needs no torch.fx) and groups the channels
that must be removed together: a layer's output channels with the BatchNorm after it, the input
channels of every layer reading them, both sides of a residual add, the slices of a concatenation,
a depthwise convolution's channels and groups, and the features of a Linear after a Flatten.
nasq-ray adds no coupling rules of its own: one group is one keep-ratio choice of the search space.

* :func:`prune_groups` - the groups that may be pruned (not those holding the output layer's
  classes, nor an excluded layer), each named after its root layer, with its channel count and the
  layers it changes.
* :func:`shape_deltas` - how each layer's shape changes per channel a group removes (measured once by
  pruning one channel of each group on a copy), so that a config's cost is exact before any
  pruning: :func:`nasq_ray.cost.pruned_shapes`.
* :func:`prune_` - prune a model in place to a config's keep ratios, by importance (L2 norm of
  the group's weights, or first-order Taylor |w * dL/dw| on a few batches); returns the *plan*
  (channels removed per group, in order) that :func:`apply_plan_` replays exactly (resume, export).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

IMPORTANCES = ("l2", "taylor")
PrunePlan = dict[str, list[int]]  # group root -> the channel indices removed from it (in pruning order)


@dataclass(frozen=True)
class PruneGroup:
    """Coupled channels that are pruned together. ``name`` is the first layer (in forward order)
    whose output channels they are (the search space's parameter ``<name>.keep``); ``root`` the
    layer torch-pruning roots the group at."""

    name: str
    root: str
    channels: int
    outputs: tuple[str, ...]  # Conv2d / Linear layers whose output channels the group removes
    inputs: tuple[str, ...]  # ... and those whose input channels (features) it removes


def keep_count(channels: int, keep: float) -> int:
    """Channels a group keeps at ratio ``keep``: ``round(keep * channels)``, at least 1."""
    return max(1, min(channels, int(math.floor(keep * channels + 0.5))))


@contextlib.contextmanager
def _concat_through_reshape():
    """Work around torch-pruning 1.6's concatenation offsets (its issue #481, open): to check a
    concatenation's channel count it follows the tensor forward, and through a Flatten into a
    Linear it finds the Linear's features (C x H x W), concludes the concatenation is not over
    channels and drops its offsets, so pruning one branch also prunes the others. Inferring no
    count past a reshape keeps the offsets (computed from the branches); nothing else changes."""
    from torch_pruning import ops
    from torch_pruning.dependency import shape_infer

    original = shape_infer.infer_in_channels_recursively

    @functools.wraps(original)
    def infer(graph, node, recursive_depth):
        return None if node.type == ops.OPTYPE.RESHAPE else original(graph, node, recursive_depth)

    shape_infer.infer_in_channels_recursively = infer
    try:
        yield
    finally:
        shape_infer.infer_in_channels_recursively = original


def _patched(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _concat_through_reshape():
            return fn(*args, **kwargs)
    return wrapper


def _graph(model: nn.Module, x: torch.Tensor):
    import torch_pruning as tp

    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=x[:1], verbose=False)
    finally:
        model.train(was)


def _root_fn(dg, module: nn.Module):
    return dg.get_pruner_of_module(module).prune_out_channels


@_patched
def prune_groups(model: nn.Module, x: torch.Tensor, ignored: Iterable[str] = (),
                 order: list[str] | None = None) -> list[PruneGroup]:
    """The prunable groups of ``model`` (``x``: a data batch), in forward ``order`` of their first
    output layer. Groups touching an ``ignored`` layer's output channels (the classifier, excluded
    layers) are left out, and so are groups of a single channel and groups touching a grouped (not
    depthwise) convolution."""
    from torch_pruning.pruner import function

    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    rank = {n: i for i, n in enumerate(order or [])}
    dg = _graph(model, x)
    skip = [modules[n] for n in ignored if n in modules]
    out = []
    for group in dg.get_all_groups(ignored_layers=skip, root_module_types=(nn.Conv2d, nn.Linear)):
        root = group[0].dep.target.module
        channels = dg.get_out_channels(root)
        if channels is None or channels < 2:
            continue
        if any(_grouped(d.target.module) for d, _ in group):
            continue  # removing one channel breaks a grouped conv's channels-per-group: left unpruned
        layers = [(names[d.target.module], dg.is_out_channel_pruning_fn(d.handler)
                   or d.handler is function.prune_depthwise_conv_out_channels)
                  for d, _ in group if isinstance(d.target.module, (nn.Conv2d, nn.Linear))]
        outputs = tuple(dict.fromkeys(n for n, is_out in layers if is_out))
        inputs = tuple(dict.fromkeys(n for n, is_out in layers if not is_out and n not in outputs))
        first = min(outputs, key=lambda n: rank.get(n, len(rank)))
        out.append(PruneGroup(first, names[root], int(channels), outputs, inputs))
    return sorted(out, key=lambda g: rank.get(g.name, len(rank)))


def _grouped(module: nn.Module) -> bool:
    """A grouped convolution other than a plain depthwise one (``groups == in == out channels``): a
    grouped one, or a depthwise one with a channel multiplier."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 \
        and not module.groups == module.in_channels == module.out_channels


def _prune_group(dg, module: nn.Module, idxs: list[int]) -> None:
    group = dg.get_pruning_group(module, _root_fn(dg, module), idxs)
    group.prune()


@_patched
def shape_deltas(model: nn.Module, x: torch.Tensor, groups: list[PruneGroup],
                 shapes_of: Callable[[nn.Module], dict[str, dict]]) -> dict[str, dict[str, dict[str, int]]]:
    """Per group: layer -> field -> change per channel removed (negative), for the fields of
    ``shapes_of(model)`` (layer -> {field: int}) that change when one channel of the group goes."""
    base = shapes_of(model)
    out = {}
    for g in groups:
        probe = copy.deepcopy(model)
        dg = _graph(probe, x)
        _prune_group(dg, dict(probe.named_modules())[g.root], [g.channels - 1])
        after = shapes_of(probe)
        changed = {layer: {f: after[layer][f] - v for f, v in fields.items() if after[layer][f] != v}
                   for layer, fields in base.items()}
        out[g.name] = {layer: d for layer, d in changed.items() if d}
    return out


def _importance(kind: str):
    import torch_pruning as tp

    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


def taylor_gradients_(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Accumulate dL/dw (cross-entropy, the float model in evaluation mode) over ``batches`` into
    the parameters' ``.grad``: what first-order Taylor importance reads."""
    import torch.nn.functional as F

    was = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for xb, yb in batches:
            F.cross_entropy(model(xb), yb).backward()
    model.train(was)


@_patched
def prune_(model: nn.Module, x: torch.Tensor, keep: Mapping[str, float], groups: list[PruneGroup],
           importance: str = "l2") -> PrunePlan:
    """Prune ``model`` in place: each group of ``groups`` with ``keep[name] < 1`` keeps
    :func:`keep_count` channels, the most important ones (``importance``: ``l2`` or ``taylor``,
    the latter reading the gradients :func:`taylor_gradients_` left). Returns the plan."""
    modules = dict(model.named_modules())
    dg = _graph(model, x)
    scorer = _importance(importance)
    plan: PrunePlan = {}
    for g in groups:
        n_keep = keep_count(g.channels, keep.get(g.name, 1.0))
        if n_keep >= g.channels:
            continue
        root = modules[g.root]
        group = dg.get_pruning_group(root, _root_fn(dg, root), list(range(g.channels)))
        scores = scorer(group)
        if scores is None or not torch.isfinite(scores).all():
            scores = torch.arange(g.channels, 0, -1, dtype=torch.float32)  # no usable score: drop the last channels
        order = torch.argsort(scores.double(), stable=True)  # least important first
        removed = sorted(int(i) for i in order[: g.channels - n_keep])
        _prune_group(dg, root, removed)
        plan[g.root] = removed
    model.zero_grad(set_to_none=True)
    return plan


@_patched
def apply_plan_(model: nn.Module, x: torch.Tensor, plan: PrunePlan) -> None:
    """Replay a plan of :func:`prune_` on a fresh copy of the same model: the same channels go."""
    if not plan:
        return
    modules = dict(model.named_modules())
    dg = _graph(model, x)
    for root, removed in plan.items():
        _prune_group(dg, modules[root], list(removed))
