"""Bit-widths from sensitivities, HAWQ-V3's integer program: one choice of (weight width,
activation width) per unit (a layer, or the layers sharing one bit parameter under policy
``block`` / ``uniform``) minimizing the summed sensitivity under a budget on the cost,

    min  sum_u omega[u][c_u]   subject to   const + sum_u cost[u][c_u] <= budget,

solved exactly with ``scipy.optimize.milp`` (binary x[u, c], one choice per unit). HAWQ-V3 pairs
each weight width with one activation width; here, where the space searches activation widths too,
every pair is a choice and its sensitivity adds the activations' measured share to the weights'
(:mod:`nasq_ray.trials.own_sensitivity`). Pure data and functions (no torch): the sensitivities
come from :mod:`nasq_ray.quant.sensitivity`, the costs from the cost model, which is additive over
layers for size and BitOPs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import ConfigError

Choice = tuple[int, int]  # (w_bits, a_bits)


@dataclass(frozen=True)
class BitSensitivity:
    """What the integer program needs, for one model and one cost metric.

    ``units`` are bit-parameter keys (``KEY.w_bits`` / ``KEY.a_bits`` in the space); ``choices``
    the (w_bits, a_bits) pairs a unit may take; per unit and choice: ``omega`` (summed over the
    unit's layers) and ``cost`` (the unit's share of the cost metric; under :func:`rebased`, the
    change from the unit at its widest choice). ``const`` is the cost the units do not decide
    (pinned and float layers, the logit quantizer; under :func:`rebased`, the cost with every unit
    at its widest choice); ``base`` a config the choices are written into. ``layers`` keeps the per-layer numbers for the results folder and
    the report."""

    metric: str
    units: tuple[str, ...]
    choices: tuple[Choice, ...]
    omega: Mapping[str, Mapping[Choice, float]]
    cost: Mapping[str, Mapping[Choice, float]]
    const: float
    base: Mapping
    layers: Mapping[str, dict] = field(default_factory=dict)

    @property
    def widths(self) -> tuple[int, ...]:
        """The weight widths, narrowest first."""
        return tuple(sorted({w for w, _ in self.choices}))

    def widest(self) -> Choice:
        return max(self.choices)

    def total_cost(self, choice: Mapping[str, Choice]) -> float:
        return self.const + sum(self.cost[u][choice[u]] for u in self.units)

    def cost_range(self) -> tuple[float, float]:
        """The cheapest and the dearest choice's cost (every unit at its cheapest / dearest pair)."""
        return (self.total_cost({u: min(self.choices, key=lambda c: self.cost[u][c]) for u in self.units}),
                self.total_cost({u: max(self.choices, key=lambda c: self.cost[u][c]) for u in self.units}))

    def config(self, choice: Mapping[str, Choice]) -> dict:
        cfg = dict(self.base)
        for u, (w, a) in choice.items():
            cfg[f"{u}.w_bits"] = w
            if f"{u}.a_bits" in cfg:
                cfg[f"{u}.a_bits"] = a
        return cfg

    def as_json(self) -> dict:
        def key(c: Choice) -> str:
            return f"{c[0]}/{c[1]}"

        return {"metric": self.metric, "choices": [key(c) for c in self.choices],
                "units": {u: {"omega": {key(c): v for c, v in self.omega[u].items()},
                              "cost": {key(c): v for c, v in self.cost[u].items()}} for u in self.units},
                "const": self.const, "layers": dict(self.layers)}


def rebased(sens: BitSensitivity, base: Mapping, cost: Callable[[dict], float | None]) -> BitSensitivity:
    """The same sensitivities over another ``base`` config (a pruned one: its layers are smaller):
    each unit's cost read from the cost model as the change from every unit at its widest width."""
    top = sens.widest()
    moved = replace(sens, base=dict(base))
    widest = moved.config({u: top for u in sens.units})

    def at(cfg: dict) -> float:
        value = cost(cfg)
        if value is None:
            raise ConfigError(f"objective.cost: {sens.metric} cannot be computed before training; sensitivity-based "
                              "bits need an exact cost")
        return float(value)

    const = at(widest)
    units_cost = {u: {c: at(moved.config({**{v: top for v in sens.units}, u: c})) - const for c in sens.choices}
                  for u in sens.units}
    return replace(moved, cost=units_cost, const=const, base=widest)


def solve_widths(sens: BitSensitivity, budget: float) -> dict[str, Choice] | None:
    """The (w_bits, a_bits) per unit minimizing the summed sensitivity with total cost <= ``budget``
    (None when not even the cheapest choice fits)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    units, choices = sens.units, sens.choices
    if not units:
        return {}
    n_u, n_c = len(units), len(choices)
    omega = np.array([[sens.omega[u][c] for c in choices] for u in units], dtype=np.float64)
    cost = np.array([[sens.cost[u][c] for c in choices] for u in units], dtype=np.float64)
    scale = max(1e-300, float(np.abs(omega).max()))
    one_each = np.zeros((n_u, n_u * n_c))
    for i in range(n_u):
        one_each[i, i * n_c:(i + 1) * n_c] = 1
    res = milp(c=omega.reshape(-1) / scale, integrality=np.ones(n_u * n_c),
               bounds=Bounds(0, 1),
               constraints=[LinearConstraint(one_each, 1, 1),
                            LinearConstraint(cost.reshape(1, -1), -np.inf, budget - sens.const)])
    if res.status != 0 or res.x is None:
        return None
    x = res.x.reshape(n_u, n_c)
    # ties in sensitivity (a layer whose error is 0 at several widths) go to the cheapest of them, and
    # among those to the widest (the solver stops within a relative gap: it does not break them itself)
    picked = [int(np.argmax(x[i])) for i in range(n_u)]
    return {u: choices[min((j for j in range(n_c) if omega[i, j] <= omega[i, picked[i]]),
                           key=lambda j: (cost[i, j], -j))] for i, u in enumerate(units)}


def spread_budgets(sens: BitSensitivity, n: int, max_cost: float | None = None) -> list[float]:
    """``n`` budgets from the cheapest choice's cost to the dearest's (or ``max_cost``), evenly on a
    log scale (bits multiply a cost: BitOPs grow with w x a, so an even linear spread would leave
    the narrow widths with one budget)."""
    lo, hi = sens.cost_range()
    if max_cost is not None:
        hi = min(hi, max_cost)
    if n <= 1:
        return [hi]
    if lo <= 0:
        return [lo + (hi - lo) * k / (n - 1) for k in range(n)]
    return [lo * (hi / lo) ** (k / (n - 1)) for k in range(n)]


def hawq_configs(sens: BitSensitivity, budgets: Sequence[float]) -> list[tuple[float, dict]]:
    """One config per budget (distinct; a budget below the cheapest choice gives none)."""
    out, seen = [], []
    for budget in budgets:
        choice = solve_widths(sens, float(budget))
        if choice is None:
            continue
        cfg = sens.config(choice)
        if cfg not in seen:
            seen.append(cfg)
            out.append((float(budget), cfg))
    return out


def check_budgets(budgets, field_name: str = "searcher_args.budgets") -> list[float]:
    if not isinstance(budgets, (list, tuple)) or not budgets or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 for b in budgets):
        raise ConfigError(f"{field_name}: {budgets!r} is not allowed; allowed: a list of costs > 0 in the cost "
                          "metric's unit, e.g. [20, 30, 40]")
    return [float(b) for b in budgets]
