"""Bits chosen from the value range (policy ``auto``): SQNR math, narrow vs wide ranges, thresholds,
calibration hooks, and a trial that chooses its own bits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nasq_ray.data import Split
from nasq_ray.errors import NasqError
from nasq_ray.objective import ObjectiveConfig
from nasq_ray.quant import LayerBits, fake_quant_weight
from nasq_ray.quant.auto_bits import activation_bits, bits_from_table, bits_table, choose_bits, sqnr_db, weight_bits
from nasq_ray.space import SearchSpace
from nasq_ray.trials.trained import TrialContext, run_trial

CANDIDATES = (2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 32)


def narrow(shape, gen) -> torch.Tensor:
    """Values that fill their range evenly: uniform in [-1, 1] (max / RMS = sqrt(3))."""
    return torch.rand(shape, generator=gen) * 2 - 1


def wide(shape, gen, outlier: float = 1.0, every: int = 500) -> torch.Tensor:
    """Mostly tiny values (std 0.01) and a few outliers (one per ``every`` values, per row):
    the same max as :func:`narrow`, but the bulk of the values sits near zero."""
    x = torch.randn(shape, generator=gen) * 0.01
    flat = x.view(-1)
    flat[::every] = outlier
    return x


# ------------------------------------------------------------------------------------------- SQNR


def test_sqnr_db_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    xq = torch.tensor([1.0, 2.0, 3.0, 5.0])  # signal 1 + 4 + 9 + 16 = 30, noise 1
    assert sqnr_db(x, xq) == pytest.approx(10 * math.log10(30.0))
    assert sqnr_db(x, x.clone()) == math.inf
    assert sqnr_db(torch.zeros(3), torch.ones(3)) == -math.inf
    x = torch.tensor([[3.0, -4.0]])
    assert sqnr_db(x, x * 0.9) == pytest.approx(20.0)  # noise = 1% of the signal


def test_weight_bits_follow_six_db_per_bit():
    """Uniform weights quantized with max-abs scale: SQNR = 20 log10(2 qmax) dB, about 23 dB at 4
    bits and 36 dB at 6 bits, so 30 dB needs 6 of (2, 4, 6, 8)."""
    w = narrow((16, 4096), torch.Generator().manual_seed(0))
    for bits in (4, 6, 8):
        qmax = 2 ** (bits - 1) - 1
        assert sqnr_db(w, fake_quant_weight(w, bits)) == pytest.approx(20 * math.log10(2 * qmax), abs=0.3)
    assert weight_bits(w, (2, 4, 6, 8), 30.0) == 6
    assert weight_bits(w, (8, 4, 2, 6), 30.0) == 6  # candidate order does not matter
    assert weight_bits(w, (2, 4), 30.0) == 32  # none is enough: float
    assert weight_bits(w, (32,), 30.0) == 32


# --------------------------------------------------------------------------- narrow vs wide ranges


def test_weight_narrow_range_needs_fewer_bits_than_wide():
    gen = torch.Generator().manual_seed(1)
    w_narrow, w_wide = narrow((8, 1000), gen), wide((8, 1000), gen)
    assert w_narrow.abs().amax(1).min() > 0.99 and w_wide.abs().amax(1).min() == 1.0  # same max per channel
    for db in (20.0, 30.0, 40.0):
        assert weight_bits(w_narrow, CANDIDATES, db) < weight_bits(w_wide, CANDIDATES, db), db


def test_activation_narrow_range_needs_fewer_bits_than_wide():
    gen = torch.Generator().manual_seed(2)
    x_narrow = torch.rand((64, 100), generator=gen)  # uniform in [0, 1]
    x_wide = wide((64, 100), gen).abs()  # in [0, 1], mostly near 0
    for scheme in ("affine", "symmetric"):
        for db in (20.0, 30.0, 40.0):
            assert activation_bits(x_narrow, CANDIDATES, db, scheme) < activation_bits(x_wide, CANDIDATES, db, scheme)


def test_activation_bits_uses_the_given_range():
    x = torch.rand((32, 32), generator=torch.Generator().manual_seed(3))
    assert activation_bits(x, CANDIDATES, 30.0) <= activation_bits(x, CANDIDATES, 30.0, value_range=(-50.0, 50.0))


@pytest.mark.parametrize("seed", range(5))
def test_higher_threshold_never_fewer_bits(seed):
    gen = torch.Generator().manual_seed(seed)
    w = wide((4, 300), gen, every=50 + 40 * seed) + narrow((4, 300), gen) * 0.1 * seed
    x = torch.randn((16, 50), generator=gen).relu() ** (1 + seed)
    dbs = [5.0 * k for k in range(1, 20)]
    w_bits = [weight_bits(w, CANDIDATES, db) for db in dbs]
    a_bits = [activation_bits(x, CANDIDATES, db) for db in dbs]
    assert w_bits == sorted(w_bits) and a_bits == sorted(a_bits)
    assert w_bits[0] < w_bits[-1] and a_bits[0] < a_bits[-1]  # the sweep does change the answer
    assert all(b in CANDIDATES for b in w_bits + a_bits)


# ---------------------------------------------------------------------------------------- choose_bits


class TwoLayers(nn.Module):
    """Two Linear layers side by side: ``a`` reads the first 16 input features, ``b`` the rest."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 8)
        self.b = nn.Linear(16, 8)

    def forward(self, x):
        return self.a(x[:, :16]) + self.b(x[:, 16:])


def test_choose_bits_narrow_vs_wide_layers():
    gen = torch.Generator().manual_seed(4)
    model = TwoLayers()
    with torch.no_grad():
        model.a.weight.copy_(narrow((8, 16), gen))
        model.b.weight.copy_(wide((8, 16), gen, every=16))  # one outlier per output channel
    # a's inputs fill [0, 1]; b's are mostly tiny with a few large values
    batches = [torch.cat([torch.rand((32, 16), generator=gen), wide((32, 16), gen, every=97).abs()], 1)
               for _ in range(3)]
    bits = choose_bits(model, batches, CANDIDATES, CANDIDATES, 30.0, ["a", "b"])
    assert set(bits) == {"a", "b"}
    assert bits["a"].w_bits < bits["b"].w_bits
    assert bits["a"].a_bits < bits["b"].a_bits
    # the same answers as the per-tensor functions on the same values
    assert bits["a"] == LayerBits(weight_bits(model.a.weight, CANDIDATES, 30.0),
                                  activation_bits(torch.cat([x[:, :16] for x in batches]), CANDIDATES, 30.0))
    # hooks are gone and the model is unchanged
    assert not model.a._forward_pre_hooks and not model.b._forward_pre_hooks


def test_choose_bits_errors():
    model = TwoLayers()
    with pytest.raises(NasqError, match="'c'"):
        choose_bits(model, [torch.zeros(2, 32)], (4, 8), (4, 8), 30.0, ["a", "c"])
    with pytest.raises(NasqError, match="no calibration batch"):
        choose_bits(model, [], (4, 8), (4, 8), 30.0, ["a"])


def test_bits_table_round_trip():
    bits = {"x": LayerBits(4, 8), "y": LayerBits(32, 2)}
    table = bits_table(bits, ["y", "x"])
    assert table.tolist() == [[32, 2], [4, 8]]
    assert bits_from_table(table, ["y", "x"]) == bits
    with pytest.raises(NasqError, match="3 layers"):
        bits_from_table(table, ["x", "y", "z"])


# ------------------------------------------------------------------------------------------- trial


TINY_AUTO = {
    "name": "tiny_auto", "input": "image",
    "stages": [{"channels": [4, 8], "ops": ["conv3x3", "dwsep3x3"], "connections": ["sequential", "residual"]},
               {"channels": 8, "stride": 2, "ops": ["conv3x3", "dwsep3x3"]}],
    "head": {"pool": "avg", "hidden_layers": 1, "hidden": 16},
    "quant": {"policy": "auto", "w_bits": [2, 3, 4, 6, 8], "a_bits": [3, 4, 6, 8], "logit_bits": 32},
    "train": {"lr": 0.01, "batch_size": 32},
}


@pytest.mark.parametrize("pin", [None, 8])
def test_trial_with_auto_policy_chooses_bits_from_candidates(digits, pin):
    raw = {**TINY_AUTO, "quant": {**TINY_AUTO["quant"], **({"pin_first_last": pin} if pin else {})}}
    space = SearchSpace(raw, digits.input_shape, digits.num_classes, source="tiny_auto")
    ctx = TrialContext(space, Split(digits.train.x[:200], digits.train.y[:200]), digits.val, 1,
                       ObjectiveConfig(target=1.0))
    reports = []
    cfg = space.sample(0)
    run_trial(cfg, ctx, lambda m, p: reports.append((m, p)))
    (metrics, payload), = reports
    assert metrics["status"] == "complete"
    auto = space.decode(cfg).auto_bits
    table = payload["model"]["auto_bits"]
    assert table.shape == (len(auto.layers), 2)
    chosen = bits_from_table(table, auto.layers)
    for L, b in chosen.items():
        assert b.w_bits in (2, 3, 4, 6, 8) and b.a_bits in (3, 4, 6, 8), (L, b)  # integer widths, not float
    # the report's bits string shows the chosen widths, pinned layers at 8/8
    parts = metrics["w_bits_str"].split()
    layers = space.layers(cfg)
    assert len(parts) == len(layers)
    for L, part in zip(layers, parts):
        assert part == ("8/8" if space.pinned(L) else f"{chosen[L].w_bits}/{chosen[L].a_bits}")
    assert 0 < metrics["avg_w_bits"] < 32
