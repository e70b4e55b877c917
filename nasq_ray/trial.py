"""The trial: build the model of a config, train it with fake-quant, measure its cost, score it.

``run_trial`` is a plain function. It knows nothing of Ray: it calls ``report(metrics, state)``
once per epoch (``state`` is a checkpoint payload the caller may save) and can start from a saved
``state``. ``tune.py`` wraps it for Ray Tune.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .data import Split
from .models import build_model, measure_cost
from .objective import ObjectiveConfig, score
from .space import SearchSpace
from .train import accuracy_f1, cosine_lr, make_optimizer, predict, train_epoch

Reporter = Callable[[dict, "dict | None"], None]


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
    spec = space.decode(config)
    model = build_model(spec.arch, spec.quant, seed=ctx.seed).to(ctx.device)
    cost, _ = measure_cost(model, space.input_shape)
    optimizer = make_optimizer(model, spec.train)
    lr_sched = cosine_lr(optimizer, ctx.max_epochs)
    gen = torch.Generator().manual_seed(ctx.seed)
    first_epoch = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_sched"])
        gen.set_state(state["generator"])
        first_epoch = state["epoch"] + 1
        apply_hyperparameters(optimizer, lr_sched, spec.train)
    xtr, ytr = _tensors(ctx.train, ctx.device)
    xval, yval = _tensors(ctx.val, ctx.device)
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
        report(metrics, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "lr_sched": lr_sched.state_dict(), "generator": gen.get_state(), "epoch": epoch})
    return metrics


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


def evaluate_state(space: SearchSpace, config: dict, model_state: dict, split: Split, seed: int = 0) -> tuple[float, float]:
    """Accuracy and macro F1 on ``split`` of the trained model saved in ``model_state``."""
    spec = space.decode(config)
    model = build_model(spec.arch, spec.quant, seed=seed)
    model.load_state_dict(model_state)
    x, y = _tensors(split, "cpu")
    return accuracy_f1(predict(model, x), y, space.num_classes)
