"""Gradient-based search: the super-network, its exact expected cost, derivation and the trial."""

from __future__ import annotations

import json

import pytest
import torch

from nasq_ray.data import Split
from nasq_ray.trials.dnas import MixedOp, SuperNet, _MixedLayer, run_dnas_trial, search
from nasq_ray.models import build_model, measure_cost
from nasq_ray.objective import ObjectiveConfig
from nasq_ray.space import SearchSpace
from nasq_ray.space import load_space
from nasq_ray.trials.trained import TrialContext

SMALL = {
    "name": "small", "input": "image",
    "stages": [
        {"channels": 8, "ops": ["conv3x3", "dwsep3x3", "conv1x1"], "connections": "residual"},
        {"channels": 12, "stride": 2, "repeats": 2, "ops": ["conv3x3", "maxpool", "identity"],
         "connections": ["sequential", "parallel"], "branch_ops": ["conv1x1", "avgpool"], "merge": "concat"},
    ],
    "head": {"pool": "avg", "hidden_layers": 1, "hidden": 16},
    "quant": {"w_bits": [2, 4, 8, 32], "a_bits": [4, 8, 32], "logit_bits": [8, 32]},
    "train": {"lr": 0.01, "batch_size": 32},
}


def _space():
    return SearchSpace(SMALL, (1, 8, 8), 10, source="small")


def _force(net: SuperNet, rng) -> None:
    """Make one choice per relaxed decision overwhelmingly likely."""
    with torch.no_grad():
        for p in net.arch_parameters():
            p.zero_()
            p[int(rng.integers(len(p)))] = 60.0


@pytest.mark.parametrize("metric", ["size_bits", "size_kb", "bitops", "macs"])
def test_expected_cost_is_exact_for_one_hot_choices(metric):
    import numpy as np

    space = _space()
    rng = np.random.default_rng(0)
    for seed in range(5):
        cfg = space.sample(seed)
        net = SuperNet(space, cfg)
        _force(net, rng)
        net.set_temperature(1.0)
        derived = net.derive(cfg)
        spec = space.decode(derived)
        cost, _ = measure_cost(build_model(spec.arch, spec.quant), space.input_shape)
        expected = float(net.expected_cost(metric).detach())
        assert expected == pytest.approx(getattr(cost, metric), rel=1e-5), (metric, seed)


def test_supernet_relaxes_ops_and_bits_and_derives_a_valid_config():
    space = _space()
    cfg = space.sample(3)
    net = SuperNet(space, cfg)
    ops = [m for m in net.modules() if isinstance(m, MixedOp)]
    layers = [m for m in net.modules() if isinstance(m, _MixedLayer)]
    assert ops and layers
    assert all(m.w_choices == (2, 4, 8, 32) and m.act.choices == (4, 8, 32) for m in layers)
    out = net(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 10)
    derived = net.derive(cfg)
    assert space.validate(derived) == derived
    # the macro-architecture is kept: channels, depth, connections
    for k in ("s1.b0.conn", "s1.b1.conn"):
        assert derived[k] == cfg[k]


@pytest.mark.parametrize("policy", ["block", "uniform"])
def test_derived_bits_under_a_shared_width_policy_are_the_widest_chosen(policy):
    import numpy as np

    space = SearchSpace({**SMALL, "quant": {**SMALL["quant"], "policy": policy}}, (1, 8, 8), 10, source="small")
    cfg = space.sample(1)
    net = SuperNet(space, cfg)
    _force(net, np.random.default_rng(4))
    derived = net.derive(cfg)
    chosen: dict[str, list[int]] = {}
    modules = dict(net.net.named_modules())
    for path, mod in modules.items():
        if not isinstance(mod, _MixedLayer):
            continue
        if ".cands." in path:  # a candidate op's layer counts only when that op won
            owner, _, rest = path.partition(".cands.")
            k, _, rel = rest.partition(".")
            if int(k) != int(modules[owner].logits.argmax()):
                continue
            path = f"{owner}.{rel}"
        chosen.setdefault(space.bits_key(path), []).append(mod.w_choices[int(mod.w_logits.argmax())])
    assert chosen
    for key, widths in chosen.items():
        assert derived[f"{key}.w_bits"] == max(widths)


def test_cost_weight_drives_the_search_to_cheaper_networks(digits):
    space = load_space("digits_small", digits.input_shape, digits.num_classes)
    cfg = space.sample(0)
    train = Split(digits.train.x[:400], digits.train.y[:400])
    ctx = TrialContext(space, train, digits.val, 4, ObjectiveConfig(cost="size_kb"))

    def size(weight):
        derived = search(space, cfg, ctx, cost_weight=weight, tau0=1.0, epochs=3, arch_lr=0.05)
        spec = space.decode(derived)
        return measure_cost(build_model(spec.arch, spec.quant), space.input_shape)[0].size_kb

    assert size(20.0) < size(0.0)


def test_dnas_trial_reports_the_retrained_derived_network(digits):
    space = load_space("digits_small", digits.input_shape, digits.num_classes)
    cfg = {**space.sample(1), "dnas.cost_weight": 0.5, "dnas.tau": 2.0, "dnas.search_epochs": 1}
    train = Split(digits.train.x[:300], digits.train.y[:300])
    ctx = TrialContext(space, train, digits.val, 2, ObjectiveConfig())
    reports = []
    final = run_dnas_trial(cfg, ctx, lambda m, p: reports.append((m, p)))
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    derived = json.loads(final["derived_config"])
    assert space.validate(derived) == derived
    assert final["dnas_cost_weight"] == 0.5 and final["val_acc"] > 0
    # a checkpoint taken while retraining resumes the retraining without searching again
    resumed = []
    run_dnas_trial(cfg, TrialContext(space, train, digits.val, 3, ObjectiveConfig()),
                   lambda m, p: resumed.append(m), state=reports[-1][1])
    assert [m["epoch"] for m in resumed] == [3] and resumed[0]["derived_config"] == final["derived_config"]
