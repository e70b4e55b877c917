"""The trial: build the model of a config, train it with fake-quant, measure its cost, score it.

``run_trial`` is a plain function. It knows nothing of Ray: it calls ``report(metrics, state)``
once per epoch (``state`` is a checkpoint payload the caller may save) and can start from a saved
``state``. ``tune.py`` wraps it for Ray Tune.

Under a space's policy ``auto`` the trial first chooses its bits: the float model runs on a few
training batches and each layer gets the smallest candidate width whose quantization keeps the
SQNR over the space's threshold (:mod:`nasq_ray.quant.auto_bits`). The chosen bits travel in the
checkpoint's model state (key ``auto_bits``), so that a resumed trial and :func:`load_trained` use
the same ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from .data import Split
from .errors import NasqError
from .models import build_model, measure_cost
from .objective import ObjectiveConfig, score
from .quant import LayerBits
from .quant.auto_bits import bits_from_table, bits_table, choose_bits
from .space import SearchSpace, TrialSpec
from .train import accuracy_f1, cosine_lr, make_optimizer, predict, train_epoch

Reporter = Callable[[dict, "dict | None"], None]
AUTO_BITS_KEY = "auto_bits"  # model-state entry: the bits policy ``auto`` chose, (layers, 2) ints
CALIBRATION_BATCHES = 4  # training batches policy ``auto`` looks at before it chooses bits


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its config (plain data; the test split is not here)."""

    space: SearchSpace
    train: Split
    val: Split
    max_epochs: int
    objective: ObjectiveConfig
    seed: int = 0
    threads: int = 1
    device: str = "cpu"


def _tensors(split: Split, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(split.x)).to(device), torch.from_numpy(split.y).to(device)


def run_trial(config: dict, ctx: TrialContext, report: Reporter, state: dict | None = None) -> dict:
    """Train ``config`` for ``ctx.max_epochs`` epochs (or until the caller stops consuming reports).

    Every epoch reports ``val_acc``, ``val_f1``, ``train_loss``, the cost metrics and ``score``. A
    non-finite loss ends the trial with ``status = "failed"`` and the reason. Returns the last report.
    """
    torch.set_num_threads(ctx.threads)
    space = ctx.space
    xtr, ytr = _tensors(ctx.train, ctx.device)
    xval, yval = _tensors(ctx.val, ctx.device)
    spec = space.decode(config)
    if spec.auto_bits is not None:
        spec = saved_bits(spec, state["model"]) if state is not None else calibrate(spec, xtr, ctx.seed, ctx.device)
    model = build_model(spec.arch, spec.quant, seed=ctx.seed).to(ctx.device)
    cost, _ = measure_cost(model, space.input_shape)
    optimizer = make_optimizer(model, spec.train)
    lr_sched = cosine_lr(optimizer, ctx.max_epochs)
    gen = torch.Generator().manual_seed(ctx.seed)
    first_epoch = 1
    if state is not None:
        model.load_state_dict(_weights(state["model"]))
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_sched"])
        gen.set_state(state["generator"])
        first_epoch = state["epoch"] + 1
        apply_hyperparameters(optimizer, lr_sched, spec.train)
    base = {**cost.as_metrics(), "w_bits_str": bits_summary(spec.quant)}
    metrics: dict = {}
    for epoch in range(first_epoch, ctx.max_epochs + 1):
        t0 = time.perf_counter()
        loss = train_epoch(model, optimizer, xtr, ytr, spec.train.batch_size, gen)
        lr_sched.step()
        if not math.isfinite(loss):
            metrics = {**base, "epoch": epoch, "val_acc": 0.0, "val_f1": 0.0, "train_loss": loss,
                       "score": -math.inf, "status": "failed",
                       "fail_reason": f"non-finite training loss at epoch {epoch} (diverged)"}
            report(metrics, None)
            return metrics
        acc, f1 = accuracy_f1(predict(model, xval), yval, space.num_classes)
        acc_metric = acc if ctx.objective.acc == "val_acc" else f1
        metrics = {
            **base, "epoch": epoch, "val_acc": acc, "val_f1": f1, "train_loss": loss,
            "epoch_time_s": time.perf_counter() - t0,
            "score": score(acc_metric, base[ctx.objective.cost], ctx.objective),
            "status": "complete" if epoch == ctx.max_epochs else "running", "fail_reason": "",
        }
        report(metrics, {"model": _model_state(model, spec), "optimizer": optimizer.state_dict(),
                         "lr_sched": lr_sched.state_dict(), "generator": gen.get_state(), "epoch": epoch})
    return metrics


def calibrate(spec: TrialSpec, x: torch.Tensor, seed: int = 0, device: str = "cpu") -> TrialSpec:
    """``spec`` with the bits of policy ``auto`` chosen: the float model (same seed, so the same
    initial weights as the trial's) runs in training mode on ``CALIBRATION_BATCHES`` batches of
    ``x`` drawn with a generator seeded by ``seed``; deterministic given (spec, x, seed)."""
    auto = spec.auto_bits
    if auto is None:
        return spec
    model = build_model(spec.arch, None, seed=seed).to(device).train()
    bs = spec.train.batch_size
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: CALIBRATION_BATCHES * bs]
    batches = (x[idx[k:k + bs].to(x.device)] for k in range(0, len(idx), bs))
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


def _model_state(model: nn.Module, spec: TrialSpec) -> dict:
    """The model's state dict, plus the chosen bits under policy ``auto``."""
    out = model.state_dict()
    if spec.auto_bits is not None:
        out[AUTO_BITS_KEY] = bits_table(spec.quant.layers, spec.auto_bits.layers)
    return out


def _weights(model_state: dict) -> dict:
    """A saved model state without the ``auto_bits`` entry: what ``load_state_dict`` takes."""
    return {k: v for k, v in model_state.items() if k != AUTO_BITS_KEY}


def apply_hyperparameters(optimizer, lr_sched, train) -> None:
    """Make a restored optimizer use ``train``'s values (PBT may have perturbed them since the
    checkpoint): learning rate (continuing the cosine schedule), weight decay, momentum."""
    lr_sched.base_lrs = [train.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = train.lr
        group["weight_decay"] = train.weight_decay
        if "momentum" in group:
            group["momentum"] = train.momentum
    for group, lr in zip(optimizer.param_groups, lr_sched._get_closed_form_lr()):
        group["lr"] = lr


def bits_summary(quant) -> str:
    """Short form of the bits per layer: ``W/A`` per layer in forward order, e.g. ``4/8 2/4 8/8``."""
    parts = [f"{b.w_bits}/{b.a_bits}" for b in quant.layers.values()]
    return " ".join(p.replace("32", "f") for p in parts)


def load_trained(space: SearchSpace, config: dict, model_state: dict, seed: int = 0) -> nn.Module:
    """The trained model of ``config`` from a checkpoint's ``model_state`` (``state["model"]``),
    built with the bits it was trained with (under policy ``auto``: the bits the trial chose)."""
    spec = saved_bits(space.decode(config), model_state)
    model = build_model(spec.arch, spec.quant, seed=seed)
    model.load_state_dict(_weights(model_state))
    return model


def evaluate_state(space: SearchSpace, config: dict, model_state: dict, split: Split, seed: int = 0) -> tuple[float, float]:
    """Accuracy and macro F1 on ``split`` of the trained model saved in ``model_state``."""
    model = load_trained(space, config, model_state, seed)
    x, y = _tensors(split, "cpu")
    return accuracy_f1(predict(model, x), y, space.num_classes)
