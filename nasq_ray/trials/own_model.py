"""The ``own_model`` trial kind: a user's own network, pruned, quantized and distilled.

One trial: the float weights -> prune to the config's keep ratios (torch-pruning, channels
physically removed) -> ``quantize_`` to the config's bits -> activation ranges from a few
calibration batches (the post-training-quantization start) -> QAT fine-tuning for ``max_epochs``
(the scheduler's resource), with the float model as the teacher -> the usual metrics. The channels
a trial removed (its pruning plan) are saved with its checkpoints, so a resumed trial and the
export rebuild the same network. The cost model counts the pruned, quantized network exactly
before anything is built (layer shapes, per-group coupling, bits).

Before the search (:meth:`OwnModelTrial.prepare`): the model and data are checked, the float
weights read or trained, the space derived from the model (:class:`ModelSpace`). Besides the
front, every run reports the float model and post-training quantization at uniform 8/8 and 4/4
(:meth:`OwnModelTrial.reference_rows`); per-layer sensitivities (HAWQ-V3) give ``--searcher hawq``
and the warm start for every other searcher (:meth:`OwnModelTrial.sensitivity`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..cost import LayerShape, layer_cost, logit_quant_size_bits, pruned_shapes, summarize, with_bits
from ..data import load_data
from ..errors import ConfigError, DataError, NasqError
from ..models import cost_of
from ..models.pruning import PrunePlan, apply_plan_, keep_count, prune_, prune_groups, shape_deltas, taylor_gradients_
from ..models.user import OwnNet, check_model_on_input, float_only_layers, make_model, trace_model
from ..objective import LATENCY_METRIC, ObjectiveConfig, check_training_cost
from ..quant import LayerBits, quantize_
from ..quant.auto_bits import bits_from_table, choose_bits
from ..results.console import counted
from ..space.model_space import ModelSpace
from ..space.specs import ModelTrialSpec
from ..user_code import UserCallable
from .base import BITS_METRIC, BaseTrialKind, Prepared, Reporter, failed_report, record_state
from .own_prepare import (bn_eval_, calibrate_ranges_, float_net, float_weights, layer_shapes, prefixed_quant,
                          shape_fields, teacher_outputs)
from .own_sensitivity import bit_sensitivity
from .trained import AUTO_BITS_KEY, Batches, bits_summary, model_state, plain_weights, trial_device
from .training import Fitting, accuracy_f1, distill_loss, fit, predict_batches

CALIBRATION_BATCHES = 8  # training batches the activation ranges (and policy auto's bits, Taylor importance) see
SENSITIVITY_BATCHES = 4  # training batches the Hessian traces are estimated on
SENSITIVITY_FILE = "sensitivity.json"
PRUNE_SENSITIVITY_FILE = "prune_sensitivity.json"
REFERENCE_BITS = ((8, 8), (4, 4))  # post-training quantization shown beside every own-model front


@dataclass(frozen=True)
class OwnContext:
    """What an own-model trial needs besides its config (plain, picklable data)."""

    space: ModelSpace
    factory: UserCallable
    float_state: dict
    example: torch.Tensor  # two input samples: what the dependency graph is traced on
    train: Batches
    val: Batches
    max_epochs: int
    objective: ObjectiveConfig
    shapes: tuple[LayerShape, ...]  # the float model's layers
    deltas: dict  # group -> layer -> field -> change per channel removed
    teacher_logits: torch.Tensor | None = None  # on the training split, in its order (in-memory data only)
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    results_dir: str = ""
    float_val_acc: float = 0.0


def build_student(ctx: OwnContext, spec: ModelTrialSpec, state: dict | None = None) -> tuple[OwnNet, PrunePlan, ModelTrialSpec]:
    """The config's network: pruned (by ``state``'s plan, else by importance), its bits chosen (policy
    ``auto``: from ``state``, else from the value range), fake-quantized; not yet calibrated."""
    space = ctx.space
    net = float_net(ctx)
    if state is not None:
        plan = state["plan"]
        apply_plan_(net, ctx.example, plan)
    else:
        if space.importance == "taylor" and any(k < 1 for k in spec.keep.values()):
            taylor_gradients_(net, ((x, y) for x, y, _ in _calibration(ctx, spec.train.batch_size, with_labels=True)))
        plan = prune_(net, ctx.example, spec.keep, space.groups, space.importance)
    if spec.auto_bits is not None:
        spec = replace(spec, quant=replace(spec.quant, layers={**spec.quant.layers, **_auto_bits(ctx, spec, net, state)}))
    own = OwnNet(net)
    quantize_(own, prefixed_quant(spec.quant))
    return own.to(ctx.device), plan, spec


def _calibration(ctx: OwnContext, batch_size: int, with_labels: bool = False):
    batches = []
    for xb, yb, idx in ctx.train.epoch(batch_size, torch.Generator().manual_seed(ctx.seed)):
        batches.append((xb, yb, idx) if with_labels else xb)
        if len(batches) == CALIBRATION_BATCHES:
            break
    return batches


def _auto_bits(ctx: OwnContext, spec: ModelTrialSpec, net: nn.Module, state: dict | None) -> dict[str, LayerBits]:
    auto = spec.auto_bits
    if state is not None:
        return bits_from_table(state["model"][AUTO_BITS_KEY], auto.layers)
    was = net.training
    net.train()
    bn_eval_(net)
    try:
        return choose_bits(net, _calibration(ctx, spec.train.batch_size), auto.w_candidates, auto.a_candidates,
                           auto.sqnr_db, auto.layers, per_channel=spec.quant.w_granularity == "channel",
                           scheme=spec.quant.a_scheme)
    finally:
        net.train(was)


def _loss(ctx: OwnContext, spec: ModelTrialSpec):
    """The training loss of a config: cross-entropy, or distillation from the float model (its
    logits cached per sample where the data allows, else computed per batch)."""
    d = spec.distill
    if d.alpha == 0:
        return None
    teacher = None if ctx.teacher_logits is not None else float_net(ctx).to(ctx.device).eval()

    def loss(logits, y, x, idx):
        if teacher is None:
            t = ctx.teacher_logits[idx].to(logits.device)
        else:
            with torch.no_grad():
                t = teacher(x)
        return distill_loss(logits, y, t, d.alpha, d.temperature)

    return loss


def run_own_trial(config: dict, ctx: OwnContext, report: Reporter, state: dict | None = None) -> dict:
    """Prune, quantize, calibrate and fine-tune ``config``'s network (see the module doc)."""
    torch.set_num_threads(ctx.threads)
    spec = ctx.space.decode(config)
    own, plan, spec = build_student(ctx, spec, state)
    cost, _ = cost_of(own, ctx.space.input_shape)
    if state is None:
        calibrate_ranges_(own, _calibration(ctx, spec.train.batch_size))
    else:
        own.load_state_dict(plain_weights(state["model"]))
    base = {**cost.as_metrics(), BITS_METRIC: bits_summary(spec.quant)}
    if ctx.objective.cost == LATENCY_METRIC:
        from ..deploy.latency import model_latency_ms

        base[LATENCY_METRIC] = model_latency_ms(lambda: own, ctx.space.input_shape, ctx.example, structure_key(spec),
                                                 ctx.objective.latency)
    return fit(own, spec.train, ctx.train, ctx.val, Fitting(ctx.max_epochs, ctx.seed, ctx.objective,
                                                             ctx.space.num_classes),
               base, report, state, model_state=lambda: model_state(own, spec), extra_state={"plan": plan},
               loss_fn=_loss(ctx, spec))


def structure_key(spec: ModelTrialSpec) -> str:
    """The latency cache's key of a pruned, quantized user model (keep ratios and bits)."""
    import hashlib

    return hashlib.sha256(repr((sorted(spec.keep.items()), spec.quant)).encode()).hexdigest()[:24]


def load_student(ctx: OwnContext, config: dict, state: dict) -> OwnNet:
    """The trained network a trial's saved ``state`` holds."""
    own, _, _ = build_student(ctx, ctx.space.decode(config), state)
    own.load_state_dict(plain_weights(state["model"]))
    return own.eval()


def ptq_student(ctx: OwnContext, config: dict) -> OwnNet:
    """Post-training quantization of ``config``: pruned and quantized, ranges calibrated, no training."""
    spec = ctx.space.decode(config)
    own, _, _ = build_student(ctx, spec)
    calibrate_ranges_(own, _calibration(ctx, spec.train.batch_size))
    return own.eval()


@dataclass(frozen=True)
class OwnModelCost:
    """A config's exact cost before anything is built: the float layers' shapes, shrunk by the
    channels each group loses (the coupling measured once on the model), at the config's bits."""

    space: ModelSpace
    shapes: tuple[LayerShape, ...]
    deltas: dict
    metric: str

    def summary(self, config: dict):
        spec = self.space.decode(config)
        if spec.auto_bits is not None:
            return None
        removed = {g.name: g.channels - keep_count(g.channels, spec.keep[g.name]) for g in self.space.groups}
        shapes = pruned_shapes(self.shapes, self.deltas, removed)
        q = spec.quant
        shapes = with_bits(shapes, {L: (b.w_bits, b.a_bits) for L, b in q.layers.items()},
                           per_channel=q.w_granularity == "channel", static=q.a_mode == "static")
        logit = 32 if q.a_mode == "dynamic" else q.logit_bits
        return summarize([layer_cost(s) for s in shapes], extra_size_bits=logit_quant_size_bits(logit))

    def __call__(self, config: dict) -> float | None:
        if self.metric == LATENCY_METRIC:
            return None
        try:
            made = self.summary(config)
        except NasqError:
            return None
        return None if made is None else float(made.as_metrics()[self.metric])


class OwnModelTrial(BaseTrialKind):
    """Trials that prune, quantize and distil a user's own model (``--model``)."""

    name = "own_model"

    def derive_space(self, cfg, raw_space: dict, space_path: Path):
        """The user's model and data, checked against each other, and the space derived from the
        model (no float weights needed), and its layer shapes: ``(factory, model, data, example, space, shapes)``."""
        if cfg.table.path:
            raise ConfigError("table: a user model's trials train; a table run looks metrics up: give one or the other")
        if cfg.model.factory is None:
            raise ConfigError("trial: own_model trials need a model; give --model MODULE:CALLABLE")
        factory = UserCallable.of(cfg.model.factory, cfg.model.args, "model.factory")
        model = make_model(factory, seed=cfg.search.seed)  # the initial weights of the float training
        data = load_data(cfg.data, trial_device(cfg), num_classes=0)
        example = next(iter(data.train.eval(2)))[0].cpu()
        outputs = check_model_on_input(model, example, data.num_classes or None)
        if not data.num_classes:  # the factory did not say: the model's outputs are the classes its labels must fit
            data = data.with_classes(outputs, "the model's outputs")
        layers, _ = trace_model(model, example, cfg.model.trace)
        shapes = tuple(layer_shapes(model, data.input_shape))  # what the cost model measures: refused here, before any training
        floats = float_only_layers(model)
        if floats:
            print(f"warning: model: {len(floats)} layer(s) stay float and outside the cost, as nasq-ray quantizes and "
                  f"prunes Conv2d and Linear layers only: {', '.join(floats[:4])}"
                  + (f" and {len(floats) - 4} more" if len(floats) > 4 else ""), file=sys.stderr)
        groups = []
        if _prunes(raw_space):
            groups = prune_groups(model, example, {L.name for L in layers if L.last}, [L.name for L in layers])
        space = ModelSpace(raw_space, layers, groups, data.input_shape, data.num_classes,
                           source=str(space_path))
        return factory, model, data, example, space, shapes

    def space(self, cfg, raw_space: dict, space_path: Path) -> ModelSpace:
        return self.derive_space(cfg, raw_space, space_path)[4]

    def prepare(self, cfg, raw_space: dict, space_path: Path, objective: ObjectiveConfig) -> Prepared:
        check_training_cost(objective)
        factory, model, data, example, space, shapes = self.derive_space(cfg, raw_space, space_path)
        made = float_weights(cfg, model, data.train, data.val, space.num_classes, data.input_shape, cfg.out_dir,
                             cfg.quiet)
        if not cfg.quiet and made.source != "cached":
            how = "read from --weights" if made.source == "weights" else f"trained {counted(made.epochs, 'epoch')} in {made.train_s:.0f} s"
            print(f"float model {factory.label}: {how}; val_acc {made.val_acc:.4f}", flush=True,
                  file=sys.stdout if cfg.log_format == "text" else sys.stderr)
        deltas = shape_deltas(model, example, space.groups, lambda m: shape_fields(m, data.input_shape))
        teacher = None
        if _distils(space) and data.in_memory and not data.train.augment:
            teacher = teacher_outputs(model, data.train)
        ctx = OwnContext(space=space, factory=factory, float_state=made.state, example=example, train=data.train,
                         val=data.val, max_epochs=cfg.search.max_epochs, objective=objective,
                         shapes=shapes, deltas=deltas, teacher_logits=teacher,
                         seed=cfg.search.seed, threads=max(1, int(cfg.resources.cpus_per_trial)),
                         device=trial_device(cfg), results_dir=str(cfg.out_dir), float_val_acc=made.val_acc)
        return Prepared(self.name, space, objective, ctx, test=data.test)

    def check(self, cfg, prepared: Prepared) -> None:
        if cfg.search.searcher == "dnas":
            raise ConfigError("searcher: dnas relaxes a generated space's ops; a user model has none to relax; use "
                              "tpe, ehvi, hawq, ...")
        if cfg.search.warm_start and prepared.space.policy == "auto":
            raise ConfigError("search.warm_start: quant.policy auto already chooses every trial's bits; use 0")

    def run(self, config: dict, context: OwnContext, report: Reporter, state: dict | None = None) -> dict:
        try:
            return run_own_trial(config, context, report, state)
        except (RuntimeError, DataError) as e:  # e.g. a label beyond the model's outputs: the search goes on
            return failed_report(e, context.objective.cost, report)

    def cost_model(self, prepared: Prepared) -> OwnModelCost:
        ctx = prepared.context
        return OwnModelCost(ctx.space, ctx.shapes, ctx.deltas, prepared.objective.cost)

    def test_accuracy(self, records, prepared: Prepared) -> None:
        if prepared.test is None:
            return
        for r in records:
            if r.test_acc is not None or not (r.checkpoint or r.checkpoint_obj):
                continue
            state = record_state(r)
            if state is not None:
                r.test_acc, r.test_f1 = self._evaluate(load_student(prepared.context, r.config, state), prepared.test,
                                                       prepared.space.num_classes)

    @staticmethod
    def _evaluate(model: nn.Module, batches, num_classes: int) -> tuple[float, float]:
        return accuracy_f1(*predict_batches(model, batches.eval()), num_classes)

    def trained_model(self, config: dict, state: dict, prepared: Prepared) -> nn.Module:
        return load_student(prepared.context, config, state)

    def reference_rows(self, prepared: Prepared) -> list[dict]:
        """The float model and post-training quantization at uniform 8/8 and 4/4 (no QAT): what the
        search is measured against."""
        ctx, space = prepared.context, prepared.space
        cost = self.cost_model(prepared)
        rows = []
        float_net_ = float_net(ctx).to(ctx.device)
        float_cost = summarize([layer_cost(s) for s in ctx.shapes])
        rows.append(self._row("float", float_net_, float_cost, "", prepared))
        for w, a in REFERENCE_BITS:
            if space.policy == "auto":
                break
            config = space.uniform_config(w, a)
            spec = space.decode(config)
            rows.append(self._row(f"ptq {w}/{a}", ptq_student(ctx, config), cost.summary(config),
                                  bits_summary(spec.quant), prepared))
        return rows

    def _row(self, name: str, model: nn.Module, cost, bits: str, prepared: Prepared) -> dict:
        n = prepared.space.num_classes
        val_acc, val_f1 = self._evaluate(model, prepared.context.val, n)
        test_acc = self._evaluate(model, prepared.test, n)[0] if prepared.test is not None else None
        return {"name": name, "val_acc": val_acc, "val_f1": val_f1, "test_acc": test_acc, **cost.as_metrics(),
                "bits": bits}

    def sensitivity(self, prepared: Prepared):
        """Per-layer Hessian sensitivities (HAWQ-V3) as a :class:`nasq_ray.hawq.BitSensitivity` for
        the objective's cost; the per-layer traces are saved in the results folder (and reused)."""
        return bit_sensitivity(self, prepared, SENSITIVITY_BATCHES, SENSITIVITY_FILE)

    def warm_start_configs(self, prepared: Prepared, n: int, seed: int) -> list[dict]:
        """``n`` configs proposed first: HAWQ-V3's widths at budgets spread along the cost axis and,
        where the space prunes, up to ``n // 2`` pruned ones (:meth:`pruned_starts`)."""
        from ..hawq import hawq_configs, spread_budgets

        sens = self.sensitivity(prepared)
        pruned = self.pruned_starts(prepared, sens, n // 2)
        n_bits = n - len(pruned)
        unpruned = [cfg for _, cfg in hawq_configs(sens, spread_budgets(sens, n_bits, prepared.objective.max_cost))]
        return unpruned[:n_bits] + pruned

    def pruned_starts(self, prepared: Prepared, sens, n: int) -> list[dict]:
        """Up to ``n`` pruned configs, at 1/2, 1/4, 1/8, ... of the float model's MACs: keep ratios
        planned from each group's measured loss increase (:func:`nasq_ray.prune_budget.plan_keeps`),
        then the integer program's widths for the pruned network at the cost of its every layer at
        the middle weight width and the widest activation width."""
        from ..hawq import hawq_configs, rebased
        from ..prune_budget import halving_budgets, plan_keeps
        from .own_sensitivity import keep_choices, prune_sensitivity

        space = prepared.space
        choices = keep_choices(space)
        if n <= 0 or not choices:
            return []
        macs_model = replace(self.cost_model(prepared), metric="macs")
        base = sens.base

        def with_keeps(keeps: dict) -> dict:
            return {**base, **{f"{g}.keep": k for g, k in keeps.items()}}

        def macs(keeps: dict) -> float:
            return macs_model(with_keeps(keeps))

        loss = prune_sensitivity(prepared, SENSITIVITY_BATCHES, PRUNE_SENSITIVITY_FILE)
        lowest = {g: min(cs) for g, cs in choices.items()}
        middle = sens.widths[len(sens.widths) // 2]
        at_middle = max(c for c in sens.choices if c[0] == middle)  # the widest activations beside it
        budget_cost = self.cost_model(prepared)
        out = []
        for budget in halving_budgets(macs({}), macs(lowest), n):
            keeps = plan_keeps(choices, loss, macs, budget)
            if keeps is None:
                continue
            pruned = rebased(sens, with_keeps(keeps), budget_cost)
            bits_budget = budget_cost(space.validate(pruned.config({u: at_middle for u in pruned.units})))
            if prepared.objective.max_cost is not None:
                bits_budget = min(bits_budget, prepared.objective.max_cost)
            made = [space.validate(cfg) for _, cfg in hawq_configs(pruned, [bits_budget])]
            if made and made[0] not in out:
                out.append(made[0])
        return out


def _prunes(raw_space: dict) -> bool:
    """Whether the space prunes (a keep ratio below 1: a choice, a range or one value); a malformed
    ``prune`` section says yes, so that the space parser names what is wrong with it."""
    prune = raw_space.get("prune") or {}
    if not isinstance(prune, dict):
        return True
    keep = prune.get("keep", 1.0)
    values = keep if isinstance(keep, list) else list(keep.values()) if isinstance(keep, dict) else [keep]
    return any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 1 for v in values)


def _distils(space: ModelSpace) -> bool:
    prm = space.param("distill.alpha")
    values = prm.domain.values if prm is not None and hasattr(prm.domain, "values") else None
    if prm is not None and values is None:
        return True  # a range
    return any(v > 0 for v in (values or [space.constants.get("distill.alpha", 0.0)]))
