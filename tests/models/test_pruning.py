"""Structured pruning of a user's model with torch-pruning's dependency graph: coupled groups,
channels physically removed, the exact cost model against FlopCounterMode."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nasq_ray.cost import layer_cost, pruned_shapes, summarize
from nasq_ray.models import measure_cost
from nasq_ray.models.pruning import apply_plan_, keep_count, prune_, prune_groups, shape_deltas
from nasq_ray.trials.own_prepare import layer_shapes, shape_fields
from user_model_code import write_user_module


@pytest.fixture(scope="module")
def mynet(tmp_path_factory):
    import importlib
    import sys

    folder = tmp_path_factory.mktemp("user")
    write_user_module(folder)
    sys.path.insert(0, str(folder))
    yield importlib.import_module("mynet")
    sys.path.remove(str(folder))


X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _groups(net):
    return prune_groups(net, X, ignored={"fc"}, order=[n for n, m in net.named_modules()
                                                        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))])


def test_groups_follow_the_residual_add_the_depthwise_conv_the_concat_and_the_flatten(mynet):
    by_name = {g.name: g for g in _groups(mynet.Net())}
    # residual: the stem's channels are added to a's; the depthwise conv keeps them; pw reads them
    stem = by_name["stem.0"]
    assert set(stem.outputs) == {"stem.0", "a", "dw"} and "pw" in stem.inputs
    # concatenation: each branch is its own group, both feeding the classifier through the flatten
    assert set(by_name["b1"].outputs) == {"b1"} and by_name["b1"].inputs == ("fc",)
    assert set(by_name["b2"].outputs) == {"b2"} and by_name["b2"].inputs == ("fc",)
    assert set(by_name["pw"].inputs) == {"b1", "b2"}
    assert "fc" not in by_name  # the classes are never pruned


def _flops_macs(model) -> int:
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, 8, 8))
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("seed", range(4))
def test_pruned_models_run_and_the_cost_model_counts_them_exactly(mynet, seed):
    net = mynet.Net().eval()
    groups = _groups(net)
    rng = np.random.default_rng(seed)
    keep = {g.name: float(rng.choice([1.0, 0.75, 0.5, 0.25])) for g in groups}
    base = layer_shapes(net, (1, 8, 8))
    deltas = shape_deltas(net, X, groups, lambda m: shape_fields(m, (1, 8, 8)))
    pruned = copy.deepcopy(net)
    plan = prune_(pruned, X, keep, groups)
    assert pruned(X).shape == (2, 10)
    for g in groups:
        assert pruned.get_submodule(g.name).out_channels == keep_count(g.channels, keep[g.name])
    measured, _ = measure_cost(pruned, (1, 8, 8))
    assert measured.macs == _flops_macs(pruned)
    removed = {g.name: g.channels - keep_count(g.channels, keep[g.name]) for g in groups}
    predicted = summarize([layer_cost(s) for s in pruned_shapes(base, deltas, removed)])
    assert predicted == measured
    again = mynet.Net().eval()
    again.load_state_dict(net.state_dict())
    apply_plan_(again, X, plan)  # a resumed trial and the export rebuild the same network
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), pruned.state_dict().values()))


def test_l2_importance_keeps_the_channels_with_the_largest_weights(mynet):
    net = mynet.Net().eval()
    groups = [g for g in _groups(net) if g.name == "b1"]
    with torch.no_grad():
        net.b1.weight.mul_(0.01)
        net.b1.weight[3].fill_(5.0)
        net.b1.weight[6].fill_(4.0)
        net.fc.weight.mul_(0.01)
    kept = net.b1.weight[[3, 6]].clone()
    prune_(net, X, {"b1": 0.25}, groups)  # 8 -> 2 channels
    assert net.b1.out_channels == 2 and torch.equal(net.b1.weight, kept)


def test_taylor_importance_reads_gradients(mynet):
    from nasq_ray.models.pruning import taylor_gradients_

    net = mynet.Net().eval()
    groups = _groups(net)
    y = torch.tensor([1, 2])
    taylor_gradients_(net, [(X, y)])
    assert net.b1.weight.grad is not None
    plan = prune_(net, X, {g.name: 0.5 for g in groups}, groups, importance="taylor")
    assert net(X).shape == (2, 10) and len(plan) == len(groups)
