"""Keep ratios for a MACs budget from measured pruning sensitivities: the pruned warm starts of an
own-model search. Pure data and functions (no torch).

Each group of coupled channels has its keep choices and, per choice, the loss increase measured
when that group alone is pruned to it (:func:`nasq_ray.trials.own_sensitivity.prune_sensitivity`).
Starting from no pruning, the plan lowers one group by one step at a time, the step that saves the
most cost per unit of loss increase (losses assumed additive over groups, as HAWQ-V3 assumes of
layers), until the cost is within the budget: torch-pruning's global pruning to a target, with a
measured loss instead of a weight norm ranking the groups. The cost is any function of the keep
ratios (MACs of a conv shrink with the product of its input and output groups' ratios, so no
integer program over additive costs would be exact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

MIN_LOSS_STEP = 1e-6  # a step that costs no measurable loss still ranks by the cost it saves


def plan_keeps(choices: Mapping[str, Sequence[float]], loss_increase: Mapping[str, Mapping[float, float]],
               cost: Callable[[dict[str, float]], float], budget: float) -> dict[str, float] | None:
    """Keep ratios per group with ``cost(keeps) <= budget``, found greedily (see the module doc);
    None when even the lowest ratio of every group is over the budget. ``loss_increase[g][k]`` is
    the loss increase of group ``g`` alone at ratio ``k`` (a group's largest ratio counts as 0)."""
    keeps = {g: max(cs) for g, cs in choices.items()}

    def loss(g: str, k: float) -> float:
        return 0.0 if k == max(choices[g]) else float(loss_increase[g][k])

    current = cost(keeps)
    while current > budget:
        best, best_ratio, best_cost = None, -1.0, current
        for g, cs in choices.items():
            lower = [c for c in cs if c < keeps[g]]
            if not lower:
                continue
            step = {**keeps, g: max(lower)}
            step_cost = cost(step)
            saved = current - step_cost
            if saved <= 0:
                continue
            ratio = saved / max(loss(g, step[g]) - loss(g, keeps[g]), MIN_LOSS_STEP)
            if ratio > best_ratio:
                best, best_ratio, best_cost = step, ratio, step_cost
        if best is None:
            return None
        keeps, current = best, best_cost
    return keeps


def halving_budgets(full: float, cheapest: float, n: int) -> list[float]:
    """Up to ``n`` budgets 1/2, 1/4, 1/8, ... of ``full``, none below ``cheapest`` (the cost at every
    group's lowest ratio)."""
    out = []
    for k in range(1, n + 1):
        budget = full / 2 ** k
        if budget < cheapest:
            break
        out.append(budget)
    return out
