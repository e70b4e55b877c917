"""Bit-packed export: the packed file restores the fake-quant weights bit for bit and its body is
the cost model's size (to byte padding), for residual and parallel blocks and every quantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq_ray.deploy.packed import (
    body_bits,
    fake_quant_weights,
    pack_codes,
    pack_model,
    restored_weights,
    unpack_codes,
)
from nasq_ray.models import build_model, measure_cost
from nasq_ray.models.builder import trace_layers
from nasq_ray.space import SearchSpace

SPACE = {
    "input": "image", "input_shape": [1, 8, 8], "num_classes": 10,
    "stages": [
        {"channels": 8, "ops": "conv3x3", "connections": "residual"},
        {"channels": 12, "ops": "dwsep3x3", "stride": 2, "connections": "parallel", "branch_ops": "conv1x1",
         "merge": "concat"},
    ],
    "head": {"pool": "avg", "hidden_layers": 1, "hidden": 16},
    "quant": {"w_bits": [1, 2, 3, 4, 6, 8, 12, 32], "a_bits": [2, 4, 8, 12, 32], "logit_bits": 8},
}


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_codes_round_trip(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2 ** bits, size=37)
    data = pack_codes(codes, bits)
    assert len(data) == -(-37 * bits // 8)  # exactly b bits per value, padded to a byte
    assert np.array_equal(unpack_codes(data, bits, 37), codes)


def _trained(wq: str, aq: str, seed: int, **options):
    space = SearchSpace(SPACE)
    cfg = space.sample(seed)
    spec = space.decode(cfg)
    from dataclasses import replace

    spec = replace(spec, quant=replace(spec.quant, w_quantizer=wq, a_quantizer=aq, **options))
    model = build_model(spec.arch, spec.quant, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return space, spec, model.eval()


OPTIONS = [("minmax", "ema", {}), ("lsq", "lsq", {}), ("minmax", "pact", {}),
           ("minmax", "ema", {"w_granularity": "tensor", "a_scheme": "symmetric"}),
           ("lsq", "ema", {"w_granularity": "tensor", "a_mode": "dynamic"})]


@pytest.mark.parametrize("wq, aq, options", OPTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unpacked_weights_equal_fake_quant_weights_and_size_matches_the_cost_model(wq, aq, options, seed):
    space, spec, model = _trained(wq, aq, seed, **options)
    assert any(n.endswith("par") or "par." in n for n, _ in model.named_modules())  # a parallel block
    data = pack_model(model, space.input_shape)
    restored, fake = restored_weights(data), fake_quant_weights(model)
    assert set(restored) == set(fake)
    for name in fake:
        assert torch.equal(restored[name], fake[name]), name
    layers = trace_layers(model, space.input_shape)
    size_bits = measure_cost(model, space.input_shape)[0].size_bits
    padding = 8 * len(layers)  # at most 7 bits per packed weight tensor
    assert size_bits <= body_bits(data) <= size_bits + padding


# ------------------------------------------------------------------------------------------- ONNX

@pytest.mark.parametrize("wq, aq, options", OPTIONS)
def test_onnx_model_computes_the_fake_quant_model_with_integer_weights(wq, aq, options):
    import onnx

    from nasq_ray.deploy.onnx import run_onnx, to_onnx

    space, spec, model = _trained(wq, aq, 0, **options)  # residual block, parallel concat block, FC head
    proto = to_onnx(model, space.input_shape)
    x = torch.randn(48, *space.input_shape)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(run_onnx(proto, x.numpy(), optimize=False), ref, atol=1e-4)
    fused = run_onnx(proto, x.numpy())  # integer kernels: requantization may move a value by a step
    assert (fused.argmax(1) == ref.argmax(1)).mean() >= 0.9
    ops = {n.op_type for n in proto.graph.node}
    assert {"DequantizeLinear", "Conv", "Gemm", "Concat", "Add"} <= ops
    assert ("QuantizeLinear" in ops) != (options.get("a_mode") == "dynamic")
    assert "BatchNormalization" not in ops  # folded into the layers before them
    types = {i.name.rsplit("_", 1)[0]: i.data_type for i in proto.graph.initializer if "weight_int" in i.name}
    expected = {}
    for name, mod in model.named_modules():
        w_bits = getattr(mod, "w_bits", 32)
        if w_bits < 32:
            expected[name + ".weight_int"] = (onnx.TensorProto.INT4 if w_bits <= 4 else
                                              onnx.TensorProto.INT8 if w_bits <= 8 else onnx.TensorProto.INT16)
    assert types == expected and expected


def test_onnx_export_refuses_what_it_cannot_write():
    from nasq_ray.deploy.onnx import ExportError, to_onnx
    from nasq_ray.quant import LayerBits, QuantConfig, quantize_

    with pytest.raises(ExportError, match="module GELU has no ONNX export"):
        to_onnx(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU()), (4,))
    untrained = quantize_(torch.nn.Sequential(torch.nn.Linear(4, 3)), QuantConfig({"0": LayerBits(4, 4)}))
    with pytest.raises(ExportError, match="0: its activation range was never observed"):
        to_onnx(untrained, (4,))


def test_onnx_export_of_every_shipped_op_and_connection():
    from nasq_ray.deploy.onnx import run_onnx, to_onnx
    from nasq_ray.space import load_space

    ops, kinds = set(), set()
    for space_name, seeds in (("digits_small", range(6)), ("cifar_cnn", range(2))):
        space = load_space(space_name)
        for seed in seeds:
            cfg = space.sample(seed)
            spec = space.decode(cfg)
            model = build_model(spec.arch, spec.quant, seed=seed)
            x = torch.randn(8, *space.input_shape)
            with torch.no_grad():
                model.train()(x)  # activation ranges observed once
            model.eval()
            proto = to_onnx(model, space.input_shape)
            with torch.no_grad():
                ref = model(x).numpy()
            np.testing.assert_allclose(run_onnx(proto, x.numpy(), optimize=False), ref, atol=1e-4, rtol=1e-4)
            ops |= {n.op_type for n in proto.graph.node}
            kinds |= {v for k, v in cfg.items() if k.endswith((".op", ".op_b", ".conn", ".merge", "head.pool"))}
    assert {"MaxPool", "AveragePool", "Conv", "Gemm", "Concat", "Flatten", "ReduceMean"} <= ops
    assert {"residual", "parallel", "identity", "dwsep3x3", "conv5x5", "sum", "concat"} <= kinds


# ------------------------------------------------------------------------ integer kernels (onnxruntime)

def _w8a8(space, seed: int, merge_bits: int = 8):
    """A sampled network with every bit-width 8 (merges and the head's pooling too), its ranges observed."""
    from dataclasses import replace

    cfg = {k: (8 if k.endswith(("w_bits", "a_bits", "logit_bits")) else v) for k, v in space.sample(seed).items()}
    spec = space.decode(cfg)
    model = build_model(spec.arch, replace(spec.quant, merge_bits=merge_bits), seed=seed)
    x = torch.randn(64, *space.input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for _ in range(3):
            model.train()(x)
    return cfg, model.eval(), x


def test_w8a8_networks_run_every_layer_on_integer_kernels_and_predict_as_fake_quant():
    from nasq_ray.deploy.onnx import integer_plan, run_onnx, to_onnx
    from nasq_ray.deploy.runtime import layer_kernels, optimized_graph
    from nasq_ray.space import load_space

    kinds, fused_ops = set(), set()
    for space_name, seeds in (("digits_small", range(8)), ("fashion_cnn", range(2))):
        space = load_space(space_name)
        for seed in seeds:
            cfg, model, x = _w8a8(space, seed)
            proto = to_onnx(model, space.input_shape)
            kernels = layer_kernels(proto, integer_plan(model))
            n_layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
            assert len(kernels) == n_layers
            assert [k for k in kernels if not k.integer] == [], (space_name, seed)  # every layer, integer
            graph = optimized_graph(proto)
            assert sum(n.op_type == "QLinearConv" for n in graph.node) == n_layers  # Linear as 1x1 QLinearConv
            assert not {"Conv", "Gemm", "MatMul", "FusedConv"} & {n.op_type for n in graph.node}
            fused_ops |= {n.op_type for n in graph.node}
            with torch.no_grad():
                ref = model(x).numpy()
            unfused, fused = run_onnx(proto, x.numpy(), optimize=False), run_onnx(proto, x.numpy())
            # The INT32 bias is rounded at input x weight scale (half an accumulator step): where a value
            # sat on a rounding boundary it moves by one step, and that can spread to a few logit steps.
            step = model.logit_quant.qparams()[0]
            steps = np.abs(fused - ref) / step
            assert steps.max() <= 4.01 and steps.mean() <= 0.4
            # integer kernels compute what the graph as written computes, to a requantization step (QLinearAdd)
            assert np.abs(fused - unfused).max() <= 1.01 * step and np.isclose(fused, unfused, atol=1e-5).mean() >= 0.99
            kinds |= {v for k, v in cfg.items() if k.endswith((".op", ".op_b", ".conn", ".merge", "head.pool"))}
    assert {"residual", "parallel", "sum", "concat", "identity", "dwsep3x3", "conv5x5", "maxpool", "avgpool",
            "flatten"} <= kinds
    assert {"QLinearAdd", "QLinearConcat"} <= fused_ops  # merges run on integers too


def test_integer_plan_says_why_a_layer_stays_float():
    from nasq_ray.deploy.onnx import integer_plan
    from nasq_ray.space import SearchSpace

    space = SearchSpace({**SPACE, "quant": {"w_bits": 8, "a_bits": 8, "logit_bits": 8}})
    _, model, _ = _w8a8(space, 0, merge_bits=32)  # merges left float: what feeds them cannot be requantized
    reasons = integer_plan(model)
    assert reasons["s0.b0.op.conv"] == "output feeds add, not a quantizer"  # the residual sum
    assert reasons["head.out"] == ""  # 8/8, its output requantized by the 8-bit logit quantizer
    model.head.out.w_bits = 4
    assert integer_plan(model)["head.out"] == "weights 4 bits"
    model.logit_quant.bits = 6
    assert integer_plan(model)["head.fc0"] == ""
    model.head.out.act_quant.bits = 32
    assert integer_plan(model)["head.fc0"].startswith("output ") and integer_plan(model)["head.out"] == "input float"


def test_a_qualifying_layer_chosen_float_is_written_for_a_float_kernel_and_the_export_stays_exact():
    from nasq_ray.deploy.onnx import FLOAT_BY_CHOICE, integer_plan, run_onnx, to_onnx
    from nasq_ray.deploy.runtime import layer_kernels
    from nasq_ray.space import load_space

    space = load_space("fashion_cnn")
    _, model, x = _w8a8(space, 0)
    qualifying = [name for name, why in integer_plan(model).items() if not why]
    floats = frozenset(qualifying[:1])  # e.g. a stem reading one channel
    proto = to_onnx(model, space.input_shape, float_layers=floats)
    kernels = {k.layer: k for k in layer_kernels(proto, integer_plan(model, floats))}
    assert [n for n, k in kernels.items() if not k.integer] == list(floats)
    assert kernels[qualifying[0]].reason == FLOAT_BY_CHOICE and kernels[qualifying[0]].kernel != "QLinearConv"
    assert all(kernels[n].integer for n in qualifying[1:])
    with torch.no_grad():
        ref = model(x).numpy()
    step = model.logit_quant.qparams()[0]
    assert np.abs(run_onnx(proto, x.numpy()) - ref).max() / step <= 4.01  # as with every layer on integers


def test_faster_float_layers_keeps_a_layer_float_only_where_the_whole_model_gets_faster(monkeypatch):
    from nasq_ray.deploy import latency, onnx as onnx_mod, runtime
    from nasq_ray.space import load_space

    space = load_space("fashion_cnn")
    _, model, _ = _w8a8(space, 0)
    qualifying = [name for name, why in onnx_mod.integer_plan(model).items() if not why]
    stem, small = qualifying[0], qualifying[1]
    gains = {stem: 0.7, small: 0.97}  # a float stem: 30% faster; another layer: 3% (noise), the rest slower

    class Exported:
        def __init__(self, float_layers):
            self.floats = frozenset(float_layers)

        def SerializeToString(self):
            return self

    def fake_latency(exported, input_shape, batch, threads=1):
        t = 1.0
        for layer in exported.floats:
            t *= gains.get(layer, 1.2)
        return t * batch

    monkeypatch.setattr(onnx_mod, "to_onnx", lambda m, shape, float_layers=frozenset(): Exported(float_layers))
    monkeypatch.setattr(runtime, "latency_ms", fake_latency)
    assert latency.faster_float_layers(model, space.input_shape) == {stem}


def test_exporting_a_table_run_says_it_trained_no_network(tmp_path, capsys):
    from nasq_ray.config import ExperimentConfig
    from nasq_ray.export import main

    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "experiment.yaml").write_text(ExperimentConfig(space="nb201", name="r").to_yaml())
    (folder / "trials.csv").write_text("trial_id,status,val_acc,macs\nabc,complete,0.9,1.0\n")
    (folder / "pareto.csv").write_text("trial_id,status,val_acc,macs\nabc,complete,0.9,1.0\n")
    assert main([str(folder), "--pareto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained no network, so there is no model to export" in err[0], err
    assert not (folder / "export").exists()
