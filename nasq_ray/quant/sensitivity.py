"""Per-layer quantization sensitivity, HAWQ-V3's recipe: the average Hessian trace of the loss with
respect to a layer's weights (Hutchinson's estimator) times the squared quantization error of the
weights at each candidate width,

    omega(layer, b) = Tr(H_layer) / n_layer  *  || Q_b(W_layer) - W_layer ||^2,

a second-order estimate of how much the loss grows when the layer's weights are quantized to ``b``
bits. The widths are then chosen by an integer program (:mod:`nasq_ray.hawq`).

Hutchinson: ``Tr(H) = E[v^T H v]`` for Rademacher vectors ``v``; ``H v`` is a second backward pass
(``torch.autograd.grad`` with ``create_graph``), for all layers at once. The model runs in
evaluation mode (BatchNorm uses its running statistics) on a few training batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .fake_quant import fake_quant_weight, is_float


def hessian_traces(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], layers: Sequence[str],
                   probes: int = 8, seed: int = 0) -> dict[str, float]:
    """``Tr(H)`` of the cross-entropy loss with respect to each layer's weight (by module path),
    averaged over ``batches`` and ``probes`` Rademacher vectors per batch."""
    modules = dict(model.named_modules())
    weights = [modules[name].weight for name in layers]
    gen = torch.Generator().manual_seed(seed)
    totals = torch.zeros(len(layers), dtype=torch.float64)
    n = 0
    was = model.training
    model.eval()
    try:
        for xb, yb in batches:
            with torch.enable_grad():
                loss = F.cross_entropy(model(xb), yb)
                grads = torch.autograd.grad(loss, weights, create_graph=True)
                for _ in range(probes):
                    vs = [torch.randint(0, 2, w.shape, generator=gen).to(w.dtype).mul_(2).sub_(1) for w in weights]
                    hvs = torch.autograd.grad(grads, weights, grad_outputs=vs, retain_graph=True)
                    totals += torch.tensor([float((h * v).sum()) for h, v in zip(hvs, vs)], dtype=torch.float64)
                    n += 1
    finally:
        model.train(was)
    return {name: float(t) / max(1, n) for name, t in zip(layers, totals)}


@torch.no_grad()
def weight_error(weight: torch.Tensor, bits: int, per_channel: bool = True) -> float:
    """``|| Q_b(W) - W ||^2`` of the symmetric max-abs fake-quant (per output channel or per tensor)."""
    if is_float(bits):
        return 0.0
    return float((fake_quant_weight(weight.detach(), bits, per_channel) - weight.detach()).double().square().sum())


def layer_sensitivities(model: nn.Module, batches, layers: Sequence[str], widths: Sequence[int],
                        per_channel: bool = True, probes: int = 8, seed: int = 0) -> dict[str, dict]:
    """Per layer: ``trace`` (Tr(H)), ``n_weights``, and ``omega`` (width -> sensitivity) for ``widths``."""
    traces = hessian_traces(model, batches, layers, probes, seed)
    modules = dict(model.named_modules())
    out = {}
    for name in layers:
        w = modules[name].weight
        mean_trace = abs(traces[name]) / w.numel()  # a noisy estimate may dip below 0: its size is the curvature
        out[name] = {"trace": traces[name], "n_weights": int(w.numel()),
                     "omega": {int(b): mean_trace * weight_error(w, b, per_channel) for b in widths}}
    return out
