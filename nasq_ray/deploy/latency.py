"""Latency as a cost (``objective.cost: latency_ms``): the onnxruntime latency of a network as nasq-ray
exports it (integer kernels where its layers qualify), measured on this machine.

One measurement per network structure and machine: batch ``LATENCY_BATCH``, one thread, the least
of the medians of three sessions (``runtime.latency_ms``). The network is built, its activation ranges observed on one
batch (a latency does not depend on the ranges, only on the graph), exported with ``to_onnx`` and
timed. Results are cached in ``$NASQ_RAY_CACHE/latency/<node type>/``, keyed by everything that
shapes the exported graph (the decoded architecture, input shape included, and bits), so a
network is timed once per node type (CPU model, onnxruntime version): a repeated config, a resumed
trial and the cost model the searchers ask before a trial all read the same number.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import re
import tempfile
from collections.abc import Callable

import torch
from torch import nn

from ..cache import cache_dir
LATENCY_BATCH = 1
LATENCY_THREADS = 1


def node_type() -> str:
    """What the latency depends on besides the network: the CPU model, the architecture and the
    onnxruntime version (a cluster keeps one table per node type)."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1] for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{cpu.strip()}-{platform.machine()}-ort{onnxruntime.__version__}-t{LATENCY_THREADS}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def structure_key(arch, quant) -> str:
    """A network's key in the latency cache: what shapes its exported graph (its ``ArchSpec`` and
    ``QuantConfig``: layers, bits, quantizer options; not its training)."""
    text = f"{arch!r}|{quant!r}|{LATENCY_BATCH}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _path(key: str):
    return cache_dir() / "latency" / node_type() / f"{key}.json"


def cached_latency_ms(key: str) -> float | None:
    try:
        return float(json.loads(_path(key).read_text())["latency_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(key: str, value: float) -> None:
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"latency_ms": value, "batch": LATENCY_BATCH, "threads": LATENCY_THREADS}, f)
        os.replace(tmp, path)  # atomic: concurrent trials never read half a file
    except OSError:
        pass  # no writable cache: measured again next time


def model_latency_ms(build: Callable[[], nn.Module], input_shape: tuple[int, ...], calibration: torch.Tensor,
                     key: str | None = None, source: str = "model") -> float:
    """The exported latency (ms) of the network ``build()`` returns (called only when ``key``, its
    ``structure_key``, is not cached); ``calibration``: a batch its activation ranges are observed on
    (on a copy: the model is not changed). ``source``: ``model`` times the whole exported network,
    ``table`` sums its parts from the latency table (``latency_table``; a graph it cannot cut, with
    shapes ONNX cannot infer, is timed whole)."""
    from .latency_table import predicted_latency_ms
    from .onnx import to_onnx
    from .runtime import latency_ms

    if key is not None and source != "model":
        key = f"{source}-{key}"
    if key is not None and (hit := cached_latency_ms(key)) is not None:
        return hit
    net = copy.deepcopy(build()).cpu()
    with torch.no_grad():
        net.train()(calibration.cpu())
    proto = to_onnx(net.eval(), input_shape)
    value = None
    if source == "table":
        try:
            value = predicted_latency_ms(proto, LATENCY_BATCH, LATENCY_THREADS, cached_latency_ms, _store)
        except ValueError:
            pass  # a graph the table cannot cut (shapes ONNX cannot infer): the whole network is timed
    if value is None:
        value = latency_ms(proto.SerializeToString(), input_shape, LATENCY_BATCH, threads=LATENCY_THREADS)
    if key is not None:
        _store(key, value)
    return value


KERNEL_CHOICE_BATCHES = (1, 64)
KERNEL_CHOICE_MIN_GAIN = 0.05  # a layer goes back to a float kernel only for more than this (measurement noise)


def faster_float_layers(model, input_shape: tuple[int, ...], threads: int = 1) -> frozenset[str]:
    """The layers qualifying for integer kernels that the exported ``model`` runs faster with on float
    kernels, measured on this machine: from every qualifying layer on integer kernels, each layer in
    forward order is tried on a float kernel and kept so when the whole model's time (onnxruntime,
    ``threads``, the mean of its ratios at batch 1 and 64) falls by more than
    ``KERNEL_CHOICE_MIN_GAIN``. Whole models, not layers alone: moving between integer and float
    costs a QuantizeLinear / DequantizeLinear and can undo a fused merge, which a layer timed alone
    does not show (per-layer timings chose worse models than all-integer)."""
    from .onnx import integer_plan, to_onnx
    from .runtime import latency_ms

    def times(float_layers):
        data = to_onnx(model, input_shape, float_layers=float_layers).SerializeToString()
        return [latency_ms(data, input_shape, b, threads) for b in KERNEL_CHOICE_BATCHES]

    chosen: frozenset[str] = frozenset()
    best = times(chosen)
    for layer in [name for name, why in integer_plan(model).items() if not why]:
        trial = times(chosen | {layer})
        if sum(t / b for t, b in zip(trial, best)) / len(best) < 1.0 - KERNEL_CHOICE_MIN_GAIN:
            chosen, best = chosen | {layer}, trial
    return chosen
