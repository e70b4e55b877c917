"""The latency table: an exported network cut into parts at its quantized activations, each part timed
once per structure and machine, the network's latency predicted as their sum."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from nasq_ray.deploy import latency, latency_table, runtime
from nasq_ray.deploy.onnx import to_onnx
from nasq_ray.models import build_model
from nasq_ray.space import load_space


def _exported(space, config, seed=0, merge_bits=8):
    spec = space.decode(config)
    model = build_model(spec.arch, replace(spec.quant, merge_bits=merge_bits), seed=seed)
    with torch.no_grad():
        model.train()(torch.randn(32, *space.input_shape, generator=torch.Generator().manual_seed(seed)))
    return model.eval(), to_onnx(model.eval(), space.input_shape)


def _run_parts(pieces, x, input_name):
    """Each part on its own, in an order where its inputs are ready, tensors passed by name."""
    values, todo = {input_name: x}, list(pieces)
    while todo:
        ready = [p for p in todo if all(i.name in values for i in p.model.graph.input)]
        assert ready, "the parts wait on each other"
        for part in ready:
            sess = runtime.session(part.model.SerializeToString())
            names = [o.name for o in sess.get_outputs()]
            outs = sess.run(None, {i.name: values[i.name] for i in part.model.graph.input})
            values.update(zip(names, outs))
            todo.remove(part)
    return values


@pytest.mark.parametrize("space_name,seed", [("fashion_cnn", 1), ("fashion_cnn", 4), ("digits_small", 2)])
def test_the_parts_together_compute_what_the_network_computes(space_name, seed):
    space = load_space(space_name)
    _, proto = _exported(space, space.sample(seed), seed)
    pieces = latency_table.parts(proto, batch=2)
    nodes = [n.name for p in pieces for n in p.model.graph.node]
    assert sorted(nodes) == sorted(n.name for n in proto.graph.node)  # every node in exactly one part
    assert len(pieces) > 2
    for part in pieces:  # a part is cut where onnxruntime's fusions end: after a QuantizeLinear
        for value in part.model.graph.input:
            assert value.name == proto.graph.input[0].name or any(
                n.op_type == "QuantizeLinear" and value.name in n.output for n in proto.graph.node)
    x = np.random.default_rng(seed).standard_normal((2, *space.input_shape)).astype(np.float32)
    whole = runtime.session(proto.SerializeToString()).run(None, {proto.graph.input[0].name: x})[0]
    values = _run_parts(pieces, x, proto.graph.input[0].name)
    np.testing.assert_allclose(values[proto.graph.output[0].name], whole, rtol=1e-5, atol=1e-5)


def test_a_part_is_keyed_by_its_structure_not_its_names_or_weights():
    space = load_space("fashion_cnn")
    config = space.sample(4)
    _, proto_a = _exported(space, config, seed=0)
    _, proto_b = _exported(space, config, seed=1)  # other weights, other activation scales
    keys_a = [p.key for p in latency_table.parts(proto_a, 1)]
    keys_b = [p.key for p in latency_table.parts(proto_b, 1)]
    assert len(set(keys_a) & set(keys_b)) >= len(keys_a) // 2  # weights never change a key
    w_bits = next(k for k in config if k.endswith(".w_bits") and config[k] != 32)
    _, proto_c = _exported(space, {**config, w_bits: 8 if config[w_bits] != 8 else 4})
    assert set(p.key for p in latency_table.parts(proto_c, 1)) != set(keys_a)  # bits do
    # a renamed graph keeps its keys
    renamed = type(proto_a)()
    renamed.CopyFrom(proto_a)
    for node in renamed.graph.node:
        node.name = "x" + node.name
    assert [p.key for p in latency_table.parts(renamed, 1)] == keys_a


def test_the_prediction_sums_the_parts_less_the_overhead_paid_once_and_times_each_part_once(monkeypatch):
    space = load_space("digits_small")
    _, proto = _exported(space, space.sample(2), 2)
    timed = []
    monkeypatch.setattr(runtime, "feeds_latency_ms", lambda data, feeds, threads, **_: timed.append(data) or (0.002 if b"overhead" in data else 0.05 * len(timed)))
    table: dict[str, float] = {}
    first = latency_table.predicted_latency_ms(proto, 1, 1, table.get, table.__setitem__)
    pieces = latency_table.parts(proto, 1)
    distinct = {p.key for p in pieces}
    rounds = latency_table.TIMING_ROUNDS
    assert len(timed) == rounds * (len(distinct) + 1)  # each distinct part and the overhead, once per round
    overhead = table[latency_table.OVERHEAD_KEY]
    assert first == pytest.approx(sum(table[p.key] for p in pieces) - (len(pieces) - 1) * overhead)
    assert latency_table.predicted_latency_ms(proto, 1, 1, table.get, table.__setitem__) == first
    assert len(timed) == rounds * (len(distinct) + 1)  # nothing timed again


def test_objective_latency_table_fills_the_cache_and_predicts_within_reach_of_the_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("NASQ_RAY_CACHE", str(tmp_path))
    space = load_space("fashion_cnn")
    model, _ = _exported(space, space.sample(4), 4)
    spec = space.decode(space.sample(4))
    key = latency.structure_key(spec.arch, spec.quant)
    x = torch.randn(16, *space.input_shape)
    predicted = latency.model_latency_ms(lambda: model, space.input_shape, x, key, source="table")
    measured = latency.model_latency_ms(lambda: model, space.input_shape, x, key)
    assert predicted > 0 and measured > 0
    assert 0.25 < predicted / measured < 4  # the same order (the benchmark measures how close)
    files = {p.stem for p in (tmp_path / "latency" / latency.node_type()).glob("*.json")}
    assert key in files and f"table-{key}" in files and latency_table.OVERHEAD_KEY in files
    assert sum(f.startswith("part-") and len(f) == len("part-") + 24 for f in files) >= 3  # the parts


def test_a_graph_the_table_cannot_cut_is_timed_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("NASQ_RAY_CACHE", str(tmp_path))
    space = load_space("digits_small")
    model, _ = _exported(space, space.sample(0), 0)

    def uncuttable(proto, batch):
        raise ValueError("no static shape for 'x': the graph cannot be cut into timed parts")

    monkeypatch.setattr(latency_table, "parts", uncuttable)
    timed = []
    real = runtime.latency_ms
    monkeypatch.setattr(runtime, "latency_ms", lambda *a, **k: timed.append(a) or real(*a, **k))
    value = latency.model_latency_ms(lambda: model, space.input_shape, torch.randn(8, *space.input_shape), "k",
                                     source="table")
    assert value > 0 and len(timed) == 1  # the whole network, once
    assert latency.cached_latency_ms("table-k") == value


def test_a_part_without_a_static_shape_is_refused():
    from onnx import TensorProto, helper

    node = helper.make_node("Unknown", ["x"], ["y"], domain="com.example")  # no schema: no shape inferred
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(ValueError, match="cannot be cut into timed parts"):
        latency_table.parts(proto, batch=1)
