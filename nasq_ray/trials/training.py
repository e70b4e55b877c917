"""Quantization-aware training and evaluation on in-memory tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..space.specs import TrainSpec


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
    """One pass over (x, y) in shuffled mini-batches; returns the mean loss (``nan`` if it diverged)."""
    model.train()
    order = torch.randperm(len(y), generator=generator)
    total, n = 0.0, 0
    for start in range(0, len(y), batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2 and n:  # a lone trailing sample breaks BatchNorm's batch statistics
            continue
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if not torch.isfinite(loss):
            return math.nan
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        n += len(idx)
    return total / max(1, n)


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
