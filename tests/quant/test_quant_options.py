"""Quantizer options: per-tensor weights, symmetric activations, dynamic (per-input) activation ranges."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasq_ray.errors import SearchSpaceError
from nasq_ray.models import build_model, measure_cost
from nasq_ray.quant import ActFakeQuant, LayerBits, QuantConfig, QuantLinear, quantize_
from nasq_ray.quant.fake_quant import act_qparams, signed_range
from nasq_ray.space import SearchSpace


def _linear(**options) -> QuantLinear:
    torch.manual_seed(0)
    return QuantLinear.from_float(nn.Linear(6, 5), 3, 4, **options)


def test_per_tensor_weights_share_one_scale():
    per_tensor, per_channel = _linear(w_granularity="tensor"), _linear()
    q, scale = per_tensor.integer_weight()
    assert scale.numel() == 1 and per_channel.integer_weight()[1].numel() == 5
    w = per_tensor.quantized_weight().detach()
    assert torch.equal(w, q * scale)
    assert len(torch.unique(w)) <= 2 * signed_range(3)[1] + 1  # one grid for the whole tensor
    assert not torch.equal(w, per_channel.quantized_weight().detach())


def test_symmetric_activations_have_zero_point_zero_and_the_right_grid():
    assert act_qparams(0.0, 6.0, 4, "symmetric")[1:] == (0.0, 0, 15)  # after a ReLU: unsigned
    scale, zp, qmin, qmax = act_qparams(-1.0, 3.0, 4, "symmetric")
    assert (zp, qmin, qmax) == (0.0, -7, 7) and scale == pytest.approx(3.0 / 7)
    assert act_qparams(-1.0, 3.0, 4, "affine")[1] != 0.0
    q = ActFakeQuant(4, scheme="symmetric")
    x = torch.linspace(-1, 3, 101)
    q.train()(x)
    y = q.eval()(x)
    assert len(torch.unique(y)) <= 15 and torch.any(y == 0) and y.min() >= -1.0 - 1e-6


def test_dynamic_mode_changes_ranges_with_the_input():
    static, dynamic = ActFakeQuant(4), ActFakeQuant(4, dynamic=True)
    calib = torch.rand(16, 8)
    for q in (static, dynamic):
        q.train()(calib)
        q.eval()
    small, large = torch.rand(1, 8) * 0.1, torch.rand(1, 8) * 10
    # static: the frozen [0, ~1] range clips the large input and flattens the small one
    assert static(large).max() <= calib.max() + 1e-6
    assert len(torch.unique(static(small))) <= 2
    # dynamic: each input gets its own range; scaling the input scales the output exactly
    for x in (small, large):
        y = dynamic(x)
        assert y.max() == pytest.approx(float(x.max()), rel=1e-6)
        assert torch.allclose(dynamic(4 * x), 4 * y)
    # per sample: a batch row is quantized as if it were alone
    batch = torch.cat([small, large])
    assert torch.equal(dynamic(batch)[0], dynamic(small)[0])
    # nothing is learned or frozen in dynamic mode
    assert not bool(dynamic.initialized)


def test_dynamic_mode_trains_end_to_end_and_stores_no_activation_ranges():
    space = SearchSpace({"input": "image", "input_shape": [1, 8, 8], "num_classes": 10,
                         "stages": [{"channels": 4, "ops": "conv3x3"}],
                         "quant": {"w_bits": 4, "a_bits": 4, "logit_bits": 8, "a_mode": ["static", "dynamic"]}})
    sizes = {}
    for mode in ("static", "dynamic"):
        cfg = space.complete({"quant.a_mode": mode}, 0)
        spec = space.decode(cfg)
        assert spec.quant.a_mode == mode
        model = build_model(spec.arch, spec.quant, seed=0)
        loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.zeros(4, dtype=torch.long))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        sizes[mode] = measure_cost(model, space.input_shape)[0].size_bits
    n_quantizers = 2 + 1  # two layers' input quantizers and the logits', 2 x 32 bits each
    assert sizes["static"] - sizes["dynamic"] == n_quantizers * 64


def test_per_tensor_weights_count_one_scale_in_the_cost_model():
    costs = {}
    for gran in ("channel", "tensor"):
        m = quantize_(nn.Sequential(nn.Linear(6, 5)), QuantConfig({"0": LayerBits(4, 8)}, w_granularity=gran))
        costs[gran] = measure_cost(m, (6,))[0].size_bits
    assert costs["channel"] - costs["tensor"] == 32 * (5 - 1)


def test_unknown_option_is_refused_with_its_field():
    with pytest.raises(SearchSpaceError, match="quant.a_mode: unknown name 'sometimes'; allowed: static, dynamic"):
        QuantConfig(a_mode="sometimes")
    with pytest.raises(SearchSpaceError, match="quant.w_granularity"):
        SearchSpace({"input": "flat", "input_shape": [6], "num_classes": 3, "quant": {"w_granularity": "row"}})
