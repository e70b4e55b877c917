"""HAWQ-V3 sensitivities of a user model, put in the form the integer program takes
(:class:`nasq_ray.hawq.BitSensitivity`): per bit parameter of the space (a layer, a block, or the
whole network) and weight width, the summed sensitivity of its layers and what it changes in the
cost (read from the cost model, :func:`nasq_ray.hawq.rebased`).

The Hessian traces are estimated once on the float model (a few training batches, eight Rademacher
probes each) and kept in the results folder's ``sensitivity.json`` with the sensitivities per
width; a resumed run and the report read them back.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import ConfigError
from ..hawq import BitSensitivity, rebased
from ..objective import LATENCY_METRIC
from ..quant.sensitivity import hessian_traces, weight_error
from .own_prepare import calibrate_ranges_, float_net, prefixed_quant

HAWQ_METRICS = ("size_kb", "size_bits", "bitops")  # costs that depend on the bits, additively over layers
SENSITIVITY_BATCH = 128


def paired_a_width(b: int, allowed: tuple[int, ...]) -> int:
    """The activation width HAWQ-V3 pairs with weight width ``b``: the narrowest allowed width >= b,
    else the widest."""
    return next((a for a in sorted(allowed) if a >= b), max(allowed))


def bit_sensitivity(kind, prepared, n_batches: int, file_name: str) -> BitSensitivity:
    """Per unit and (w_bits, a_bits) choice: the weights' HAWQ-V3 sensitivity plus, where the space
    searches activation widths, twice the loss increase measured with the unit's input activations
    alone at that width (HAWQ-V3's omega is twice the second-order loss increase, so the two add up
    in one unit); and the change in cost from every unit at its widest choice."""
    ctx, space, metric = prepared.context, prepared.space, prepared.objective.cost
    if metric not in HAWQ_METRICS:
        why = "is measured, not a sum over layers" if metric == LATENCY_METRIC else "does not depend on the bits"
        raise ConfigError(f"objective.cost: {metric} {why}; sensitivity-based bits (hawq, the warm start) need one of "
                          f"{', '.join(HAWQ_METRICS)}")
    units = [key for key in space._governs if space.param(f"{key}.w_bits") is not None]
    if not units and not getattr(space, "quantized", True):
        raise ConfigError("quant.exclude: quant.include and quant.exclude leave no layer quantized; sensitivity-based "
                          "bits (hawq, the warm start) need at least one, e.g. exclude: []")
    if not units:
        raise ConfigError("quant.w_bits: the space searches no weight widths (one width, or policy auto); "
                          "sensitivity-based bits need a choice, e.g. w_bits: [2, 4, 8]")
    widths = tuple(sorted(space.param(f"{units[0]}.w_bits").domain.values))
    a_param = space.param(f"{units[0]}.a_bits")
    a_searched = tuple(sorted(a_param.domain.values)) if a_param is not None and len(a_param.domain.values) > 1 else ()
    a_allowed = space.bits_candidates("a_bits")
    choices = tuple((w, a) for w in widths for a in a_searched) if a_searched else \
        tuple((w, paired_a_width(w, a_allowed)) for w in widths)
    layers = [L for u in units for L in space.governs(f"{u}.w_bits")]
    per_channel = space.constants.get("quant.w_granularity", "channel") == "channel"
    saved = _saved_layers(ctx, file_name)
    traces = _traces(prepared, layers, n_batches, saved)
    act_loss = _activation_losses(prepared, layers, a_searched, n_batches, saved) if a_searched else {}
    net = _float(prepared)
    modules = dict(net.named_modules())
    per_layer = {}
    for L in layers:
        w = modules[L].weight
        mean = abs(traces[L]) / w.numel()
        per_layer[L] = {"trace": traces[L], "n_weights": int(w.numel()),
                        "omega": {str(b): mean * weight_error(w, b, per_channel) for b in widths}}
        if a_searched:
            per_layer[L]["act_loss"] = {str(a): act_loss[L][a] for a in a_searched}

    def unit_omega(u: str, choice: tuple[int, int]) -> float:
        members = space.governs(f"{u}.w_bits")
        w, a = choice
        return sum(per_layer[L]["omega"][str(w)] + 2 * max(0.0, act_loss.get(L, {}).get(a, 0.0)) for L in members)

    omega = {u: {c: unit_omega(u, c) for c in choices} for u in units}
    sens = BitSensitivity(metric, tuple(units), choices, omega, {}, 0.0, space.default_config(), per_layer)
    widest = space.validate(sens.config({u: sens.widest() for u in units}))
    sens = rebased(sens, widest, kind.cost_model(prepared))  # each unit's cost: the change the cost model measures
    path = Path(ctx.results_dir) / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sens.as_json(), indent=1) + "\n")
    return sens


def _float(prepared):
    return float_net(prepared.context).to(prepared.context.device)


def _saved_layers(ctx, file_name: str) -> dict:
    path = Path(ctx.results_dir) / file_name
    return json.loads(path.read_text()).get("layers", {}) if path.is_file() else {}


def _traces(prepared, layers: list[str], n_batches: int, saved: dict) -> dict[str, float]:
    """Hessian traces per layer: from the results folder when an earlier start computed them."""
    if all(L in saved for L in layers):
        return {L: float(saved[L]["trace"]) for L in layers}
    ctx = prepared.context
    return hessian_traces(_float(prepared), _batches(ctx, n_batches), layers, seed=ctx.seed)


def _activation_losses(prepared, layers: list[str], a_widths: tuple[int, ...], n_batches: int,
                       saved: dict) -> dict[str, dict[int, float]]:
    """Per layer and activation width: the float model's loss increase on a few training batches with
    only that layer's input activations fake-quantized (ranges calibrated on those batches)."""
    if all(set(saved.get(L, {}).get("act_loss", {})) == {str(a) for a in a_widths} for L in layers):
        return {L: {a: float(saved[L]["act_loss"][str(a)]) for a in a_widths} for L in layers}
    from ..models.user import OwnNet
    from ..quant import FLOAT_BITS, LayerBits, quantize_

    ctx, space = prepared.context, prepared.space
    quant = space.decode(space.default_config()).quant
    batches = [(x.cpu(), y.cpu()) for x, y in _batches(ctx, n_batches)]
    floats = {L: LayerBits(FLOAT_BITS, FLOAT_BITS) for L in quant.layers}

    def loss_with(bits: dict) -> float:
        own = OwnNet(float_net(ctx))
        quantize_(own, prefixed_quant(replace(quant, layers=bits, logit_bits=FLOAT_BITS)))
        calibrate_ranges_(own, [x for x, _ in batches])
        return _mean_loss(own, batches)

    base = loss_with(floats)
    return {L: {a: loss_with({**floats, L: LayerBits(FLOAT_BITS, a)}) - base for a in a_widths} for L in layers}


def _batches(ctx, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for xb, yb, _ in ctx.train.epoch(SENSITIVITY_BATCH, torch.Generator().manual_seed(ctx.seed)):
        batches.append((xb, yb))
        if len(batches) == n_batches:
            break
    return batches


def keep_choices(space) -> dict[str, list[float]]:
    """Each pruning group's keep ratios (groups with one ratio left out)."""
    out = {}
    for g in space.groups:
        prm = space.param(f"{g.name}.keep")
        if prm is not None and len(prm.domain.values) > 1:
            out[g.name] = sorted((float(v) for v in prm.domain.values), reverse=True)
    return out


@torch.no_grad()
def _mean_loss(net, batches) -> float:
    net.eval()
    losses = [torch.nn.functional.cross_entropy(net(x), y, reduction="sum").item() for x, y in batches]
    return sum(losses) / sum(len(y) for _, y in batches)


def prune_sensitivity(prepared, n_batches: int, file_name: str) -> dict[str, dict[float, float]]:
    """Per pruning group and keep ratio below its largest: the float model's loss increase on a few
    training batches when that group alone is pruned to the ratio (channels chosen by the space's
    importance, as a trial chooses them; BatchNorm statistics recomputed on those batches). Kept in
    the results folder and read back."""
    from ..models.pruning import prune_, taylor_gradients_
    from .training import recalibrate_bn_

    ctx, space = prepared.context, prepared.space
    choices = keep_choices(space)
    path = Path(ctx.results_dir) / file_name
    if path.is_file():
        saved = json.loads(path.read_text())
        if {g: sorted(map(float, v)) for g, v in saved.items()} == {g: sorted(c[1:]) for g, c in choices.items()}:
            return {g: {float(k): float(d) for k, d in v.items()} for g, v in saved.items()}
    batches = [(x.cpu(), y.cpu()) for x, y in _batches(ctx, n_batches)]  # cheap: on the CPU
    base = _mean_loss(float_net(ctx), batches)
    out: dict[str, dict[float, float]] = {}
    for g, ratios in choices.items():
        out[g] = {}
        for k in ratios[1:]:
            net = float_net(ctx)
            if space.importance == "taylor":
                taylor_gradients_(net, batches)
            prune_(net, ctx.example.cpu(), {g: k}, space.groups, space.importance)
            recalibrate_bn_(net, [x for x, _ in batches])  # what a few fine-tuning steps restore first
            out[g][k] = _mean_loss(net, batches) - base
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({g: {str(k): d for k, d in v.items()} for g, v in out.items()}, indent=1) + "\n")
    return out

