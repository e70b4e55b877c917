"""Quantization-aware training and evaluation: on in-memory tensors, or on any batches (``data.batches``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..objective import ObjectiveConfig, score
from ..space.specs import TrainSpec
from .base import Reporter, failed_metrics, trial_status


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    params = model.parameters()
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, nesterov=spec.momentum > 0)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def cosine_lr(optimizer: torch.optim.Optimizer, total_epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay over the full budget, so that a trial's first epochs are the same whether or not
    a scheduler stops it early."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_epochs))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator) -> float:
    """One pass over in-memory (x, y) in shuffled mini-batches; returns the mean loss (``nan`` if it
    diverged). A lone trailing sample is skipped: it breaks BatchNorm's batch statistics."""
    from ..data.batches import ArrayBatches

    return train_batches(model, optimizer, ArrayBatches.of_tensors(x, y).epoch(batch_size, generator))


def train_batches(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[tuple],
                  loss_fn: Callable | None = None) -> float:
    """One pass over ``batches`` of ``(x, y, idx)``; ``loss_fn(logits, y, x, idx)`` (default:
    cross-entropy). Returns the mean loss (``nan`` as soon as it is not finite)."""
    model.train()
    total, n = 0.0, 0
    for x, y, idx in batches:
        logits = model(x)
        loss = F.cross_entropy(logits, y) if loss_fn is None else loss_fn(logits, y, x, idx)
        if not torch.isfinite(loss):
            return math.nan
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(y)
        n += len(y)
    return total / max(1, n)


def distill_loss(logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor, alpha: float,
                 temperature: float) -> torch.Tensor:
    """``(1 - alpha) CE(logits, y) + alpha T^2 KL(softmax(teacher / T) || softmax(logits / T))``
    (Hinton et al.; the T^2 keeps the soft term's gradients on the scale of the hard term's)."""
    ce = F.cross_entropy(logits, y)
    if alpha == 0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True,
                  reduction="batchmean")
    return (1 - alpha) * ce + alpha * t * t * kl


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes and labels over ``batches`` of (x, y), the model in evaluation mode."""
    model.eval()
    preds, labels = [], []
    for x, y in batches:
        preds.append(model(x).argmax(dim=1).cpu())
        labels.append(y.cpu())
    return torch.cat(preds), torch.cat(labels)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])


def accuracy_f1(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """Accuracy and macro F1 (classes absent from both prediction and truth are skipped)."""
    acc = float((pred == y).float().mean()) if len(y) else 0.0
    conf = torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    tp = conf.diag().double()
    support = conf.sum(dim=1).double()
    predicted = conf.sum(dim=0).double()
    present = (support + predicted) > 0
    f1 = torch.where(present, 2 * tp / (support + predicted).clamp_min(1), torch.zeros_like(tp))
    return acc, float(f1[present].mean()) if present.any() else 0.0


@dataclass(frozen=True)
class Fitting:
    """What a trial's training loop needs besides its model and data."""

    max_epochs: int
    seed: int
    objective: ObjectiveConfig
    num_classes: int


def fit(model: nn.Module, train_spec: TrainSpec, train, val, how: Fitting, base: dict, report: Reporter,
        state: dict | None = None, model_state: Callable[[], dict] | None = None, extra_state: dict | None = None,
        loss_fn: Callable | None = None) -> dict:
    """QAT of ``model`` (its weights already restored from ``state`` by the caller) on ``train``
    batches up to ``how.max_epochs``, continuing after ``state``'s epoch; every epoch reports
    ``base`` (cost metrics) with ``val_acc``, ``val_f1``, ``train_loss``, ``score`` and ``status``,
    and a payload (model, optimizer, schedule and shuffling state, ``extra_state``) to resume from.
    A non-finite loss ends the trial ``failed``, with the reason. Returns the last report."""
    optimizer = make_optimizer(model, train_spec)
    lr_sched = cosine_lr(optimizer, how.max_epochs)
    gen = torch.Generator().manual_seed(how.seed)
    first_epoch = 1
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_sched"])
        gen.set_state(state["generator"])
        first_epoch = state["epoch"] + 1
        apply_hyperparameters(optimizer, lr_sched, train_spec)
    objective = how.objective
    metrics: dict = {}
    for epoch in range(first_epoch, how.max_epochs + 1):
        t0 = time.perf_counter()
        loss = train_batches(model, optimizer, train.epoch(train_spec.batch_size, gen), loss_fn)
        lr_sched.step()
        if not math.isfinite(loss):
            metrics = {**failed_metrics(f"non-finite training loss at epoch {epoch} (diverged)", objective.cost, epoch,
                                        val_f1=0.0, train_loss=loss), **base}  # the network's cost is known
            report(metrics, None)
            return metrics
        acc, f1 = accuracy_f1(*predict_batches(model, val.eval()), how.num_classes)
        acc_metric = acc if objective.acc == "val_acc" else f1
        metrics = {
            **base, "epoch": epoch, "val_acc": acc, "val_f1": f1, "train_loss": loss,
            "epoch_time_s": time.perf_counter() - t0,
            "score": score(acc_metric, base[objective.cost], objective),
            "status": trial_status({"epoch": epoch}, False, how.max_epochs, ended=False), "fail_reason": "",
        }
        report(metrics, {"model": model_state() if model_state else model.state_dict(),
                         "optimizer": optimizer.state_dict(), "lr_sched": lr_sched.state_dict(),
                         "generator": gen.get_state(), "epoch": epoch, **(extra_state or {})})
    return metrics


def apply_hyperparameters(optimizer, lr_sched, train: TrainSpec) -> None:
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


def recalibrate_bn_(model: nn.Module, batches) -> None:
    """BatchNorm statistics and activation ranges of ``model`` from ``batches`` of inputs
    (cumulative averages; weights unchanged; Once-for-All's ``set_running_statistics``)."""
    from ..quant import ActFakeQuant

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
        elif isinstance(m, ActFakeQuant):
            m.initialized.fill_(False)
            m.__dict__["_range"] = m.__dict__["_plan"] = None
    model.train()
    with torch.no_grad():
        for xb in batches:
            model(xb)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    model.eval()
