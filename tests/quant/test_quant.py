"""Fake quantization: bit-exact against torch's reference ops, STE gradients, layers, configs."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasq_ray.errors import SearchSpaceError
from nasq_ray.quant import (
    ALLOWED_BITS,
    ActFakeQuant,
    LayerBits,
    QuantConfig,
    QuantConv2d,
    QuantLinear,
    check_bits,
    dequantize_,
    fake_quant,
    fake_quant_weight,
    quantize_,
)
from nasq_ray.quant.fake_quant import signed_range, unsigned_range, weight_scale

BITS = (2, 3, 4, 5, 6, 8)

pytestmark = pytest.mark.usefixtures("quant_backend")  # every test with the C kernels and without


def _tensor(seed: int, shape=(4096,), spread: float = 3.0) -> torch.Tensor:
    """Random values, a share of them far outside any quantizer range (to exercise clipping)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * spread
    far = torch.rand(shape, generator=g) < 0.1
    return torch.where(far, x * 1000.0, x)


# (seed, scale, zero point as a fraction of the range: 0 -> qmin, 1 -> qmax)
PER_TENSOR_CASES = [
    (0, 0.05, 0.0),
    (1, 0.1, 0.5),
    (2, 0.37, 1.0),
    (3, 1.5, 0.25),
    (4, 0.0123, 0.5),
]


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return signed_range(bits) if signed else unsigned_range(bits)


# ------------------------------------------------------------------------------ forward, bit exact


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("seed,scale,zp_frac", PER_TENSOR_CASES)
def test_fake_quant_per_tensor_matches_torch(bits, signed, seed, scale, zp_frac):
    qmin, qmax = _range(bits, signed)
    zp = 0 if signed else int(round(qmin + zp_frac * (qmax - qmin)))
    x = _tensor(seed)
    scale_t = torch.tensor(scale, dtype=torch.float32)
    ours = fake_quant(x, scale_t, zp, qmin, qmax)
    ref = torch.fake_quantize_per_tensor_affine(x, float(scale_t), zp, qmin, qmax)
    assert torch.equal(ours, ref)
    # the tensor-qparams overload, and a float zero point as ActFakeQuant produces it
    ref_t = torch.fake_quantize_per_tensor_affine(x, scale_t, torch.tensor(zp, dtype=torch.int32), qmin, qmax)
    assert torch.equal(ours, ref_t)
    assert torch.equal(fake_quant(x, scale_t, torch.tensor(float(zp)), qmin, qmax), ref)
    # clipping happened and the output lies on the grid inside the range
    assert (x.abs() > (qmax - qmin + 1) * scale).any()
    assert ours.min() >= (qmin - zp) * scale_t - 1e-6 and ours.max() <= (qmax - zp) * scale_t + 1e-6
    assert len(torch.unique(ours)) <= qmax - qmin + 1


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("scale", [0.25, 0.125, 2.0])
def test_fake_quant_rounds_ties_to_even_like_torch(bits, scale):
    """Values exactly half-way between two grid points (exact in binary) round to the even one."""
    qmin, qmax = unsigned_range(bits)
    zp = (qmax + 1) // 2
    x = (torch.arange(-2 * qmax, 2 * qmax, dtype=torch.float32) + 0.5) * scale
    ours = fake_quant(x, torch.tensor(scale), zp, qmin, qmax)
    assert torch.equal(ours, torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax))
    inside = (x / scale + zp > qmin) & (x / scale + zp < qmax)
    assert torch.equal(torch.remainder(ours[inside] / scale, 2), torch.zeros(int(inside.sum())))
    signed = signed_range(bits)
    w = (torch.arange(-8, 8, dtype=torch.float32) + 0.5).view(2, 8) * scale
    ref = torch.fake_quantize_per_channel_affine(
        w, torch.full((2,), scale), torch.zeros(2, dtype=torch.int32), 0, *signed)
    assert torch.equal(fake_quant(w, torch.full((2, 1), scale), 0, *signed), ref)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fake_quant_per_channel_matches_torch(bits, seed):
    g = torch.Generator().manual_seed(100 + seed)
    w = _tensor(seed, shape=(6, 3, 3, 3), spread=0.5)
    # scales chosen so that some channels clip heavily and others not at all
    scale = torch.rand(6, generator=g) * 0.2 + 1e-3
    qmin, qmax = signed_range(bits)
    ours = fake_quant(w, scale.view(-1, 1, 1, 1), 0, qmin, qmax)
    ref = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(6, dtype=torch.int32), 0, qmin, qmax)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (5, 17), (3, 1, 5, 5)])
def test_fake_quant_weight_matches_torch_per_channel(bits, shape):
    w = _tensor(sum(shape) + bits, shape=shape, spread=0.2)
    scale = weight_scale(w, bits)
    assert scale.shape == (shape[0],) + (1,) * (len(shape) - 1)
    qmin, qmax = signed_range(bits)
    ref = torch.fake_quantize_per_channel_affine(
        w, scale.flatten(), torch.zeros(shape[0], dtype=torch.int32), 0, qmin, qmax)
    assert torch.equal(fake_quant_weight(w, bits), ref)


# ------------------------------------------------------------------------------------- gradients


def _clip_mask(x: torch.Tensor, scale: torch.Tensor, zp, qmin: int, qmax: int) -> torch.Tensor:
    """Where x is clipped, computed in float64 (the inputs avoid the rounding boundary)."""
    q = torch.round(x.double() / scale.double()) + float(zp)
    return (q < qmin) | (q > qmax)


def _away_from_edges(x: torch.Tensor, scale: float, zp: int, qmin: int, qmax: int) -> torch.Tensor:
    """Drop values within 1e-3 steps of the clipping edges so that float32 and float64 agree."""
    t = x.double() / scale + zp
    keep = ((t - (qmin - 0.5)).abs() > 1e-3) & ((t - (qmax + 0.5)).abs() > 1e-3)
    return x[keep].clone()


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("seed,scale,zp_frac", PER_TENSOR_CASES[:3])
def test_fake_quant_per_tensor_gradient_is_clipped_ste(bits, seed, scale, zp_frac):
    qmin, qmax = unsigned_range(bits)
    zp = int(round(qmin + zp_frac * (qmax - qmin)))
    scale_t = torch.tensor(scale, dtype=torch.float32)
    x0 = _away_from_edges(_tensor(seed), float(scale_t), zp, qmin, qmax)
    g = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))

    x = x0.clone().requires_grad_(True)
    fake_quant(x, scale_t, zp, qmin, qmax).backward(g)
    xr = x0.clone().requires_grad_(True)
    torch.fake_quantize_per_tensor_affine(xr, float(scale_t), zp, qmin, qmax).backward(g)
    assert torch.equal(x.grad, xr.grad)

    x1 = x0.clone().requires_grad_(True)
    fake_quant(x1, scale_t, zp, qmin, qmax).sum().backward()
    clipped = _clip_mask(x0, scale_t, zp, qmin, qmax)
    assert clipped.any() and (~clipped).any()
    assert torch.equal(x1.grad, (~clipped).float())


@pytest.mark.parametrize("bits", BITS)
def test_fake_quant_per_channel_gradient_is_clipped_ste(bits):
    gen = torch.Generator().manual_seed(bits)
    w0 = torch.randn(4, 50, generator=gen)
    scale = torch.tensor([0.01, 0.05, 0.2, 3.0])
    qmin, qmax = signed_range(bits)
    g = torch.randn(w0.shape, generator=gen)

    w = w0.clone().requires_grad_(True)
    fake_quant(w, scale.view(-1, 1), 0, qmin, qmax).backward(g)
    wr = w0.clone().requires_grad_(True)
    torch.fake_quantize_per_channel_affine(wr, scale, torch.zeros(4, dtype=torch.int32), 0, qmin, qmax).backward(g)
    assert torch.equal(w.grad, wr.grad)

    w1 = w0.clone().requires_grad_(True)
    fake_quant(w1, scale.view(-1, 1), 0, qmin, qmax).sum().backward()
    ref = torch.ones_like(w0)
    wr1 = w0.clone().requires_grad_(True)
    torch.fake_quantize_per_channel_affine(wr1, scale, torch.zeros(4, dtype=torch.int32), 0, qmin, qmax).backward(ref)
    assert torch.equal(w1.grad, wr1.grad)
    assert set(torch.unique(w1.grad).tolist()) <= {0.0, 1.0}
    clipped = _clip_mask(w0, scale.view(-1, 1), 0, qmin, qmax)
    assert clipped.any() and (~clipped).any()
    assert torch.equal(w1.grad, (~clipped).float())


def test_weight_gradient_flows_through_quantized_layer():
    conv = nn.Conv2d(3, 4, 3, bias=False)
    q = QuantConv2d.from_float(conv, 4, 32)
    q(torch.randn(2, 3, 6, 6)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- quantized layers


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 6)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


class _WithLogits(_Small):
    def __init__(self):
        super().__init__()
        self.logit_quant = nn.Identity()

    def forward(self, x):
        return self.logit_quant(super().forward(x))


def _small(seed: int = 0, cls=_Small) -> nn.Module:
    torch.manual_seed(seed)
    return cls().eval()


def _x(seed: int = 1, shape=(2, 16, 4, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_quantized_weights_have_at_most_2_pow_b_values(bits):
    m = quantize_(_small(bits), QuantConfig({"conv": LayerBits(bits, bits), "fc": LayerBits(bits, bits)}))
    assert isinstance(m.conv, QuantConv2d) and isinstance(m.fc, QuantLinear)
    qmin, qmax = signed_range(bits)
    for layer in (m.conv, m.fc):
        w = layer.weight.detach()
        wq = layer.quantized_weight().detach()
        assert wq.shape == w.shape
        for c in range(w.shape[0]):
            if bits <= 4:  # the float weights really have more values than the quantizer allows
                assert len(torch.unique(w[c])) > 2**bits
            assert len(torch.unique(wq[c])) <= 2**bits
        # integer codes on the symmetric grid, at most 2^b over the whole tensor
        scale = weight_scale(w, bits)
        codes = wq / scale
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        codes = codes.round()
        assert codes.min() >= qmin and codes.max() <= qmax
        assert len(torch.unique(codes)) <= 2**bits
        # the largest weight of each channel is represented exactly at the end of the grid
        assert torch.allclose(wq.abs().flatten(1).amax(1), w.abs().flatten(1).amax(1), rtol=1e-5)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
def test_activation_quantizer_output_has_at_most_2_pow_b_values(bits):
    m = quantize_(_small(), QuantConfig({"conv": LayerBits(8, bits)}))
    aq = m.conv.act_quant
    assert isinstance(aq, ActFakeQuant) and aq.bits == bits
    aq.train()
    x = _x(2, (4, 16, 8, 8)) * 3
    y = aq(x)
    assert len(torch.unique(x)) > 2**bits
    assert 1 < len(torch.unique(y)) <= 2**bits
    # frozen range, input beyond it: still on the grid
    aq.eval()
    y2 = aq(x * 10)
    assert len(torch.unique(y2)) <= 2**bits


def test_one_bit_weights_are_binary_per_channel():
    m = quantize_(_small(3), QuantConfig({"conv": LayerBits(1, 8), "fc": LayerBits(1, 8)}))
    for layer in (m.conv, m.fc):
        w = layer.weight.detach()
        wq = layer.quantized_weight().detach()
        for c in range(w.shape[0]):
            vals = torch.unique(wq[c])
            assert len(vals) == 2
            s = w[c].abs().mean()
            assert torch.allclose(vals, torch.stack([-s, s]))
            assert torch.equal(torch.sign(wq[c]), torch.where(w[c] >= 0, 1.0, -1.0))


def test_one_bit_weight_gradient_is_binaryconnect_ste():
    w = torch.tensor([[-2.0, -0.5, 0.0, 0.7, 1.0, 1.5]], requires_grad=True)
    fake_quant_weight(w, 1).sum().backward()
    assert torch.equal(w.grad, torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 0.0]]))


# ------------------------------------------------------------------------------- 32 bits = float


def test_32_bits_leaves_layers_float():
    ref = _small(4)
    x = _x()
    expected = ref(x)
    m = quantize_(_small(4), QuantConfig({"conv": LayerBits(32, 32), "fc": LayerBits(32, 32)}))
    assert type(m.conv) is nn.Conv2d and type(m.fc) is nn.Linear
    assert torch.equal(m(x), expected)


def test_32_bit_weights_quantize_only_the_input():
    m = quantize_(_small(5), QuantConfig({"conv": LayerBits(32, 8)}))
    conv = m.conv
    assert isinstance(conv, QuantConv2d) and conv.w_bits == 32 and conv.a_bits == 8
    assert conv.quantized_weight() is conv.weight
    assert isinstance(conv.act_quant, ActFakeQuant) and conv.act_quant.bits == 8
    x = _x(6)
    conv.train()
    y = conv(x)
    xq = conv.act_quant(x)  # the range is set by the first call; the same x keeps it
    assert not torch.equal(xq, x)
    assert torch.equal(y, F.conv2d(xq, conv.weight, None, 1, 1))


def test_32_bit_activations_quantize_only_the_weights():
    m = quantize_(_small(7), QuantConfig({"conv": LayerBits(4, 32), "fc": LayerBits(3, 32)}))
    x = _x(8)
    for layer, inp in ((m.conv, x), (m.fc, torch.randn(3, 128))):
        assert layer.a_bits == 32
        assert torch.equal(layer.act_quant(inp), inp)
        wq = fake_quant_weight(layer.weight, layer.w_bits)
        assert not torch.equal(wq, layer.weight)
    assert torch.equal(m.conv(x), F.conv2d(x, fake_quant_weight(m.conv.weight, 4), None, 1, 1))
    inp = torch.randn(3, 128)
    assert torch.equal(m.fc(inp), F.linear(inp, fake_quant_weight(m.fc.weight, 3), m.fc.bias))


# ----------------------------------------------------------------------------------- ActFakeQuant


def test_act_quant_running_range_is_ema_in_train():
    aq = ActFakeQuant(8, momentum=0.25).train()
    x1 = torch.linspace(-1.0, 2.0, 101)
    aq(x1)
    assert bool(aq.initialized)
    assert aq.running_min.item() == pytest.approx(-1.0) and aq.running_max.item() == pytest.approx(2.0)
    x2 = torch.linspace(-3.0, 6.0, 101)
    aq(x2)
    assert aq.running_min.item() == pytest.approx(0.75 * -1.0 + 0.25 * -3.0, rel=1e-6)
    assert aq.running_max.item() == pytest.approx(0.75 * 2.0 + 0.25 * 6.0, rel=1e-6)
    aq(x2)
    assert aq.running_max.item() == pytest.approx(0.75 * 3.0 + 0.25 * 6.0, rel=1e-6)


def test_act_quant_range_is_frozen_in_eval():
    aq = ActFakeQuant(6).train()
    aq(torch.linspace(-1.0, 1.0, 50))
    lo, hi = aq.running_min.clone(), aq.running_max.clone()
    aq.eval()
    y = aq(torch.linspace(-10.0, 10.0, 50))
    assert torch.equal(aq.running_min, lo) and torch.equal(aq.running_max, hi)
    assert bool(aq.initialized)
    scale, zp = aq.qparams()
    assert y.max() <= hi + scale and y.min() >= lo - scale  # clipped to the frozen range
    # back to train: observing resumes
    aq.train()
    aq(torch.linspace(-10.0, 10.0, 50))
    assert not torch.equal(aq.running_max, hi)


@pytest.mark.parametrize("lo,hi", [(0.5, 3.0), (-4.0, -1.0), (-2.0, 5.0), (0.0, 0.0)])
def test_act_quant_range_contains_zero(lo, hi):
    bits = 4
    aq = ActFakeQuant(bits).train()
    aq(torch.linspace(lo, hi, 33))
    scale, zp = aq.qparams()
    qmin, qmax = unsigned_range(bits)
    assert qmin <= zp <= qmax and zp == round(zp)
    # the grid spans [lo, hi] widened to hold 0, up to half a step lost to the integer zero point
    assert (qmin - zp) * scale <= min(lo, 0.0) + scale * 0.5 + 1e-6
    assert (qmax - zp) * scale >= max(hi, 0.0) - scale * 0.5 - 1e-6
    assert (qmax - qmin) * scale >= (max(hi, 0.0) - min(lo, 0.0)) * (1 - 1e-6)
    aq.eval()
    assert torch.equal(aq(torch.zeros(5)), torch.zeros(5))  # zero is exact


def test_act_quant_is_unsigned_for_non_negative_input():
    aq = ActFakeQuant(4).train()
    x = torch.relu(_x(9, (1000,)))
    y = aq(x)
    scale, zp = aq.qparams()
    assert zp == 0
    assert y.min() == 0
    assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x, float(scale), 0, 0, 15))


def test_act_quant_matches_torch_per_tensor():
    aq = ActFakeQuant(5).train()
    x = _x(10, (500,)) * 2 + 0.7
    y = aq(x)
    scale, zp = aq.qparams()
    assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), 0, 31))


def test_act_quant_32_bits_is_identity():
    aq = ActFakeQuant(32).train()
    x = _x(11, (10,))
    assert aq(x) is x
    assert not bool(aq.initialized)


# ------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, bias=True),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 1), padding=(1, 0), groups=2, bias=False,
         padding_mode="reflect"),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, dilation=2, padding=2, bias=False),
])
def test_conv_from_float_to_float_round_trip(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs)
    x = _x(12, (2, 4, 7, 7))
    expected = conv(x)
    q = QuantConv2d.from_float(conv, 4, 8)
    assert q.weight is conv.weight and q.bias is conv.bias
    assert dict(q.named_parameters())["weight"] is conv.weight
    for a in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"):
        assert getattr(q, a) == getattr(conv, a), a
    assert q.w_bits == 4 and q.a_bits == 8 and q.act_quant.bits == 8
    assert q.weight.device.type == "cpu" and q.act_quant.running_min.device.type == "cpu"
    assert q(x).shape == expected.shape
    f = q.to_float()
    assert type(f) is nn.Conv2d
    assert f.weight is conv.weight and f.bias is conv.bias
    assert torch.equal(f(x), expected)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_from_float_to_float_round_trip(bias):
    torch.manual_seed(1)
    lin = nn.Linear(12, 5, bias=bias)
    x = torch.randn(3, 12)
    expected = lin(x)
    q = QuantLinear.from_float(lin, 3, 6)
    assert q.weight is lin.weight and q.bias is lin.bias
    assert q.in_features == 12 and q.out_features == 5
    assert q(x).shape == expected.shape
    f = q.to_float()
    assert type(f) is nn.Linear and f.weight is lin.weight and f.bias is lin.bias
    assert torch.equal(f(x), expected)


def test_dequantize_restores_float_layers():
    ref = _small(13, _WithLogits)
    x = _x(14)
    expected = ref(x)
    m = _small(13, _WithLogits)
    quantize_(m, QuantConfig({"conv": LayerBits(3, 4), "fc": LayerBits(2, 8)}, logit_bits=8))
    assert isinstance(m.conv, QuantConv2d) and isinstance(m.fc, QuantLinear)
    assert isinstance(m.logit_quant, ActFakeQuant) and m.logit_quant.bits == 8
    assert not torch.equal(m(x), expected)
    dequantize_(m)
    assert type(m.conv) is nn.Conv2d and type(m.fc) is nn.Linear and type(m.logit_quant) is nn.Identity
    assert not any(isinstance(mod, ActFakeQuant) for mod in m.modules())
    assert torch.equal(m(x), expected)
    assert set(m.state_dict()) == set(ref.state_dict())


def test_quantize_logit_bits_32_keeps_identity():
    m = quantize_(_small(0, _WithLogits), QuantConfig({}, logit_bits=32))
    assert type(m.logit_quant) is nn.Identity


# ------------------------------------------------------------------------------------ validation

BAD_BITS = [0, 17, 20, 31, 33, 64, -1, 4.5, 8.0, True, False, "8", None]


@pytest.mark.parametrize("bad", BAD_BITS)
def test_check_bits_rejects(bad):
    with pytest.raises(SearchSpaceError) as e:
        check_bits("s0.b0.op.conv.w_bits", bad)
    msg = str(e.value)
    assert "s0.b0.op.conv.w_bits" in msg and ALLOWED_BITS in msg and repr(bad) in msg


@pytest.mark.parametrize("bad", BAD_BITS)
def test_layer_bits_and_quant_config_reject(bad):
    with pytest.raises(SearchSpaceError, match=r"w_bits.*allowed: integers 1\.\.16, or 32"):
        LayerBits(bad, 8)
    with pytest.raises(SearchSpaceError, match=r"a_bits.*allowed: integers 1\.\.16, or 32"):
        LayerBits(8, bad)
    with pytest.raises(SearchSpaceError, match=r"logit_bits.*allowed: integers 1\.\.16, or 32"):
        QuantConfig({}, logit_bits=bad)


def test_quant_config_rejects_non_layer_bits():
    with pytest.raises(SearchSpaceError, match=r"layers\[conv\]"):
        QuantConfig({"conv": (4, 8)})


@pytest.mark.parametrize("good", list(range(1, 17)) + [32])
def test_bits_accepted(good):
    assert check_bits("w_bits", good) == good
    lb = LayerBits(good, good)
    assert (lb.w_bits, lb.a_bits) == (good, good)
    assert QuantConfig({"x": lb}, logit_bits=good).logit_bits == good


@pytest.mark.parametrize("path", ["nope", "conv.weight", "bn", "fc.extra", "s0.b0.op.conv"])
def test_quantize_unknown_layer_path(path):
    m = _small()
    with pytest.raises(SearchSpaceError) as e:
        quantize_(m, QuantConfig({path: LayerBits(4, 4)}))
    assert f"'{path}'" in str(e.value)
    assert type(m.conv) is nn.Conv2d and type(m.fc) is nn.Linear


def test_act_quant_survives_non_finite_input_without_poisoning_its_range():
    aq = ActFakeQuant(4).train()
    aq(torch.linspace(-1.0, 3.0, 20))
    lo, hi = float(aq.running_min), float(aq.running_max)
    y = aq(torch.tensor([float("nan"), float("inf"), 1.0]))  # diverging batch: no exception
    assert torch.isnan(y[0])
    assert (float(aq.running_min), float(aq.running_max)) == (lo, hi)
    fresh = ActFakeQuant(4).eval()
    assert torch.isnan(fresh(torch.tensor([float("nan"), 1.0]))[0])


def test_quantize_names_what_it_cannot_quantize():
    from nasq_ray.errors import ConfigError, SearchSpaceError
    from nasq_ray.quant import LayerBits, QuantConfig, quantize_

    class MyConv(nn.Conv2d):  # its own forward would be lost
        pass

    four = QuantConfig(layers={"0": LayerBits(4, 4)})
    for model, needle in ((nn.Sequential(MyConv(1, 2, 3)), "'0': a MyConv, a subclass of Conv2d whose forward may "
                                                            "differ; allowed: plain nn.Conv2d and nn.Linear layers"),
                          (quantize_(nn.Sequential(nn.Conv2d(1, 2, 3)), four), "'0': already a fake-quant layer"),
                          (nn.Sequential(nn.ReLU()), "'0': a ReLU; allowed: nn.Conv2d and nn.Linear layers")):
        with pytest.raises(SearchSpaceError, match=re.escape(needle)):
            quantize_(model, four)
    with pytest.raises(ConfigError, match="model: expected a torch.nn.Module, got str"):
        quantize_("model", four)
    with pytest.raises(ConfigError, match="config: expected a QuantConfig, got dict"):
        quantize_(nn.Linear(2, 2), {})
    with pytest.raises(SearchSpaceError, match="layers: expected a mapping of layer paths to LayerBits"):
        QuantConfig(layers=["head.out"])
