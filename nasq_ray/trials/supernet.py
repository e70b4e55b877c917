"""Weight sharing: the ``supernet`` trial kind trains one quantization-aware super-network for a
generated space (phase 1 of ``search.mode: oneshot``); the ``subnet`` kind scores one config with
the super-network's weights in seconds (phase 2).

Phase 1, per training step (the sandwich rule): the largest sub-network (every ordered choice at its
top: channels, depth, head widths, bits), the smallest (every one at its bottom) and ``n_random``
random ones, unordered choices (ops, connections) drawn at random in each; each learns from the
labels. (Not from the largest's outputs, BigNAS's in-place distillation: here the largest's ops are
drawn per step too, so it is no steady teacher; on digits_small a config trained under the sandwich
rule for 150 epochs reached 0.565 validation accuracy with distillation, 0.830 from the labels,
0.791 from both halved: BENCHMARKS.md.) Each
sub-network trains at its own bits, with activation ranges kept per layer and width
(:mod:`nasq_ray.models.supernet`). One epoch is one report; the payload (weights, ranges,
optimizer, random states) resumes the phase after an interruption.

Phase 2, one trial: the config's sub-network with the shared weights copied in, its BatchNorm
statistics and activation ranges recalibrated on ``RECALIBRATION_BATCHES`` training batches (OFA's
``set_running_statistics``; a shrunk sub-network's statistics are not the widest one's), its
classifier head refitted on the same batches (``search.head_steps`` full-batch Adam steps on the
frozen trunk's features; 0 keeps the shared head), then evaluated on the validation split, or on
``search.subnet_val_samples`` of it drawn once (2,000 by default; phase 1's epoch reports score on the
same; OFA and APQ score sub-networks on a 10,000-image subset of ImageNet: on Fashion-MNIST the whole
split, 12,000 images, was most of a trial's 11-18 s). Phase 3 and test accuracies use whole splits. The head
refit is there because one shared head serves every trunk: on digits_small the shared head of the
averaged-pooling configs scored 0.21 on average where the same trunks under a refitted head scored
0.49 and trained alone 0.79, which ordered the configs by their pooling first (Kendall tau 0.46 ->
0.59 against stand-alone training: BENCHMARKS.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import first_labelled_batches
from ..errors import ConfigError, NasqError
from ..models import cost_of
from ..models.supernet import SuperNet, sandwich
from ..objective import ObjectiveConfig, score
from ..space.search_space import SearchSpace
from .base import BITS_METRIC, Reporter, failed_metrics, failed_report, trial_status
from .trained import Batches, TrainedCost, TrainedTrial, TrialContext, bits_summary, run_trial
from .training import accuracy_f1, cosine_lr, predict_batches, recalibrate_bn_

SUPERNET_FILE = "supernet.pt"  # in the results folder: the trained super-network (phase 1's last state)
RECALIBRATION_BATCHES = 20
HEAD_STEPS = 100  # full-batch Adam steps refitting a sub-network's head on the recalibration batches
HEAD_LR = 0.01
LEARNED_QUANTIZERS = {"w_quantizer": ("lsq",), "a_quantizer": ("lsq", "pact")}


def check_shareable(space: SearchSpace) -> None:
    """Refuse what a super-network cannot share: tables, policy ``auto``, learned quantizer steps."""
    if space.is_abstract:
        raise ConfigError(f"search.mode: oneshot trains a super-network of a generated space; '{space.name}' is a "
                          "table's space (no network to share weights in); use a space with stages")
    if space.policy == "auto":
        raise ConfigError("search.mode: oneshot draws every layer's bits per step; quant.policy auto chooses them per "
                          "trial from calibration; use policy layer, block or uniform")
    for key, learned in LEARNED_QUANTIZERS.items():
        values = space.constants.get(f"quant.{key}")
        prm = space.param(f"quant.{key}")
        values = prm.domain.values if prm is not None else (values,)
        if any(v in learned for v in values):
            raise ConfigError(f"quant.{key}: a super-network keeps running ranges per layer and width; learned steps "
                              f"({', '.join(learned)}) are not shared across widths; use "
                              f"{'minmax' if key == 'w_quantizer' else 'ema'}")


@dataclass(frozen=True)
class SupernetContext:
    space: SearchSpace
    train: Batches
    val: Batches
    epochs: int
    objective: ObjectiveConfig
    lr: float = 3e-3
    batch_size: int = 64
    n_random: int = 2
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    head_steps: int = HEAD_STEPS  # the epoch's report scores sub-networks as phase 2 does


def _refit_head_(model: nn.Module, batches, steps: int, lr: float = HEAD_LR) -> None:
    """Refit ``model.head`` (its Linear layers, fake-quantized at their bits) on ``batches`` of
    (input, label) with the rest frozen: the head's inputs computed once in evaluation mode, then
    ``steps`` full-batch Adam steps on the cross-entropy of the logits ``model`` would produce."""
    if steps <= 0:
        return
    feats, labels = [], []
    hook = model.head.register_forward_hook(lambda mod, args, out: feats.append(args[0].detach()))
    model.eval()
    try:
        with torch.no_grad():
            for xb, yb in batches:
                model(xb)
                labels.append(yb)
    finally:
        hook.remove()
    x, y = torch.cat(feats), torch.cat(labels)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=lr)
    model.head.train()  # the head's activation ranges follow its new weights
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model.logit_quant(model.head(x)), y).backward()
            optimizer.step()
    model.eval()


def calibrate_inherited_(model: nn.Module, batches, head_steps: int) -> None:
    """What a sub-network taken out of the super-network gets before it is scored: BatchNorm
    statistics and activation ranges from ``batches`` of (input, label), then its head refitted on
    them (``head_steps``)."""
    recalibrate_bn_(model, [xb for xb, _ in batches])
    _refit_head_(model, batches, head_steps)


def sandwich_step(net: nn.Module, space: SearchSpace, xb: torch.Tensor, yb: torch.Tensor, configs: list[dict]
                  ) -> torch.Tensor:
    """The loss of one training step (one backward: a data-parallel wrapper syncs once): the sum of
    every sub-network's cross-entropy; returned: the first's (the largest's)."""
    big, *others = net(xb, [space.decode(cfg) for cfg in configs])
    loss = F.cross_entropy(big, yb)
    (loss + sum(F.cross_entropy(out, yb) for out in others)).backward()
    return loss.detach()


def shard(batches, rank: int, world: int):
    """Worker ``rank`` of ``world``'s share of an epoch's batches: every world-th, the same number
    for every worker (they step together)."""
    if world == 1:
        yield from batches
        return
    mine, k = [], 0
    for k, batch in enumerate(batches):
        if k % world == rank:
            mine.append(batch)
    yield from mine[: (k + 1) // world]


def train_epoch(net: nn.Module, optimizer, space: SearchSpace, ctx: SupernetContext, gen: torch.Generator,
                rng: np.random.Generator, rank: int = 0, world: int = 1) -> float:
    """One epoch of the sandwich rule; the mean loss of the largest sub-network."""
    net.train()
    total, n = 0.0, 0
    for xb, yb, _ in shard(ctx.train.epoch(ctx.batch_size, gen), rank, world):
        configs = sandwich(space, rng, ctx.n_random)  # the same on every worker: the same seed
        optimizer.zero_grad(set_to_none=True)
        loss = sandwich_step(net, space, xb.to(ctx.device), yb.to(ctx.device), configs)
        optimizer.step()
        total, n = total + float(loss) * len(yb), n + len(yb)
    return total / max(1, n)


def epoch_metrics(net: SuperNet, ctx: SupernetContext, epoch: int, loss: float, t0: float) -> dict:
    """What an epoch reports: the validation accuracy of the largest and the smallest sub-network
    (scored as phase 2 scores them: recalibrated, the head refitted), the largest's cost, the loss."""
    space = ctx.space
    if not math.isfinite(loss):
        return failed_metrics(f"non-finite training loss at epoch {epoch}", ctx.objective.cost, epoch, train_loss=loss)
    probe = sandwich(space, np.random.default_rng(ctx.seed + 1), n_random=0)
    cal = first_labelled_batches(ctx.train, RECALIBRATION_BATCHES, ctx.batch_size, ctx.seed)
    subs = [net.subnet(space.decode(cfg)) for cfg in probe]
    accs = []
    for sub in subs:
        calibrate_inherited_(sub, cal, ctx.head_steps)
        accs.append(accuracy_f1(*predict_batches(sub, ctx.val.eval()), space.num_classes)[0])
    cost, _ = cost_of(subs[0], space.input_shape)  # the largest's: its structure and bits
    return {"epoch": epoch, "val_acc": accs[0], "val_acc_smallest": accs[1], "train_loss": loss,
            "epoch_time_s": time.perf_counter() - t0, **cost.as_metrics(), "score": accs[0],
            "status": trial_status({"epoch": epoch}, False, ctx.epochs, ended=False), "fail_reason": ""}


class Phase1:
    """The super-network, its optimizer, schedule and random states: what phase 1 saves and resumes."""

    def __init__(self, ctx: SupernetContext, state: dict | None = None):
        self.net = SuperNet(ctx.space, ctx.seed).to(ctx.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=ctx.lr)
        self.sched = cosine_lr(self.optimizer, ctx.epochs)
        self.gen = torch.Generator().manual_seed(ctx.seed)
        self.rng = np.random.default_rng(ctx.seed)
        self.first = 1
        if state is not None:
            self.net.load_shared(state["supernet"])  # in place: the optimizer keeps its parameters
            self.optimizer.load_state_dict(state["optimizer"])  # after the schedule's construction (it resets lr)
            self.sched.load_state_dict(state["lr_sched"])
            self.gen.set_state(state["generator"])
            self.rng.bit_generator.state = state["rng"]
            self.first = state["epoch"] + 1

    def state(self, epoch: int) -> dict:
        return {"supernet": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_sched": self.sched.state_dict(), "generator": self.gen.get_state(),
                "rng": self.rng.bit_generator.state, "epoch": epoch}


def run_supernet(config: dict, ctx: SupernetContext, report: Reporter, state: dict | None = None) -> dict:
    """Train the super-network for ``ctx.epochs`` (see the module doc), one report per epoch."""
    torch.set_num_threads(ctx.threads)
    run = Phase1(ctx, state)
    metrics: dict = {}
    for epoch in range(run.first, ctx.epochs + 1):
        t0 = time.perf_counter()
        loss = train_epoch(run.net, run.optimizer, ctx.space, ctx, run.gen, run.rng)
        run.sched.step()
        metrics = epoch_metrics(run.net, ctx, epoch, loss, t0)
        if metrics["status"] == "failed":
            report(metrics, None)
            return metrics
        report(metrics, run.state(epoch))
    return metrics


@dataclass(frozen=True)
class SubnetContext:
    space: SearchSpace
    train: Batches
    val: Batches
    objective: ObjectiveConfig
    supernet_path: str
    recalibration: int = RECALIBRATION_BATCHES
    head_steps: int = HEAD_STEPS
    batch_size: int = 64
    seed: int = 0
    threads: int = 1
    device: str = "cpu"


_LOADED: dict[tuple, SuperNet] = {}  # per process: the super-network of a results folder


def load_supernet(space: SearchSpace, path: str, device: str = "cpu") -> SuperNet:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search.mode: oneshot: no trained super-network at '{p}' (phase 1 did not finish)")
    key = (str(p), p.stat().st_mtime_ns, device)
    if key not in _LOADED:
        net = SuperNet(space, 0).to(device)
        net.load_shared(torch.load(p, map_location=device, weights_only=True))
        _LOADED.clear()
        _LOADED[key] = net.eval()
    return _LOADED[key]


def inherited_subnet(ctx, config: dict) -> nn.Module:
    """``config``'s sub-network with the super-network's weights, recalibrated (BatchNorm statistics
    and activation ranges on the first training batches), its head refitted on them (``ctx.head_steps``)."""
    space = ctx.space
    net = load_supernet(space, ctx.supernet_path, ctx.device)
    sub = net.subnet(space.decode(config))
    calibrate_inherited_(sub, first_labelled_batches(ctx.train, ctx.recalibration, ctx.batch_size, ctx.seed),
                         ctx.head_steps)
    return sub


def run_subnet(config: dict, ctx: SubnetContext, report: Reporter, state: dict | None = None) -> dict:
    """One phase-2 trial: the inherited, recalibrated sub-network evaluated (one report); a config
    that cannot be scored (not in the space, no super-network) is reported ``failed``."""
    torch.set_num_threads(ctx.threads)
    t0 = time.perf_counter()
    try:
        spec = ctx.space.decode(config)
        sub = inherited_subnet(ctx, config)
    except (NasqError, RuntimeError, ValueError) as e:
        return failed_report(e, ctx.objective.cost, report)
    acc, f1 = accuracy_f1(*predict_batches(sub, ctx.val.eval()), ctx.space.num_classes)
    cost, _ = cost_of(sub, ctx.space.input_shape)
    base = {**cost.as_metrics(), BITS_METRIC: bits_summary(spec.quant)}
    acc_metric = acc if ctx.objective.acc == "val_acc" else f1
    metrics = {**base, "epoch": 1, "val_acc": acc, "val_f1": f1, "epoch_time_s": time.perf_counter() - t0,
               "score": score(acc_metric, base[ctx.objective.cost], ctx.objective), "status": "complete",
               "fail_reason": ""}
    report(metrics, None)
    return metrics


def scoring_split(val, cfg):
    """The validation samples phases 1 and 2 score sub-networks on: ``search.subnet_val_samples`` of
    ``val`` drawn with the run's seed, the same in both phases."""
    return val.subset(cfg.search.subnet_val_samples, cfg.search.seed)


class SupernetTrial(TrainedTrial):
    """Phase 1 of ``search.mode: oneshot``: one trial training the super-network."""

    name = "supernet"

    def prepare(self, cfg, raw_space, space_path, objective):
        if "params" in raw_space or "table" in raw_space:
            raise ConfigError(f"search.mode: oneshot trains a super-network of a generated space; "
                              f"'{Path(space_path).stem}' is a table's space (no network to share weights in); "
                              "use a space with stages")
        prep = super().prepare(cfg, raw_space, space_path, objective)
        check_shareable(prep.space)
        t = prep.context
        space = prep.space
        fixed = phase1_training(space)  # the values phases 2 and 3 hold too
        lr = fixed.get("train.lr", _middle(space, "train.lr"))
        batch = int(fixed.get("train.batch_size", _middle(space, "train.batch_size")))
        ctx = SupernetContext(space, t.train, scoring_split(t.val, cfg), cfg.search.max_epochs, objective, lr=lr, batch_size=batch,
                              seed=cfg.search.seed, threads=t.threads, device=t.device, head_steps=cfg.search.head_steps)
        return type(prep)(self.name, space, objective, ctx, test=prep.test)

    def run(self, config, context, report, state=None):
        return run_supernet(config, context, report, state)

    def cost_model(self, prepared):
        return None

    def test_accuracy(self, records, prepared) -> None:
        pass

    def trained_model(self, config, state, prepared):
        raise ConfigError("export: a super-network holds every sub-network; export the one-shot run's front instead "
                          "(python -m nasq_ray.export OUT/NAME)")


def _middle(space: SearchSpace, name: str) -> float:
    """A training value for the super-network: a fixed one, or the (geometric) middle of its choices."""
    from ..space.domains import Choice, Float, Int, Ordinal

    prm = space.param(name)
    if prm is None:
        return space.constants[name]
    d = prm.domain
    if isinstance(d, (Choice, Ordinal)):
        return sorted(d.values)[len(d.values) // 2]
    if isinstance(d, (Float, Int)):
        return math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2
    return d


def phase1_training(space: SearchSpace) -> dict:
    """The searched ``train.*`` values phase 1 trains with: Adam without weight decay where the space
    allows them (phase 1's optimizer), everything else at the (geometric) middle of its choices."""
    from ..space.domains import Int

    phase1 = {"train.optimizer": "adam", "train.weight_decay": 0.0}
    out = {}
    for prm in space.params:
        if prm.name.startswith("train."):
            values = getattr(prm.domain, "values", ())
            v = phase1[prm.name] if phase1.get(prm.name, ()) in values else _middle(space, prm.name)
            out[prm.name] = int(round(v)) if isinstance(prm.domain, Int) else v
    return out


def pinned_training_space(raw_space: dict, space: SearchSpace) -> SearchSpace:
    """``space`` with its training hyperparameters fixed at phase 1's (``phase1_training``): a
    sub-network's one-shot score does not depend on them, so phases 2 and 3 do not search them."""
    fixed = phase1_training(space)
    if not fixed:
        return space
    train = dict(raw_space.get("train") or {})
    train.update({name.split(".", 1)[1]: v for name, v in fixed.items()})
    return SearchSpace({**raw_space, "train": train}, space.input_shape, space.num_classes, source=space.source)


class SubnetTrial(TrainedTrial):
    """Phase 2 of ``search.mode: oneshot``: a config scored with the super-network's weights."""

    name = "subnet"
    model_in_checkpoint = False  # the config's sub-network with the super-network's weights

    def prepare(self, cfg, raw_space, space_path, objective):
        prep = super().prepare(cfg, raw_space, space_path, objective)
        check_shareable(prep.space)
        space = pinned_training_space(raw_space, prep.space)
        t = prep.context
        ctx = SubnetContext(space, t.train, scoring_split(t.val, cfg), objective, str(cfg.out_dir / SUPERNET_FILE),
                            head_steps=cfg.search.head_steps, seed=cfg.search.seed, threads=t.threads, device=t.device)
        return type(prep)(self.name, space, objective, ctx, test=prep.test)

    def run(self, config, context, report, state=None):
        return run_subnet(config, context, report, state)

    def cost_model(self, prepared):
        return TrainedCost(prepared.space, prepared.objective.cost, prepared.objective.latency)

    def test_accuracy(self, records, prepared) -> None:
        if prepared.test is None:
            return
        for r in records:
            if r.test_acc is None:
                sub = inherited_subnet(prepared.context, r.config)
                r.test_acc, r.test_f1 = accuracy_f1(*predict_batches(sub, prepared.test.eval()),
                                                    prepared.space.num_classes)

    def trained_model(self, config, state, prepared):
        return inherited_subnet(prepared.context, config)

    def warm_start_configs(self, prepared, n, seed):
        raise ConfigError("search.warm_start: one-shot trials inherit their weights; there is nothing to calibrate "
                          "first; use 0")


@dataclass(frozen=True)
class FinetuneContext(TrialContext):
    """A trained trial that starts from the super-network's weights (``supernet_path``)."""

    supernet_path: str = ""
    recalibration: int = RECALIBRATION_BATCHES
    head_steps: int = HEAD_STEPS
    batch_size: int = 64
    front_path: str = ""  # the one-shot front (pareto.csv) whose configs phase 3 fine-tunes


class FinetuneTrial(TrainedTrial):
    """Phase 3 of ``search.mode: oneshot``: QAT fine-tuning from the inherited weights."""

    name = "finetune"

    def prepare(self, cfg, raw_space, space_path, objective):
        prep = super().prepare(cfg, raw_space, space_path, objective)
        check_shareable(prep.space)
        space = pinned_training_space(raw_space, prep.space)
        t = prep.context
        parent = cfg.out_dir.parent
        ctx = FinetuneContext(space, t.train, t.val, t.max_epochs, t.objective, t.seed, t.threads, t.device,
                              supernet_path=str(parent / SUPERNET_FILE), head_steps=cfg.search.head_steps,
                              front_path=str(parent / "pareto.csv"))
        return type(prep)(self.name, space, objective, ctx, test=prep.test)

    def run(self, config, context, report, state=None):
        return run_trial(config, context, report, state,
                         init=lambda: inherited_subnet(context, config).state_dict())

    def warm_start_configs(self, prepared, n, seed):
        """The one-shot front's configs, best one-shot accuracy first (at most ``n``)."""
        import csv

        from ..results.files import typed_config

        path = Path(prepared.context.front_path)
        if not path.is_file():
            raise ConfigError(f"search.mode: oneshot: phase 3 found no one-shot front at '{path}'")
        with open(path) as f:
            rows = sorted(csv.DictReader(f), key=lambda r: -float(r["val_acc"] or 0))
        return [prepared.space.validate(typed_config(prepared.space, r)) for r in rows[:n]]
