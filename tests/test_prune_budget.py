"""Keep ratios for a MACs budget: the greedy plan stays within the budget, prunes where the
measured loss is lowest first, and says when no plan fits."""

from __future__ import annotations

import pytest

from nasq_ray.prune_budget import halving_budgets, plan_keeps

CHOICES = {"a": [1.0, 0.75, 0.5, 0.25], "b": [1.0, 0.75, 0.5, 0.25], "c": [1.0, 0.5]}


def _macs(keeps):  # a chain a -> b -> c: each layer's cost is the product of its input and output ratios
    return 100 * keeps["a"] + 400 * keeps["a"] * keeps["b"] + 400 * keeps["b"] * keeps["c"] + 50 * keeps["c"]


@pytest.mark.parametrize("budget", [800, 475, 250, 130])
def test_the_plan_is_within_the_budget_and_cheaper_steps_come_first(budget):
    loss = {"a": {0.75: 0.1, 0.5: 0.3, 0.25: 1.0}, "b": {0.75: 0.01, 0.5: 0.02, 0.25: 0.05}, "c": {0.5: 5.0}}
    keeps = plan_keeps(CHOICES, loss, _macs, budget)
    assert _macs(keeps) <= budget
    assert keeps["c"] == 1.0 or keeps["b"] == 0.25  # the sensitive group goes last
    if budget == 475:  # b, the cheapest loss per MAC, goes down alone: 750, 550, then 350
        assert keeps == {"a": 1.0, "b": 0.25, "c": 1.0}


def test_a_step_that_costs_no_measured_loss_still_ranks_by_what_it_saves():
    loss = {"a": {0.75: -0.01, 0.5: -0.01, 0.25: 0.0}, "b": {0.75: 0.0, 0.5: 0.0, 0.25: 0.0}, "c": {0.5: 0.0}}
    keeps = plan_keeps(CHOICES, loss, _macs, 900)
    assert _macs(keeps) <= 900 and sum(v < 1 for v in keeps.values()) == 1  # one step was enough


def test_no_plan_below_the_cheapest_pruning_and_budgets_halve():
    loss = {g: {k: 1.0 - k for k in cs[1:]} for g, cs in CHOICES.items()}
    cheapest = _macs({"a": 0.25, "b": 0.25, "c": 0.5})
    assert plan_keeps(CHOICES, loss, _macs, cheapest - 1) is None
    assert plan_keeps(CHOICES, loss, _macs, cheapest) == {"a": 0.25, "b": 0.25, "c": 0.5}
    full = _macs({"a": 1.0, "b": 1.0, "c": 1.0})
    assert halving_budgets(full, cheapest, 5) == [full / 2, full / 4]  # 1/8 is below the cheapest
    assert halving_budgets(full, cheapest, 1) == [full / 2]
