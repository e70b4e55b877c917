"""Bit-widths from sensitivities, HAWQ-V3's integer program: one width per unit (a layer, or the
layers sharing one bit parameter under policy ``block`` / ``uniform``) minimizing the summed
sensitivity under a budget on the cost,

    min  sum_u omega[u][b_u]   subject to   const + sum_u cost[u][b_u] <= budget,

solved exactly with ``scipy.optimize.milp`` (binary x[u, b], one width per unit). Pure data and
functions (no torch): the sensitivities come from :mod:`nasq_ray.quant.sensitivity`, the costs from
the cost model, which is additive over layers for size and BitOPs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class BitSensitivity:
    """What the integer program needs, for one model and one cost metric.

    ``units`` are bit-parameter keys (``KEY.w_bits`` / ``KEY.a_bits`` in the space); per unit and
    weight width: ``omega`` (summed over the unit's layers) and ``cost`` (the unit's share of the
    cost metric, with its activations at ``a_bits[width]``). ``const`` is the cost the units do not
    decide (pinned and float layers, the logit quantizer); ``base`` a config the widths are written
    into. ``layers`` keeps the per-layer numbers for the results folder and the report."""

    metric: str
    units: tuple[str, ...]
    widths: tuple[int, ...]
    a_bits: Mapping[int, int]
    omega: Mapping[str, Mapping[int, float]]
    cost: Mapping[str, Mapping[int, float]]
    const: float
    base: Mapping
    layers: Mapping[str, dict] = field(default_factory=dict)

    def total_cost(self, choice: Mapping[str, int]) -> float:
        return self.const + sum(self.cost[u][choice[u]] for u in self.units)

    def cost_range(self) -> tuple[float, float]:
        """The cheapest and the dearest choice's cost (every unit at its narrowest / widest width)."""
        return (self.total_cost({u: min(self.widths, key=lambda b: self.cost[u][b]) for u in self.units}),
                self.total_cost({u: max(self.widths, key=lambda b: self.cost[u][b]) for u in self.units}))

    def config(self, choice: Mapping[str, int]) -> dict:
        cfg = dict(self.base)
        for u, b in choice.items():
            cfg[f"{u}.w_bits"] = b
            if f"{u}.a_bits" in cfg:
                cfg[f"{u}.a_bits"] = self.a_bits[b]
        return cfg

    def as_json(self) -> dict:
        return {"metric": self.metric, "widths": list(self.widths), "a_bits": {str(k): v for k, v in self.a_bits.items()},
                "units": {u: {"omega": {str(b): v for b, v in self.omega[u].items()},
                              "cost": {str(b): v for b, v in self.cost[u].items()}} for u in self.units},
                "const": self.const, "layers": dict(self.layers)}


def rebased(sens: BitSensitivity, base: Mapping, cost: Callable[[dict], float | None]) -> BitSensitivity:
    """The same sensitivities over another ``base`` config (a pruned one: its layers are smaller):
    each unit's cost read from the cost model as the change from every unit at its widest width."""
    top = max(sens.widths)
    moved = replace(sens, base=dict(base))
    widest = moved.config({u: top for u in sens.units})

    def at(cfg: dict) -> float:
        value = cost(cfg)
        if value is None:
            raise ConfigError(f"objective.cost: {sens.metric} cannot be computed before training; sensitivity-based "
                              "bits need an exact cost")
        return float(value)

    const = at(widest)
    units_cost = {u: {b: at(moved.config({**{v: top for v in sens.units}, u: b})) - const for b in sens.widths}
                  for u in sens.units}
    return replace(moved, cost=units_cost, const=const, base=widest)


def solve_widths(sens: BitSensitivity, budget: float) -> dict[str, int] | None:
    """The width per unit minimizing the summed sensitivity with total cost <= ``budget`` (None
    when not even the cheapest choice fits)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    units, widths = sens.units, sens.widths
    if not units:
        return {}
    n_u, n_b = len(units), len(widths)
    omega = np.array([[sens.omega[u][b] for b in widths] for u in units], dtype=np.float64)
    cost = np.array([[sens.cost[u][b] for b in widths] for u in units], dtype=np.float64)
    scale = max(1e-300, float(np.abs(omega).max()))
    one_each = np.zeros((n_u, n_u * n_b))
    for i in range(n_u):
        one_each[i, i * n_b:(i + 1) * n_b] = 1
    # ties in sensitivity (a layer whose error is 0 at several widths) go to the cheaper width
    tie = 1e-9 * cost.reshape(-1) / max(1.0, float(cost.max()))
    res = milp(c=omega.reshape(-1) / scale + tie, integrality=np.ones(n_u * n_b),
               bounds=Bounds(0, 1),
               constraints=[LinearConstraint(one_each, 1, 1),
                            LinearConstraint(cost.reshape(1, -1), -np.inf, budget - sens.const)])
    if res.status != 0 or res.x is None:
        return None
    x = res.x.reshape(n_u, n_b)
    return {u: widths[int(np.argmax(x[i]))] for i, u in enumerate(units)}


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
