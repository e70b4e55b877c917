"""The fused C kernels (``quant.native``) against torch operations: same values, masks, gradients,
running ranges; and the fallback when they cannot be built."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from nasq_ray.models import build_model
from nasq_ray.quant import ActFakeQuant, LayerBits, QuantConfig, QuantConv2d, QuantLinear, native
from nasq_ray.quant.fake_quant import act_qparams, weight_scale

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: the fused kernels are not built")


def _both(fn):
    """``fn()`` with the kernels and with torch operations alone."""
    try:
        native.set_enabled(True)
        a = fn()
        native.set_enabled(False)
        b = fn()
    finally:
        native.set_enabled(True)
    return a, b


def _batches(seed: int, n: int, shape, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        x = torch.randn(shape, generator=g) * (1.0 + k % 3) + offset
        if k % 4 == 3:
            x = torch.relu(x)  # non-negative batches: unsigned grids, zero point 0
        out.append(x)
    return out


def _run_act_quant(bits: int, scheme: str, batches, train_steps: int):
    aq = ActFakeQuant(bits, momentum=0.1, scheme=scheme)
    outs, grads, ranges = [], [], []
    aq.eval()
    x0 = batches[0].clone().requires_grad_(True)
    outs.append(aq(x0))  # never trained: the input's own range, nothing recorded
    ranges.append((float(aq.running_min), float(aq.running_max), bool(aq.initialized)))
    aq.train()
    for x in batches[:train_steps]:
        x = x.clone().requires_grad_(True)
        y = aq(x)
        (y * torch.arange(y.numel()).reshape(y.shape)).sum().backward()
        outs.append(y.detach())
        grads.append(x.grad)
        ranges.append((float(aq.running_min), float(aq.running_max), aq.qparams(), aq.grid()))
    aq.eval()
    for x in batches[train_steps:]:
        outs.append(aq(x))
    return outs, grads, ranges


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 12, 16])
@pytest.mark.parametrize("scheme", ["affine", "symmetric"])
@pytest.mark.parametrize("offset", [0.0, 2.5, -4.0])
def test_activation_quantizer_is_identical_with_and_without_kernels(bits, scheme, offset):
    batches = _batches(bits * 7 + len(scheme), 10, (6, 5, 4, 3), offset)
    (o1, g1, r1), (o2, g2, r2) = _both(lambda: _run_act_quant(bits, scheme, batches, 7))
    assert r1 == r2  # running ranges, qparams and grids to the last bit
    assert all(torch.equal(a, b) for a, b in zip(o1, o2))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert any((g == 0).any() for g in g1) or bits >= 12  # clipping happened (masked gradients)


def test_kernels_match_act_qparams_on_many_ranges():
    """The C copy of act_qparams: equal quantizers over ranges of every size, sign and degeneracy."""
    g = torch.Generator().manual_seed(3)
    cases = [(0.0, 0.0), (-1e-12, 1e-12), (0.0, 1e-9), (-5.0, -1.0), (3.0, 3.0), (-1e6, 2e6), (-0.0, 0.0)]
    for _ in range(300):
        a, b = sorted((torch.randn(2, generator=g) * 10 ** float(torch.randint(-6, 6, (1,), generator=g))).tolist())
        cases.append((a, b))
    for lo, hi in cases:
        for bits in (1, 2, 4, 8, 16):
            for scheme in ("affine", "symmetric"):
                x = torch.tensor([lo, hi, (lo + hi) / 2, lo - 1.0, hi * 1.5 + 1.0], dtype=torch.float32)
                ys = []
                for enabled in (True, False):
                    native.set_enabled(enabled)
                    aq = ActFakeQuant(bits, scheme=scheme).eval()  # never trained: x's own range
                    ys.append(aq(x))
                native.set_enabled(True)
                assert torch.equal(ys[0], ys[1]), (lo, hi, bits, scheme)
                scale, zp, qmin, qmax = act_qparams(float(x.min()), float(x.max()), bits, scheme)
                ref = torch.fake_quantize_per_tensor_affine(x, float(torch.tensor(scale)), int(zp), qmin, qmax)
                assert torch.equal(ys[0], ref), (lo, hi, bits, scheme)


def test_non_finite_batches_leave_the_range_alone_in_both():
    def run():
        aq = ActFakeQuant(4).train()
        aq(torch.linspace(-1.0, 3.0, 20))
        y = aq(torch.tensor([float("nan"), float("inf"), 1.0, -2.0]))
        fresh = ActFakeQuant(4).train()
        z = fresh(torch.tensor([float("-inf"), 1.0]))
        return y, (float(aq.running_min), float(aq.running_max)), z, bool(fresh.initialized)

    (y1, r1, z1, i1), (y2, r2, z2, i2) = _both(run)
    assert r1 == r2 == (-1.0, 3.0) and i1 is i2 is False
    assert torch.equal(y1.nan_to_num(7.0), y2.nan_to_num(7.0)) and torch.isnan(y1[0])
    assert torch.equal(z1.nan_to_num(7.0), z2.nan_to_num(7.0))


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_quantizer_is_identical_with_and_without_kernels(bits, per_channel):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(12, 5, 3, 3, generator=g) * torch.logspace(-9, 2, 12).reshape(12, 1, 1, 1)
    w[3] = 0.0  # an all-zero channel: the scale's 1e-8 floor
    conv = torch.nn.Conv2d(5, 12, 3, bias=False)
    conv.weight.data.copy_(w)

    def run():
        layer = QuantConv2d.from_float(conv, bits, 32, w_granularity="channel" if per_channel else "tensor")
        wq = layer.quantized_weight()
        wq.backward(torch.ones_like(wq))
        grad = conv.weight.grad.clone()
        conv.weight.grad = None
        return wq.detach(), grad

    (w1, g1), (w2, g2) = _both(run)
    assert torch.equal(w1, w2) and torch.equal(g1, g2) and torch.equal(g1, torch.ones_like(g1))
    scale = weight_scale(w, bits, per_channel)
    q = torch.round(w1 / scale)
    assert torch.equal(q * scale, w1) and q.abs().max() <= 2 ** (bits - 1) - 1


def test_a_training_run_is_identical_with_and_without_kernels(spaces):
    """Whole networks (both operands of a layer in one autograd node, the input layer included):
    the same losses, gradients and parameters after a few Adam steps."""
    space = spaces["digits_small"]
    spec = space.decode(space.sample(4))
    quant = QuantConfig({k: LayerBits(3, 4) for k in spec.quant.layers}, logit_bits=8)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, *space.input_shape, generator=g)
    y = torch.randint(0, space.num_classes, (64,), generator=g)

    def run():
        model = build_model(spec.arch, quant, seed=1).train()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for step in range(4):
            idx = slice(16 * step, 16 * step + 16)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        return losses, {k: v.clone() for k, v in model.state_dict().items()}, model(x)

    (l1, s1, p1), (l2, s2, p2) = _both(run)
    assert l1 == l2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert torch.equal(p1, p2)


def test_input_layer_computes_no_input_gradient():
    """A layer reading the data (no gradient wanted) marks its quantized input non-differentiable."""
    layer = QuantLinear.from_float(torch.nn.Linear(8, 4), 4, 4).train()
    out = layer(torch.randn(5, 8))
    assert out.requires_grad
    xq, wq = layer.operands(torch.randn(5, 8))
    assert not xq.requires_grad and wq.requires_grad


def test_unusable_tensors_take_the_torch_path():
    assert native.usable(torch.zeros(4))
    assert not native.usable(torch.zeros(4, dtype=torch.float64))
    assert not native.usable(torch.zeros(4, 4).t())  # not contiguous
    assert not native.usable(torch.zeros(0))
    aq = ActFakeQuant(4).train()
    x = torch.randn(6, 4).t()  # not contiguous: torch operations, the same quantizer
    y = aq(x)
    scale, zp = aq.qparams()
    assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), 0, 15))


def test_without_a_compiler_the_torch_path_is_used(tmp_path):
    """A fresh process with no usable compiler and an empty cache: no kernels, same results."""
    code = (
        "import torch; from nasq_ray.quant import native, ActFakeQuant\n"
        "aq = ActFakeQuant(4).train(); y = aq(torch.linspace(-1, 3, 50))\n"
        "print(native.available(), float(y.sum()))\n"
    )
    env = {"PATH": "/nonexistent", "CC": "/nonexistent/cc", "NASQ_RAY_CACHE": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    available, total = out.stdout.split()
    assert available == "False"
    assert "kernels unavailable" in out.stderr  # said once, not silently slower
    aq = ActFakeQuant(4).train()
    assert math.isclose(float(total), float(aq(torch.linspace(-1, 3, 50)).sum()), rel_tol=0, abs_tol=0)
    disabled = subprocess.run([sys.executable, "-c", code], env={**env, "NASQ_RAY_NATIVE": "0"},
                              capture_output=True, text=True, timeout=120)
    assert disabled.stdout.split()[0] == "False" and disabled.stderr == ""
