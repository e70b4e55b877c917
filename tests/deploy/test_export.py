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
