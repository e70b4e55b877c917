"""Cost model: MACs against torch's FLOP counter, BitOPs, exact storage sizes, summaries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import SHIPPED_SPACES
from nasq_ray.cost import cost_table, summarize
from nasq_ray.models import build_model, measure_cost
from nasq_ray.quant import LayerBits, QuantConfig, quantize_
from nasq_ray.space import SearchSpace
from nasq_ray.space import load_space

N_SAMPLES = 20


def _quantizable(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


# --------------------------------------------------------------------------- MACs = FLOPs / 2


@pytest.mark.parametrize("space_name", SHIPPED_SPACES)
def test_macs_equal_torch_flop_counter(spaces, space_name):
    space = spaces[space_name]
    seen_quantized = False
    for seed in range(N_SAMPLES):
        spec = space.decode(space.sample(seed))
        model = build_model(spec.arch, spec.quant).eval()
        summary, layers = measure_cost(model, space.input_shape)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            out = model(torch.zeros((1, *space.input_shape)))
        assert out.shape == (1, space.num_classes)
        assert summary.macs * 2 == fc.get_total_flops(), f"{space_name} seed {seed}"
        # and layer by layer
        per_module = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}
        root = type(model).__name__
        assert [c.name for c in layers] == list(_quantizable(model)), "every layer, in forward order"
        for c in layers:
            assert per_module.get(f"{root}.{c.name}", 0) == 2 * c.macs, (space_name, seed, c.name)
        seen_quantized |= any(c.w_bits < 32 for c in layers)
    assert seen_quantized


@pytest.mark.parametrize("space_name", SHIPPED_SPACES)
def test_bitops_and_totals(spaces, space_name):
    space = spaces[space_name]
    for seed in range(N_SAMPLES):
        spec = space.decode(space.sample(1000 + seed))
        model = build_model(spec.arch, spec.quant)
        summary, layers = measure_cost(model, space.input_shape)
        assert {c.name for c in layers} == set(spec.quant.layers)
        for c in layers:
            bits = spec.quant.layers[c.name]
            assert (c.w_bits, c.a_bits) == (bits.w_bits, bits.a_bits)
            assert c.bitops == c.macs * bits.w_bits * bits.a_bits
        assert summary.macs == sum(c.macs for c in layers)
        assert summary.bitops == sum(c.bitops for c in layers)
        assert summary.n_weights == sum(c.n_weights for c in layers)
        logit_extra = 64 if spec.quant.logit_bits < 32 else 0
        assert summary.size_bits == sum(c.size_bits for c in layers) + logit_extra
        n_params = sum(m.weight.numel() for m in _quantizable(model).values())
        assert summary.n_weights == n_params
        assert summary.avg_w_bits == pytest.approx(
            sum(m.weight.numel() * spec.quant.layers[n].w_bits for n, m in _quantizable(model).items()) / n_params)


def test_measure_cost_leaves_the_model_unchanged(spaces):
    """Measuring must not touch the model: no buffer (quantizer range, BN statistics) and not the mode.

    ``run_trial`` measures a freshly built model before training it; an activation quantizer that
    records the all-zero probe input would start training from a range of [0, 0] instead of the
    first batch's range.
    """
    space = spaces["digits_small"]
    for seed in range(10):
        spec = space.decode(space.sample(seed))
        model = build_model(spec.arch, spec.quant)
        assert model.training
        before = {k: v.clone() for k, v in model.state_dict().items()}
        measure_cost(model, space.input_shape)
        assert model.training
        after = model.state_dict()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert not changed, f"measure_cost changed {changed}"


def test_measure_cost_keeps_eval_mode():
    space = load_space("mlp")
    spec = space.decode(space.sample(0))
    model = build_model(spec.arch, spec.quant).eval()
    measure_cost(model, space.input_shape)
    assert not model.training and not any(m.training for m in model.modules())


# --------------------------------------------------------------------------- exact storage sizes


class ConvBN(nn.Module):
    def __init__(self, in_ch=8, out_ch=16, k=3, groups=1, stride=1, bias=False, bn=True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_ch) if bn else nn.Identity()
        self.logit_quant = nn.Identity()

    def forward(self, x):
        return self.logit_quant(F.relu(self.bn(self.conv(x))))


class Lin(nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.fc = nn.Linear(10, 5, bias=bias)

    def forward(self, x):
        return self.fc(x)


def _cost(model, bits: dict, input_shape, logit_bits=32):
    quantize_(model, QuantConfig({k: LayerBits(*v) for k, v in bits.items()}, logit_bits=logit_bits))
    summary, layers = measure_cost(model, input_shape)
    return summary, {c.name: c for c in layers}


def test_size_conv3x3_bn_w4_a8():
    summary, layers = _cost(ConvBN(), {"conv": (4, 8)}, (8, 5, 5))
    c = layers["conv"]
    assert c.n_weights == 16 * 8 * 9
    assert c.size_bits == 16 * 8 * 9 * 4 + 16 * 32 + 2 * 16 * 32 + 2 * 32 == 6208
    assert c.macs == 16 * 8 * 9 * 25
    assert c.bitops == c.macs * 4 * 8
    assert summary.size_bits == 6208
    assert summary.size_kb == 6208 / 8000


def test_size_float_conv_has_no_scales():
    summary, layers = _cost(ConvBN(), {"conv": (32, 32)}, (8, 5, 5))
    assert layers["conv"].size_bits == 16 * 8 * 9 * 32 + 2 * 16 * 32
    assert (layers["conv"].w_bits, layers["conv"].a_bits) == (32, 32)
    # unlisted layers count as float too
    s2, l2 = _cost(ConvBN(), {}, (8, 5, 5))
    assert l2["conv"].size_bits == layers["conv"].size_bits and s2 == summary


def test_size_only_weights_or_only_input_quantized():
    _, w_only = _cost(ConvBN(bias=True), {"conv": (6, 32)}, (8, 4, 4))
    assert w_only["conv"].size_bits == 16 * 8 * 9 * 6 + 16 * 32 + 16 * 32 + 2 * 16 * 32
    _, a_only = _cost(ConvBN(bias=True), {"conv": (32, 3)}, (8, 4, 4))
    assert a_only["conv"].size_bits == 16 * 8 * 9 * 32 + 16 * 32 + 2 * 16 * 32 + 2 * 32
    assert a_only["conv"].bitops == 16 * 8 * 9 * 16 * 32 * 3


def test_size_conv_without_bn_strided():
    _, layers = _cost(ConvBN(in_ch=3, out_ch=4, k=5, stride=2, bias=True, bn=False), {"conv": (2, 4)}, (3, 9, 7))
    c = layers["conv"]
    assert c.size_bits == 4 * 3 * 25 * 2 + 4 * 32 + 4 * 32 + 2 * 32
    assert c.macs == 4 * 3 * 25 * 5 * 4  # out 5x4 = ceil(9/2) x ceil(7/2)


@pytest.mark.parametrize("bias", [True, False])
def test_size_linear(bias):
    summary, layers = _cost(Lin(bias), {"fc": (8, 4)}, (10,))
    c = layers["fc"]
    assert c.kind == "linear" and c.n_weights == 50 and c.macs == 50 and c.bitops == 50 * 8 * 4
    assert c.size_bits == 50 * 8 + 5 * 32 * int(bias) + 5 * 32 + 2 * 32
    _, fl = _cost(Lin(bias), {}, (10,))
    assert fl["fc"].size_bits == 50 * 32 + 5 * 32 * int(bias)


def test_size_depthwise_conv():
    summary, layers = _cost(ConvBN(in_ch=8, out_ch=8, groups=8), {"conv": (2, 6)}, (8, 6, 6))
    c = layers["conv"]
    assert c.n_weights == 8 * 1 * 9
    assert c.macs == 8 * 9 * 36
    assert c.size_bits == 8 * 9 * 2 + 8 * 32 + 2 * 8 * 32 + 2 * 32 == 976


@pytest.mark.parametrize("logit_bits,extra", [(8, 64), (2, 64), (16, 64), (32, 0)])
def test_logit_quantizer_adds_scale_and_zero_point(logit_bits, extra):
    summary, layers = _cost(ConvBN(), {"conv": (4, 8)}, (8, 5, 5), logit_bits=logit_bits)
    assert summary.size_bits == layers["conv"].size_bits + extra
    assert summary.macs == layers["conv"].macs  # the logit quantizer costs no MACs


def _tiny_space(**stage):
    raw = {
        "input": "image", "input_shape": [2, 6, 6], "num_classes": 3,
        "stages": [{"channels": 4, "ops": "conv3x3", **stage}],
        "head": {"pool": "avg"},
        "quant": {"w_bits": 4, "a_bits": 8, "logit_bits": 8},
    }
    return SearchSpace(raw, source="tiny")


def test_size_of_a_tiny_space_by_hand():
    space = _tiny_space()
    cfg = space.sample(0)
    spec = space.decode(cfg)
    assert space.layers(cfg) == ["s0.b0.op.conv", "head.out"]
    summary, layers = measure_cost(build_model(spec.arch, spec.quant), space.input_shape)
    by = {c.name: c for c in layers}
    conv, out = by["s0.b0.op.conv"], by["head.out"]
    assert conv.size_bits == 4 * 2 * 9 * 4 + 4 * 32 + 2 * 4 * 32 + 2 * 32 == 736
    assert conv.macs == 4 * 2 * 9 * 36
    assert out.size_bits == 12 * 4 + 3 * 32 + 3 * 32 + 2 * 32 == 304
    assert out.macs == 12
    assert summary.size_bits == 736 + 304 + 64
    assert summary.bitops == (conv.macs + out.macs) * 4 * 8
    assert summary.avg_w_bits == 4.0


def test_size_of_a_residual_downsampling_block():
    space = _tiny_space(connections="residual", stride=2, ops="dwsep3x3")
    cfg = space.sample(0)
    spec = space.decode(cfg)
    summary, layers = measure_cost(build_model(spec.arch, spec.quant), space.input_shape)
    by = {c.name: c for c in layers}
    assert set(by) == {"s0.b0.op.dw", "s0.b0.op.pw", "s0.b0.skip", "head.out"}
    # depthwise 2->2 stride 2 on 6x6 -> 3x3, with its BN
    assert by["s0.b0.op.dw"].size_bits == 2 * 9 * 4 + 2 * 32 + 2 * 2 * 32 + 64
    assert by["s0.b0.op.dw"].macs == 2 * 9 * 9
    # pointwise 2->4, with its BN
    assert by["s0.b0.op.pw"].size_bits == 8 * 4 + 4 * 32 + 2 * 4 * 32 + 64
    assert by["s0.b0.op.pw"].macs == 8 * 9
    # the strided 1x1 shortcut and its BN
    assert by["s0.b0.skip"].size_bits == 8 * 4 + 4 * 32 + 2 * 4 * 32 + 64
    assert by["s0.b0.skip"].macs == 8 * 9
    assert summary.size_bits == sum(c.size_bits for c in layers) + 64


# ------------------------------------------------------------------------------ summaries, table


def test_avg_w_bits_is_weight_weighted():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)  # 72 weights
            self.fc = nn.Linear(4, 7)  # 28 weights

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    summary, layers = _cost(Two(), {"conv": (2, 8), "fc": (8, 8)}, (2, 3, 3))
    assert summary.n_weights == 100
    assert summary.avg_w_bits == pytest.approx((72 * 2 + 28 * 8) / 100)
    summary, _ = _cost(Two(), {"conv": (3, 8)}, (2, 3, 3))  # fc float: 32 bits
    assert summary.avg_w_bits == pytest.approx((72 * 3 + 28 * 32) / 100)
    assert summarize([]).avg_w_bits == 0 and summarize([]).size_bits == 0


def test_size_kb_and_metrics():
    space = load_space("mlp")
    spec = space.decode(space.sample(3))
    summary, _ = measure_cost(build_model(spec.arch, spec.quant), space.input_shape)
    assert summary.size_kb == summary.size_bits / 8000
    metrics = summary.as_metrics()
    assert metrics["size_kb"] == summary.size_kb
    for k in ("macs", "bitops", "size_bits", "n_weights", "avg_w_bits"):
        assert metrics[k] == getattr(summary, k)


def test_cost_table_has_rows_and_total():
    space = load_space("digits_small")
    spec = space.decode(space.sample(5))
    summary, layers = measure_cost(build_model(spec.arch, spec.quant), space.input_shape)
    table = cost_table(layers)
    assert isinstance(table, str)
    lines = table.splitlines()
    body = [ln for ln in lines if ln.split() and ln.split()[0] in {c.name for c in layers}]
    assert [ln.split()[0] for ln in body] == [c.name for c in layers]
    for ln, c in zip(body, layers):
        assert ln.split()[1:] == [c.kind, str(c.w_bits), str(c.a_bits), str(c.n_weights), str(c.macs),
                                  str(c.bitops), str(c.size_bits)]
    total = [ln for ln in lines if ln.startswith("total")]
    assert len(total) == 1
    assert total[0].split()[1:] == [str(summary.n_weights), str(summary.macs), str(summary.bitops),
                                    str(sum(c.size_bits for c in layers))]


def test_first_training_batch_sets_quantizer_range_after_measure_cost():
    """What ``run_trial`` does: build, measure, train. The first batch must set each input range."""
    space = load_space("mlp")
    cfg = space.sample(0)
    spec = space.decode(cfg)
    model = build_model(spec.arch, QuantConfig({k: LayerBits(8, 8) for k in spec.quant.layers}))
    measure_cost(model, space.input_shape)
    model.train()
    x = torch.rand((16, *space.input_shape), generator=torch.Generator().manual_seed(0)) * 4 + 1
    first = model.get_submodule(space.layers(cfg)[0])  # its input is x itself
    model(x)
    assert first.act_quant.running_min.item() == pytest.approx(x.min().item())
    assert first.act_quant.running_max.item() == pytest.approx(x.max().item())
