"""What onnxruntime does with an exported model: which kernels its layers run on after the graph
optimizer, and how long the model takes.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass

import numpy as np

INTEGER_KERNELS = frozenset({"QLinearConv", "QGemm", "ConvInteger", "MatMulInteger", "QLinearMatMul",
                             "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})
FLOAT_KERNELS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "NhwcFusedConv"})
_ORT_SUFFIX = re.compile(r"(_\d+)(_token_\d+)*$")  # our node names are '<layer>_<n>'; ORT appends '_token_<k>'


@dataclass(frozen=True)
class LayerKernel:
    layer: str  # the module name of the Conv2d / Linear
    kernel: str  # the operator onnxruntime runs it with, after graph optimization
    reason: str  # why it is not an integer kernel ("" when it is)

    @property
    def integer(self) -> bool:
        return self.kernel in INTEGER_KERNELS


def session(model_bytes: bytes, threads: int = 1, optimized_path: str | None = None, optimize: bool = True):
    """An onnxruntime CPU session: ``threads`` intra-op threads, quiet; ``optimize=False`` runs the graph
    as written; ``optimized_path``: where onnxruntime saves the graph it optimized."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def optimized_graph(proto):
    """The graph onnxruntime runs (CPU, all optimizations) for ``proto``."""
    import os
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        session(proto.SerializeToString(), optimized_path=path)
        return onnx.load(path).graph


def layer_kernels(proto, reasons: dict[str, str]) -> list[LayerKernel]:
    """Per Conv2d / Linear layer of an exported model (``reasons`` from ``onnx.integer_plan``, in
    forward order): the kernel onnxruntime runs it with and, for a float one, why."""
    kernels = {}
    for node in optimized_graph(proto).node:
        if node.op_type in INTEGER_KERNELS | FLOAT_KERNELS:
            kernels[_ORT_SUFFIX.sub("", node.name)] = node.op_type
    out = []
    for layer, why in reasons.items():
        kernel = kernels.get(layer, "?")
        if kernel in INTEGER_KERNELS:
            why = ""
        elif not why:
            why = "written for integer kernels, not fused by onnxruntime"
        out.append(LayerKernel(layer, kernel, why))
    return out


def kernel_summary(kernels: list[LayerKernel]) -> str:
    """'7 of 12 Conv/Gemm on integer kernels; float: s1.b0.op.conv (output feeds add, ...), ...'"""
    n_int = sum(k.integer for k in kernels)
    text = f"{n_int} of {len(kernels)} Conv/Gemm on integer kernels"
    floats = [f"{k.layer} ({k.reason})" for k in kernels if not k.integer]
    return text + ("; float: " + ", ".join(floats) if floats else "")


def latency_ms(model_bytes: bytes, input_shape: tuple[int, ...], batch: int, threads: int = 1,
               sessions: int = 3, repeats: int = 10, min_time_s: float = 0.2) -> float:
    """Wall time (ms) of one onnxruntime run at ``batch`` on random input, ``threads`` intra-op threads
    (``feeds_latency_ms``; on the reference machine the least of three sessions' medians repeats
    within +-10% for 92% of models, one median for 72%: BENCHMARKS.md)."""
    x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    return feeds_latency_ms(model_bytes, lambda names: {names[0]: x}, threads, sessions, repeats, min_time_s)


def feeds_latency_ms(model_bytes: bytes, feeds, threads: int = 1, sessions: int = 3, repeats: int = 10,
                     min_time_s: float = 0.2) -> float:
    """Wall time (ms) of one onnxruntime run on ``feeds(input_names)`` (a dict of arrays): in each of
    ``sessions`` fresh sessions the median of ``repeats`` timings (each averaging enough runs to share
    ``min_time_s`` out), and the least of those medians. (Two sessions of one model differ by up to
    50%: allocation and alignment.)"""
    medians = []
    for _ in range(sessions):
        sess = session(model_bytes, threads)
        inputs = feeds([i.name for i in sess.get_inputs()])
        for _ in range(3):  # warm-up: first runs allocate
            sess.run(None, inputs)
        t0 = time.perf_counter()
        sess.run(None, inputs)
        once = max(time.perf_counter() - t0, 1e-6)
        per_timing = max(1, int(min_time_s / sessions / repeats / once))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(per_timing):
                sess.run(None, inputs)
            times.append((time.perf_counter() - t0) / per_timing * 1e3)
        medians.append(statistics.median(times))
    return min(medians)
