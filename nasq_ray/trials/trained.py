"""The ``trained`` trial kind: build the model of a config, train it with fake-quant, measure its
cost, score it.

``run_trial`` is a plain function. It knows nothing of Ray: it calls ``report(metrics, state)``
once per epoch (``state`` is a checkpoint payload the caller may save) and can start from a saved
``state``. The search driver runs it through :class:`TrainedTrial`.

Under a space's policy ``auto`` the trial first chooses its bits: the float model runs on a few
training batches and each layer gets the smallest candidate width whose quantization keeps the
SQNR over the space's threshold (:mod:`nasq_ray.quant.auto_bits`). The chosen bits travel in the
checkpoint's model state (key ``auto_bits``), so that a resumed trial and :func:`load_trained` use
the same ones.

Warm start from the value range (``search.warm_start: N`` / ``--warm-start N``): for each of ``N``
architectures sampled with the run's seed, :func:`calibrate` chooses every layer's smallest width
whose SQNR reaches ``quant.auto_sqnr_db``; those widths are written into the config's own bit
entries (per layer, or the widest layer of a block or of the network, rounded up to a width the
space allows) and the configs are proposed before the searcher's own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import ArrayBatches, DatasetBatches, Split, load_data
from ..data.batches import first_batches
from ..deploy.latency import model_latency_ms, structure_key
from ..errors import ConfigError, DataError, NasqError
from ..models import build_model, cost_of
from ..objective import LATENCY_METRIC, ObjectiveConfig, check_training_cost
from ..quant import LayerBits
from ..quant.auto_bits import bits_from_table, bits_table, choose_bits
from ..space.search_space import SearchSpace
from ..space.specs import AutoBits, TrialSpec
from .base import BITS_METRIC, BaseTrialKind, Prepared, Reporter, failed_report, record_state
from .training import Fitting, accuracy_f1, fit, predict_batches

AUTO_BITS_KEY = "auto_bits"  # model-state entry: the bits policy ``auto`` chose, (layers, 2) ints
CALIBRATION_BATCHES = 4  # training batches policy ``auto`` looks at before it chooses bits
CALIBRATION_BATCH = 64  # samples a latency measurement observes activation ranges on (a latency ignores them)


Batches = ArrayBatches | DatasetBatches


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its config (plain data; the test split is not here).
    ``train`` / ``val``: batches (:mod:`nasq_ray.data.batches`); in-memory ``Split`` s are wrapped."""

    space: SearchSpace
    train: Batches
    val: Batches
    max_epochs: int
    objective: ObjectiveConfig
    seed: int = 0
    threads: int = 1
    device: str = "cpu"

    def __post_init__(self):
        for name in ("train", "val"):
            object.__setattr__(self, name, as_batches(getattr(self, name), self.device))


def as_batches(data: Split | Batches, device: str = "cpu") -> Batches:
    """In-memory ``Split`` s as batches; batches as they are."""
    return ArrayBatches(data, None, device) if isinstance(data, Split) else data


@dataclass(frozen=True)
class TrainedCost:
    """A config's exact cost before training: its network built (untrained) and measured by the
    cost model. None where the bits are chosen at trial time (policy ``auto``) or the config builds
    no network."""

    space: SearchSpace
    metric: str
    latency: str = "model"  # objective.latency, for latency_ms

    def __call__(self, config: dict) -> float | None:
        try:
            spec = self.space.decode(config)
            if spec.auto_bits is not None:
                return None
            with torch.random.fork_rng():
                if self.metric == LATENCY_METRIC:  # the trial measures the same network (cached per structure)
                    x = torch.randn(CALIBRATION_BATCH, *self.space.input_shape, generator=torch.Generator().manual_seed(0))
                    return model_latency_ms(lambda: build_model(spec.arch, spec.quant, seed=0), self.space.input_shape,
                                            x, structure_key(spec.arch, spec.quant), self.latency)
                cost, _ = cost_of(build_model(spec.arch, spec.quant, seed=0), self.space.input_shape)
        except (NasqError, RuntimeError, ValueError):
            return None
        return float(cost.as_metrics()[self.metric])


def run_trial(config: dict, ctx: TrialContext, report: Reporter, state: dict | None = None,
              init=None) -> dict:
    """Train ``config`` for ``ctx.max_epochs`` epochs (or until the caller stops consuming reports).
    ``init``: a callable giving the model's starting weights (else the seeded initialization);
    unused when resuming from ``state``.

    Every epoch reports ``val_acc``, ``val_f1``, ``train_loss``, the cost metrics and ``score``. A
    non-finite loss ends the trial with ``status = "failed"`` and the reason. Returns the last report.
    """
    torch.set_num_threads(ctx.threads)
    space = ctx.space
    spec = space.decode(config)
    if spec.auto_bits is not None:
        spec = saved_bits(spec, state["model"]) if state is not None else calibrate(spec, ctx.train, ctx.seed, ctx.device)
    model = build_model(spec.arch, spec.quant, seed=ctx.seed).to(ctx.device)
    cost, _ = cost_of(model, space.input_shape)
    if state is not None:
        model.load_state_dict(plain_weights(state["model"]))
    elif init is not None:
        model.load_state_dict(init())
    base = {**cost.as_metrics(), BITS_METRIC: bits_summary(spec.quant)}
    if ctx.objective.cost == LATENCY_METRIC:  # measured once per network structure and machine (cached)
        x_cal = next(iter(ctx.train.eval(CALIBRATION_BATCH)))[0]
        base[LATENCY_METRIC] = model_latency_ms(lambda: model, space.input_shape, x_cal,
                                                structure_key(spec.arch, spec.quant), ctx.objective.latency)
    return fit(model, spec.train, ctx.train, ctx.val, Fitting(ctx.max_epochs, ctx.seed, ctx.objective, space.num_classes),
               base, report, state, model_state=lambda: model_state(model, spec))


def calibrate(spec: TrialSpec, train: Batches | Split, seed: int = 0, device: str = "cpu") -> TrialSpec:
    """``spec`` with the bits of policy ``auto`` chosen: the float model (same seed, so the same
    initial weights as the trial's) runs in training mode on the first ``CALIBRATION_BATCHES``
    batches of ``train`` shuffled with a generator seeded by ``seed``; deterministic given (spec,
    data, seed)."""
    auto = spec.auto_bits
    if auto is None:
        return spec
    model = build_model(spec.arch, None, seed=seed).to(device).train()
    batches = first_batches(as_batches(train), CALIBRATION_BATCHES, spec.train.batch_size, seed)
    bits = choose_bits(model, batches, auto.w_candidates, auto.a_candidates, auto.sqnr_db, auto.layers,
                       per_channel=spec.quant.w_granularity == "channel", scheme=spec.quant.a_scheme)
    return with_bits(spec, bits)


def with_bits(spec: TrialSpec, bits: dict[str, LayerBits]) -> TrialSpec:
    """``spec`` with some layers' bits replaced (the layers keep their forward order)."""
    return replace(spec, quant=replace(spec.quant, layers={**spec.quant.layers, **bits}))


def saved_bits(spec: TrialSpec, model_state: dict) -> TrialSpec:
    """``spec`` with the bits policy ``auto`` chose, read back from a checkpoint's model state."""
    if spec.auto_bits is None:
        return spec
    if AUTO_BITS_KEY not in model_state:
        raise NasqError(f"checkpoint: the model state has no '{AUTO_BITS_KEY}' entry: it was not saved by a trial "
                        "of a policy-auto space, so the bits its layers were trained with are unknown")
    return with_bits(spec, bits_from_table(model_state[AUTO_BITS_KEY], spec.auto_bits.layers))


def model_state(model: nn.Module, spec) -> dict:
    """The model's state dict, plus the chosen bits under policy ``auto`` (``spec``: a decoded config)."""
    out = model.state_dict()
    if spec.auto_bits is not None:
        out[AUTO_BITS_KEY] = bits_table(spec.quant.layers, spec.auto_bits.layers)
    return out


def plain_weights(model_state: dict) -> dict:
    """A saved model state without the ``auto_bits`` entry: what ``load_state_dict`` takes."""
    return {k: v for k, v in model_state.items() if k != AUTO_BITS_KEY}


def bits_summary(quant) -> str:
    """Short form of the bits per layer: ``W/A`` per layer in forward order, e.g. ``4/8 2/4 8/8``."""
    parts = [f"{b.w_bits}/{b.a_bits}" for b in quant.layers.values()]
    return " ".join(p.replace("32", "f") for p in parts)


def load_trained(space: SearchSpace, config: dict, model_state: dict, seed: int = 0) -> nn.Module:
    """The trained model of ``config`` from a checkpoint's ``model_state`` (``state["model"]``),
    built with the bits it was trained with (under policy ``auto``: the bits the trial chose)."""
    spec = saved_bits(space.decode(config), model_state)
    model = build_model(spec.arch, spec.quant, seed=seed)
    model.load_state_dict(plain_weights(model_state))
    return model


def evaluate_state(space: SearchSpace, config: dict, model_state: dict, split: Split | Batches,
                   seed: int = 0) -> tuple[float, float]:
    """Accuracy and macro F1 on ``split`` of the trained model saved in ``model_state``."""
    model = load_trained(space, config, model_state, seed)
    return accuracy_f1(*predict_batches(model, as_batches(split).eval()), space.num_classes)


def auto_bits_config(space: SearchSpace, cfg: dict, train: Batches | Split, seed: int = 0) -> dict:
    """``cfg`` with its bit entries set to what calibration on ``train`` chooses (see the module doc)."""
    spec = space.decode(cfg)
    layers = tuple(L for L in spec.quant.layers if space.bits_key(L) is not None)
    auto = AutoBits(space.auto_sqnr_db, space.bits_candidates("w_bits"), space.bits_candidates("a_bits"), layers)
    chosen = calibrate(replace(spec, auto_bits=auto), train, seed).quant.layers
    out = {**cfg, **space.bit_entries({L: chosen[L] for L in layers})}
    return space.validate(out)


def warm_start_configs(space: SearchSpace, n: int, train: Batches | Split, seed: int = 0) -> list[dict]:
    """``n`` sampled architectures with auto-chosen bits (``train``: the training batches),
    distinct configs, deterministic given ``seed``."""
    train = as_batches(train)
    if n <= 0:
        return []
    if space.is_abstract:
        raise ConfigError("search.warm_start: a tabular space trains no network to calibrate; use 0")
    if space.policy == "auto":
        raise ConfigError("search.warm_start: space policy 'auto' already chooses every trial's bits; use 0")
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for _ in range(20 * n):
        cfg = auto_bits_config(space, space.sample(rng), train, seed)
        if cfg not in out:
            out.append(cfg)
        if len(out) == n:
            break
    return out


def evaluate_on_test(records, space: SearchSpace, test: Split | Batches, seed: int) -> None:
    """Fill ``test_acc`` / ``test_f1`` of ``records`` from their last checkpoints."""
    for r in records:
        if r.test_acc is not None or not (r.checkpoint or r.checkpoint_obj):
            continue
        state = record_state(r)
        if state is not None:
            r.test_acc, r.test_f1 = evaluate_state(space, r.config, state["model"], test, seed)


class TrainedTrial(BaseTrialKind):
    """Trials that train the config's network with fake-quant (a generated space's network; the
    data in memory, or a data factory's Datasets through DataLoaders)."""

    name = "trained"

    def prepare(self, cfg, raw_space: dict, space_path: Path, objective: ObjectiveConfig) -> Prepared:
        check_training_cost(objective)
        device = trial_device(cfg)
        data = load_data(cfg.data, device)
        space = SearchSpace(raw_space, data.input_shape, data.num_classes, source=str(space_path))
        if space.is_abstract:
            if space.table or cfg.table.path:
                raise ConfigError(f"trial: '{cfg.trial}' trains networks, and space '{space.name}' is abstract (a "
                                  "'params' space looked up in its table); allowed: table, or leave out --trial")
            raise ConfigError(f"space: '{space.name}' is abstract (a 'params' space) and has no table; give --table")
        ctx = TrialContext(space=space, train=data.train, val=data.val, max_epochs=cfg.search.max_epochs,
                           objective=objective, seed=cfg.search.seed,
                           threads=max(1, int(cfg.resources.cpus_per_trial)), device=device)
        return Prepared(self.name, space, objective, ctx, test=data.test)

    def run(self, config: dict, context: TrialContext, report: Reporter, state: dict | None = None) -> dict:
        try:
            return run_trial(config, context, report, state)
        except DataError as e:  # a bad label or input in a user data factory's batch: reason in trials.csv
            return failed_report(e, context.objective.cost, report)

    def cost_model(self, prepared: Prepared) -> TrainedCost:
        return TrainedCost(prepared.space, prepared.objective.cost, prepared.objective.latency)

    def test_accuracy(self, records, prepared: Prepared) -> None:
        if prepared.test is not None:
            evaluate_on_test(records, prepared.space, prepared.test, prepared.context.seed)

    def trained_model(self, config: dict, state: dict, prepared: Prepared) -> nn.Module:
        return load_trained(prepared.space, config, state["model"], seed=prepared.context.seed)

    def warm_start_configs(self, prepared: Prepared, n: int, seed: int) -> list[dict]:
        return warm_start_configs(prepared.space, n, prepared.context.train, seed)


def trial_device(cfg) -> str:
    """Where trials compute: a GPU when the run gives trials one and torch sees one."""
    return "cuda" if cfg.resources.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"

