"""A latency table (``objective.latency: table``): a network's onnxruntime latency predicted as the sum
of its parts, each part timed once per node type and cached, as nn-Meter predicts from kernels.

The parts are the exported graph cut at its quantized activations (the outputs of QuantizeLinear):
each part holds what onnxruntime fuses into one kernel (DequantizeLinear -> Conv -> QuantizeLinear
becomes QLinearConv; a residual add and its requantization; a run of float layers between two
quantized tensors). A part is timed alone (batch ``LATENCY_BATCH``, one thread, random inputs of its
input types) and keyed by its structure (``structure_key``: operators, attributes, shapes, types;
not tensor names, weights or scales), so a layer met in many networks is timed once. Every timing includes one session run's
fixed overhead, which the whole network pays once: the prediction is the parts' sum less the overhead
of all but one part (the overhead measured as a one-element Identity).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

OVERHEAD_KEY = "part-overhead"


@dataclass(frozen=True)
class Part:
    """One part of an exported graph: a model of its own, keyed by structure."""

    model: object  # onnx.ModelProto
    key: str


def parts(proto, batch: int) -> list[Part]:
    """The exported model ``proto`` cut at its quantized activations, in graph order; dynamic
    dimensions set to ``batch``. ValueError where shape inference leaves a part's input or output
    without a static shape (an operator ONNX cannot infer)."""
    import onnx
    from onnx import helper, shape_inference

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in list(fixed.graph.input) + list(fixed.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = batch
    try:
        model = shape_inference.infer_shapes(fixed, strict_mode=True)
    except shape_inference.InferenceError as e:
        raise ValueError(f"shape inference failed ({(str(e).splitlines() or ['?'])[0]}): the graph cannot be cut into timed "
                         "parts") from None
    graph = model.graph
    info = {v.name: v for v in [*graph.value_info, *graph.input, *graph.output]}
    initializers = {i.name: i for i in graph.initializer}
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    cuts = {out for node in graph.node if node.op_type == "QuantizeLinear" for out in node.output}
    group = list(range(len(graph.node)))  # union-find: nodes joined by a tensor that is not a cut

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i, node in enumerate(graph.node):
        for name in node.input:
            if name in producer and name not in cuts:
                group[root(i)] = root(producer[name])
    members: dict[int, list[int]] = {}
    for i in range(len(graph.node)):
        members.setdefault(root(i), []).append(i)
    graph_outputs = {o.name for o in graph.output}
    consumers: dict[str, set[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, set()).add(i)
    out = []
    for idx in members.values():
        nodes = [graph.node[i] for i in idx]
        inside = set(idx)
        produced = {name for node in nodes for name in node.output}
        inputs = list(dict.fromkeys(name for node in nodes for name in node.input
                                    if name and name not in produced and name not in initializers))
        outputs = [name for node in nodes for name in node.output
                   if consumers.get(name, set()) - inside or name in graph_outputs]
        used = {name for node in nodes for name in node.input}
        missing = [n for n in [*inputs, *outputs] if not _static(info.get(n))]
        if missing:
            raise ValueError(f"no static shape for {missing[0]!r}: the graph cannot be cut into timed parts")
        part_graph = helper.make_graph(nodes, "part", [info[n] for n in inputs], [info[n] for n in outputs],
                                       [initializers[n] for n in used if n in initializers])
        part = helper.make_model(part_graph, opset_imports=model.opset_import)
        part.ir_version = model.ir_version
        out.append(Part(part, structure_key(part)))
    return out


def _static(value) -> bool:
    """Whether a value's type is a tensor of known element type and fully known shape."""
    if value is None or not value.type.HasField("tensor_type"):
        return False
    t = value.type.tensor_type
    return t.elem_type != 0 and t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)


def structure_key(part) -> str:
    """What a part's latency depends on: its operators, attributes, shapes and types, not its tensor
    and node names or its weights and scales; of a zero point only whether it is the type's least
    value or zero (what decides if onnxruntime absorbs a ReLU into the QuantizeLinear after it)."""
    import onnx
    from onnx import numpy_helper

    canon = onnx.ModelProto()
    canon.CopyFrom(part)
    graph = canon.graph
    names: dict[str, str] = {}

    def rename(name: str) -> str:
        return names.setdefault(name, f"t{len(names)}") if name else name

    for value in [*graph.input, *graph.initializer]:
        value.name = rename(value.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for value in graph.output:
        value.name = rename(value.name)
    for i, init in enumerate(graph.initializer):
        array = numpy_helper.to_array(init)
        if array.size == 1 and np.issubdtype(array.dtype, np.integer):
            v = array.item()
            array = np.full_like(array, v if v in (0, np.iinfo(array.dtype).min) else 1)
        else:
            array = np.zeros(array.shape, array.dtype)  # weights and scales: shape and type only
        graph.initializer[i].CopyFrom(numpy_helper.from_array(array, init.name))
    return "part-" + hashlib.sha256(canon.SerializeToString()).hexdigest()[:24]


_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64}  # onnx TensorProto types


def random_feeds(part) -> dict[str, np.ndarray]:
    """Random inputs of the types and shapes ``part`` takes."""
    rng = np.random.default_rng(0)
    feeds = {}
    for value in part.graph.input:
        t = value.type.tensor_type
        dtype = _NUMPY.get(t.elem_type, np.float32)
        shape = [d.dim_value for d in t.shape.dim]
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            feeds[value.name] = rng.integers(max(info.min, -128), min(info.max, 255), shape, endpoint=True).astype(dtype)
    return feeds


def overhead_model():
    """A one-element Identity: what one onnxruntime run costs with (almost) nothing to compute."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "overhead",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


TIMING_ROUNDS = 3  # sessions per part, in rounds over all the parts not yet in the table


def predicted_latency_ms(proto, batch: int, threads: int, lookup, store) -> float:
    """The table's latency (ms) of exported model ``proto``: ``lookup(key)`` gives a cached part time
    (None when absent), ``store(key, ms)`` keeps a new one. Parts not yet in the table are timed in
    ``TIMING_ROUNDS`` rounds, one session each per round, and keep their least median: a part's
    sessions are spread over the rounds, so a second or two in which the machine runs slow (another
    process, the host) does not slow all of them."""
    from .runtime import feeds_latency_ms

    pieces = parts(proto, batch)
    models = {p.key: p.model for p in pieces}
    models[OVERHEAD_KEY] = overhead_model()
    known = {key: lookup(key) for key in models}
    missing = {key: (model.SerializeToString(), random_feeds(model)) for key, model in models.items()
               if known[key] is None}
    for _ in range(TIMING_ROUNDS):
        for key, (data, feeds) in missing.items():
            value = feeds_latency_ms(data, lambda _names, feeds=feeds: feeds, threads, sessions=1,
                                     min_time_s=0.2 / TIMING_ROUNDS)
            known[key] = value if known[key] is None else min(known[key], value)
    for key in missing:
        store(key, known[key])
    total = sum(known[p.key] for p in pieces)
    return max(total - (len(pieces) - 1) * known[OVERHEAD_KEY], 0.0)
