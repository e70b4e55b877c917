"""HAWQ-V3's integer program: the exact optimum under a budget, and the budgets spread."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nasq_ray.errors import ConfigError
from nasq_ray.hawq import BitSensitivity, check_budgets, hawq_configs, solve_widths, spread_budgets

WIDTHS = (2, 4, 8)
CHOICES = ((2, 4), (4, 4), (8, 8))  # HAWQ-V3's pairing: activations move with the weights


def _sens(seed: int, units: int = 4, choices=CHOICES) -> BitSensitivity:
    rng = np.random.default_rng(seed)
    omega, cost = {}, {}
    for k in range(units):
        n = int(rng.integers(10, 200))
        scale = float(rng.uniform(0.1, 10))
        act = float(rng.uniform(0.0, 2))
        omega[f"l{k}"] = {(w, a): scale * 4.0 ** -w + act * 4.0 ** -a for w, a in choices}
        cost[f"l{k}"] = {(w, a): float(n * w * a) for w, a in choices}
    base = {f"l{k}.w_bits": 8 for k in range(units)} | {f"l{k}.a_bits": 8 for k in range(units)}
    return BitSensitivity("bitops", tuple(omega), tuple(choices), omega, cost, 100.0, base)


@pytest.mark.parametrize("seed, choices", [(s, CHOICES) for s in range(4)] + [
    (s, tuple((w, a) for w in WIDTHS for a in (4, 8))) for s in range(3)])
def test_the_program_finds_the_least_sensitive_choice_within_the_budget(seed, choices):
    sens = _sens(seed, 3, choices)
    lo, hi = sens.cost_range()
    for budget in np.linspace(lo, hi, 7):
        choice = solve_widths(sens, budget)
        best = min((dict(zip(sens.units, c)) for c in itertools.product(sens.choices, repeat=len(sens.units))
                    if sens.total_cost(dict(zip(sens.units, c))) <= budget + 1e-9),
                   key=lambda c: sum(sens.omega[u][c[u]] for u in sens.units))
        assert sens.total_cost(choice) <= budget + 1e-9
        assert sum(sens.omega[u][choice[u]] for u in sens.units) == pytest.approx(
            sum(sens.omega[u][best[u]] for u in sens.units), rel=1e-6)


def test_below_the_cheapest_choice_there_is_no_solution_and_budgets_spread_over_the_range():
    sens = _sens(0)
    lo, hi = sens.cost_range()
    assert solve_widths(sens, lo - 1) is None
    budgets = spread_budgets(sens, 5)
    assert budgets[0] == lo and budgets[-1] == pytest.approx(hi) and len(budgets) == 5
    ratios = [b / a for a, b in zip(budgets, budgets[1:])]
    assert ratios == pytest.approx([ratios[0]] * 4)  # even on a log scale
    assert spread_budgets(sens, 3, max_cost=(lo + hi) / 2)[-1] == pytest.approx((lo + hi) / 2)
    configs = hawq_configs(sens, budgets)
    assert configs[0][1]["l0.w_bits"] == 2 and configs[0][1]["l0.a_bits"] == 4  # activations move with weights
    assert all(c["l0.w_bits"] == 8 for _, c in configs[-1:])
    with pytest.raises(ConfigError, match="searcher_args.budgets"):
        check_budgets([10, -1])


def test_rebased_costs_are_the_cost_models_over_the_new_base():
    from nasq_ray.hawq import rebased

    sens = _sens(1)
    n = {u: sens.cost[u][(8, 8)] / 64 for u in sens.units}

    def cost(cfg):  # a pruned base: every layer at half its MACs
        return 7.0 + sum(n[u] * cfg["keep"] * cfg[f"{u}.w_bits"] * cfg[f"{u}.a_bits"] for u in sens.units)

    moved = rebased(sens, {**sens.base, "keep": 0.5}, cost)
    assert moved.base["keep"] == 0.5 and moved.omega == sens.omega
    for budget in np.linspace(*moved.cost_range(), 5):
        choice = solve_widths(moved, budget)
        assert moved.total_cost(choice) == pytest.approx(cost(moved.config(choice)))
        assert cost(moved.config(choice)) <= budget + 1e-9
    with pytest.raises(ConfigError, match="objective.cost"):
        rebased(sens, sens.base, lambda cfg: None)


def test_with_activation_widths_as_choices_the_sensitive_activations_stay_wide():
    choices = tuple((w, a) for w in (2, 4, 8) for a in (4, 8))
    omega = {"l0": {(w, a): 4.0 ** -w + (10.0 if a == 4 else 0.0) for w, a in choices},
             "l1": {(w, a): 4.0 ** -w for w, a in choices}}
    cost = {u: {(w, a): float(w * a) for w, a in choices} for u in omega}
    base = {"l0.w_bits": 8, "l0.a_bits": 8, "l1.w_bits": 8, "l1.a_bits": 8}
    sens = BitSensitivity("bitops", ("l0", "l1"), choices, omega, cost, 0.0, base)
    assert solve_widths(sens, 2 * 8 + 2 * 4) == {"l0": (2, 8), "l1": (2, 4)}  # narrow weights, wide activations
    assert sens.config({"l0": (2, 8), "l1": (2, 4)}) == {"l0.w_bits": 2, "l0.a_bits": 8, "l1.w_bits": 2, "l1.a_bits": 4}


@pytest.mark.parametrize("shift", [0.0, -1e6])  # costs as the units' totals or as changes from their widest
def test_ties_in_sensitivity_go_to_the_cheapest_choice_then_the_widest(shift):
    choices = ((4, 4), (4, 8), (8, 4), (8, 8))
    omega = {"flat": {c: 0.0 if c[0] == 8 else 1.0 for c in choices},  # no loss at w=8, whatever a
             "free": {c: 0.0 if c[0] == 8 else 1.0 for c in choices}}
    cost = {"flat": {(w, a): float(w * a) + shift for w, a in choices},  # a costs: the cheaper a wins
            "free": {(w, a): float(w) + shift for w, a in choices}}  # a is free (size): the wider a wins
    sens = BitSensitivity("bitops", ("flat", "free"), choices, omega, cost, -2 * shift, {})
    for budget in (sens.total_cost({"flat": (8, 4), "free": (8, 4)}), sens.cost_range()[1] + 1e3):
        assert solve_widths(sens, budget) == {"flat": (8, 4), "free": (8, 8)}
