"""Before an own-model run's trials start: the user's float weights (read from ``--weights``, or
trained here for ``model.float_epochs`` and cached in the results folder, so that a resumed run
and ``export`` read them back), the layer shapes the cost model starts from, and the teacher's
outputs on the training set (cached where the training data is in memory and not augmented, so
distillation costs no teacher forward pass per step); and what building a fake-quantized copy of
the model shares (its bits addressed inside :class:`OwnNet`, activation ranges from calibration
batches)."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..cost import LayerShape
from ..errors import ConfigError, DataError
from ..models.builder import _trace
from ..models.user import load_weights_, read_weights
from ..quant import QuantConfig
from .training import accuracy_f1, cosine_lr, predict_batches, train_batches

FLOAT_FILE = "float_model.pt"  # in the results folder: the float model trained when no weights were given
FLOAT_LR = 1e-3  # Adam, cosine decay over model.float_epochs
FLOAT_BATCH = 128


@dataclass(frozen=True)
class FloatModel:
    """The float model's weights and how good it is (validation split)."""

    state: dict
    val_acc: float
    val_f1: float
    source: str  # "weights" (given), "trained" (here, now), "cached" (trained by an earlier start of the run)
    epochs: int = 0
    train_s: float = 0.0


def _cache_key(cfg, input_shape) -> str:
    m, d = cfg.model, cfg.data
    text = repr((m.factory if isinstance(m.factory, str) else getattr(m.factory, "__qualname__", m.factory),
                 sorted(m.args.items()), m.float_epochs, repr(d.name), d.dir, sorted(d.args.items()), d.max_train,
                 d.seed, d.val_fraction, d.test_fraction, d.augment, cfg.search.seed, tuple(input_shape),
                 *(() if d.max_val is None else (('max_val', d.max_val),))))  # keys made before max_val unchanged
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _evaluate(model: nn.Module, val, num_classes: int) -> tuple[float, float]:
    return accuracy_f1(*predict_batches(model, val.eval()), num_classes)


def float_weights(cfg, model: nn.Module, train, val, num_classes: int, input_shape, out_dir: Path,
                  quiet: bool = False) -> FloatModel:
    """Load or make the float weights into ``model`` (see the module doc)."""
    if cfg.model.weights:
        load_weights_(model, read_weights(cfg.model.weights))
        return FloatModel(model.state_dict(), *_evaluate(model, val, num_classes), source="weights")
    key = _cache_key(cfg, input_shape)
    path = out_dir / FLOAT_FILE
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            load_weights_(model, saved["state_dict"], where=f"model: {path}")
            return FloatModel(model.state_dict(), float(saved["val_acc"]), float(saved["val_f1"]), "cached",
                              int(saved["epochs"]), float(saved["train_s"]))
    made = train_float_(model, train, val, num_classes, cfg.model.float_epochs, cfg.search.seed, quiet)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "state_dict": made.state, "val_acc": made.val_acc, "val_f1": made.val_f1,
                "epochs": made.epochs, "train_s": made.train_s}, path)
    return made


PROGRESS_EVERY_S = 30.0  # a float epoch on real data takes minutes: a line at least this often


def train_float_(model: nn.Module, train, val, num_classes: int, epochs: int, seed: int,
                 quiet: bool = False) -> FloatModel:
    """Train ``model`` in float (Adam, cosine schedule, batches of 128), printing each epoch."""
    t0 = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=FLOAT_LR)
    sched = cosine_lr(optimizer, epochs)
    gen = torch.Generator().manual_seed(seed)
    acc = f1 = 0.0
    seen: set[int] = set()
    n_batches = max(1, math.ceil(len(train) / FLOAT_BATCH))

    def watched(batches, epoch: int):
        """The epoch's batches; the first epoch's labels are collected (one class only is bad data),
        and a long epoch says how far it is every PROGRESS_EVERY_S seconds."""
        last = time.perf_counter()
        for i, batch in enumerate(batches, 1):
            if epoch == 1:
                seen.update(torch.unique(batch[1]).tolist())
            yield batch
            if not quiet and time.perf_counter() - last >= PROGRESS_EVERY_S:
                last = time.perf_counter()
                print(f"float model: epoch {epoch}/{epochs}  batch {i}/{n_batches}  "
                      f"({last - t0:.0f} s)", file=sys.stderr, flush=True)

    for epoch in range(1, epochs + 1):
        loss = train_batches(model, optimizer, watched(train.epoch(FLOAT_BATCH, gen), epoch))
        if not math.isfinite(loss):  # every trial would diverge the same way: say so before any starts
            raise ConfigError(f"model: the float model's training loss is {loss} in epoch {epoch}: the model gives "
                              "non-finite outputs on the data (its forward, its initial weights, or inputs too large); "
                              "expected finite logits")
        if epoch == 1 and len(seen) < 2:
            raise DataError(f"data: every training label is {sorted(seen)[0] if seen else 'missing'}; a classifier "
                            f"needs at least 2 classes in its training split (the model gives {num_classes} outputs)")
        sched.step()
        acc, f1 = _evaluate(model, val, num_classes)
        if not quiet:
            print(f"float model: epoch {epoch}/{epochs}  train_loss {loss:.4f}  val_acc {acc:.4f}  "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return FloatModel(model.state_dict(), acc, f1, "trained", epochs, time.perf_counter() - t0)


def float_net(ctx) -> nn.Module:
    """A fresh copy of the user's model (``ctx.factory``) with its float weights (``ctx.float_state``)."""
    from ..models.user import make_model

    net = make_model(ctx.factory)
    net.load_state_dict(ctx.float_state)
    return net


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerShape]:
    """The shape record of every Conv2d / Linear of a (float) user model, named as in the model
    (measured on an input of zeros: a model whose forward fails on it is a ConfigError)."""
    try:
        records = _trace(model, input_shape)[0]
    except Exception as e:  # noqa: BLE001 - the user's forward, on an input it did not see before
        if _raised_in_nasq_ray(e):
            raise  # a bug of ours (the shape hooks), not the user's model: it keeps its traceback
        text = " ".join(str(e).split())[:200]
        raise ConfigError(f"model: fails on an input of zeros of shape {(1, *input_shape)}, on which nasq-ray measures "
                          f"its layers' shapes ({type(e).__name__}: {text}); its forward must take the same layers "
                          "whatever the input's values") from None
    return [LayerShape(**r) for r in records.values()]


def _raised_in_nasq_ray(e: BaseException) -> bool:
    """Whether the innermost frame of ``e``'s traceback is nasq-ray's own code."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(Path(__file__).resolve().parents[1])


def shape_fields(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, dict[str, int]]:
    """Layer -> the fields channel pruning changes (what :func:`nasq_ray.models.pruning.shape_deltas` compares)."""
    from ..cost import SHAPE_FIELDS

    return {s.name: {f: getattr(s, f) for f in SHAPE_FIELDS} for s in layer_shapes(model, input_shape)}


@torch.no_grad()
def teacher_outputs(model: nn.Module, train) -> torch.Tensor:
    """The float model's logits on every training sample, in the split's order."""
    model.eval()
    return torch.cat([model(xb).float().cpu() for xb, _ in train.eval(512)])


def prefixed_quant(quant: QuantConfig) -> QuantConfig:
    """The config's bits addressed inside :class:`OwnNet` (layers under ``net.``)."""
    return replace(quant, layers={f"net.{k}": v for k, v in quant.layers.items()})


def bn_eval_(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def calibrate_ranges_(model: nn.Module, batches) -> None:
    """Observe the activation ranges (and initialise learned steps) on ``batches``: quantizers in
    training mode, BatchNorm keeping the float model's statistics."""
    was = model.training
    model.train()
    bn_eval_(model)
    for xb in batches:
        model(xb)
    model.train(was)
