"""Objectives: the combined scalar ``score``, the Pareto front and its hypervolume. Pure functions.

Score forms (``acc`` is the accuracy metric, ``cost`` the chosen cost metric):

* ``mnas``    ``acc * (cost / target) ** w``, MnasNet's soft constraint; ``w = alpha`` where
              ``cost <= target`` and ``w = beta`` above it (alpha = 0, beta = -1 is the hard form).
* ``linear``  ``acc - penalty * cost / target``.
* ``acc``     ``acc`` alone (cost ignored by the scalar; still used by multi-objective searchers).

``max_cost`` is a hard budget on the cost metric: a trial over it scores ``-inf``, never enters the
front, and searchers are told it is infeasible (where the exact cost is known before training, no
config over it is proposed at all).

The scalar feeds ASHA and single-objective searchers; ``(acc, cost)`` feeds multi-objective ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, is_number, unknown_name

FORMS = ("mnas", "linear", "acc")
ACC_METRICS = ("val_acc", "val_f1")
LATENCY_METRIC = "latency_ms"  # onnxruntime latency of the exported network (nasq_ray.deploy.latency)
COMPUTED_COST_METRICS = ("size_kb", "size_bits", "bitops", "macs")  # exact functions of shapes and bits
COST_METRICS = (*COMPUTED_COST_METRICS, LATENCY_METRIC)
DEFAULT_TARGET = 2.0  # kB: the score's target where none is given (size_kb, or a cost where it only scales)
LATENCY_SOURCES = ("model", "table")  # latency_ms: the whole exported network timed, or the latency table's sum


@dataclass(frozen=True)
class ObjectiveConfig:
    """How a trial is scored, and what the searchers optimize."""

    form: str = "mnas"
    acc: str = "val_acc"
    cost: str = "size_kb"
    target: float | None = None  # in the cost's unit; None: DEFAULT_TARGET, and needed for other costs where it ranks
    alpha: float = -0.07
    beta: float = -0.07
    penalty: float = 0.05
    multi: bool = False  # searchers optimize (acc max, cost min) instead of the scalar score
    max_cost: float | None = None  # hard budget on the cost metric (its unit); None: no budget
    latency: str = "model"  # how latency_ms is found: the whole network timed, or the latency table

    def __post_init__(self):
        if self.form not in FORMS:
            raise unknown_name("objective.form", self.form, FORMS)
        if self.acc not in ACC_METRICS:
            raise unknown_name("objective.acc", self.acc, ACC_METRICS)
        if not isinstance(self.cost, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.cost):
            raise ConfigError(f"objective.cost: {self.cost!r} is not allowed; allowed: a metric name such as "
                              f"{', '.join(COST_METRICS)} (or a table's cost column)")
        if self.latency not in LATENCY_SOURCES:
            raise unknown_name("objective.latency", self.latency, LATENCY_SOURCES)
        if self.latency != "model" and self.cost != LATENCY_METRIC:  # it would be silently ignored
            raise ConfigError(f"objective.latency: '{self.latency}' says how {LATENCY_METRIC} is found, and the cost "
                              f"here is {self.cost}; allowed: model, or objective.cost {LATENCY_METRIC} (--cost {LATENCY_METRIC})")
        if self.target is None:
            self._check_target_not_needed()
        elif not _finite_number(self.target) or not self.target > 0:
            raise ConfigError(f"objective.target: {self.target!r} is not allowed; allowed: numbers > 0")
        for name in ("alpha", "beta", "penalty"):  # a NaN here made every trial's score NaN
            if not _finite_number(getattr(self, name)):
                raise ConfigError(f"objective.{name}: {getattr(self, name)!r} is not allowed; allowed: a finite number")
        if self.max_cost is not None and not (_finite_number(self.max_cost) and self.max_cost > 0):
            raise ConfigError(f"objective.max_cost: {self.max_cost!r} is not allowed; allowed: a number > 0 in the "
                              f"cost's unit (objective.cost, here {self.cost}; a table run's: its --table-cost "
                              "column), or none")

    def _check_target_not_needed(self) -> None:
        """Without a target the score uses 2.0 (``DEFAULT_TARGET``, kB). For another cost the target is in
        its unit (2 bitops or 2 ms mean nothing), so it must be given where it changes the ranking: the
        linear form, or mnas with alpha != beta. Elsewhere (mnas with one exponent, acc) it only scales
        the score. Checked again when a table run puts its cost column in (``replace``)."""
        ranks = self.form == "linear" or (self.form == "mnas" and self.alpha != self.beta)
        if self.cost != "size_kb" and ranks:
            what = "the linear form's penalty" if self.form == "linear" else "where mnas switches from alpha to beta"
            raise ConfigError(f"objective.target: needed with objective.cost {self.cost} (it sets {what}; the "
                              f"default {DEFAULT_TARGET} is for size_kb); allowed: a number > 0 in {self.cost}, e.g. "
                              "the cost of a network you would accept (--target)")

    @property
    def target_value(self) -> float:
        """The target the score uses."""
        return DEFAULT_TARGET if self.target is None else float(self.target)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names a searcher optimizes."""
        return (self.acc, self.cost) if self.multi else ("score",)

    @property
    def modes(self) -> tuple[str, ...]:
        return ("max", "min") if self.multi else ("max",)


def _finite_number(x) -> bool:
    return is_number(x) and math.isfinite(x)  # NumPy scalars too


def check_training_cost(cfg: ObjectiveConfig) -> None:
    """A trained trial reports the cost metrics in ``COST_METRICS``; refuse any other name."""
    if cfg.cost not in COST_METRICS:
        raise unknown_name("objective.cost", cfg.cost, COST_METRICS)
    if cfg.cost == LATENCY_METRIC:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ConfigError(f"objective.cost: {LATENCY_METRIC} is measured with onnxruntime, which does not import "
                              "here; allowed without it: " + ", ".join(COMPUTED_COST_METRICS)) from None


def within_budget(cost: float, cfg: ObjectiveConfig) -> bool:
    """Whether ``cost`` keeps to ``cfg.max_cost`` (always, without a budget)."""
    return cfg.max_cost is None or cost <= cfg.max_cost


def budget_violation(cost: float, cfg: ObjectiveConfig) -> float:
    """How far ``cost`` is over ``cfg.max_cost`` (<= 0: within it), Optuna's constraint form."""
    return 0.0 if cfg.max_cost is None else float(cost) - float(cfg.max_cost)


def score(acc: float, cost: float, cfg: ObjectiveConfig) -> float:
    """The combined accuracy-cost scalar (higher is better); ``-inf`` over ``cfg.max_cost``."""
    if not within_budget(cost, cfg):
        return -math.inf
    if cfg.form == "acc":
        return float(acc)
    target = cfg.target_value
    ratio = cost / target
    if cfg.form == "linear":
        return float(acc - cfg.penalty * ratio)
    w = cfg.alpha if cost <= target else cfg.beta
    return float(acc * ratio**w) if ratio > 0 else float(acc)


def pareto_mask(points: Sequence[Sequence[float]], modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated points. ``modes`` is ``"max"``/``"min"`` per objective.

    Duplicated points are all kept on the front.
    """
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        return np.zeros(0, dtype=bool)
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    v = pts * signs  # now every objective is minimized
    mask = np.ones(len(v), dtype=bool)
    for i in range(len(v)):
        dominated = np.all(v <= v[i], axis=1) & np.any(v < v[i], axis=1)
        if dominated.any():
            mask[i] = False
    return mask


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float], modes: Sequence[str]) -> float:
    """Hypervolume dominated by ``points`` up to ``reference`` (Optuna's maintained routine).

    Points that do not dominate the reference point contribute nothing.
    """
    from optuna._hypervolume import compute_hypervolume

    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    pts = np.asarray(points, dtype=float).reshape(-1, len(modes)) * signs
    ref = np.asarray(reference, dtype=float) * signs
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(compute_hypervolume(pts, ref))


def nondominated_ranks(points: Sequence[Sequence[float]], modes: Sequence[str]) -> np.ndarray:
    """Rank of each point in non-dominated sorting (0 = the Pareto front, 1 = front of the rest, ...)."""
    pts = np.asarray(points, dtype=float).reshape(len(points), len(modes)) if len(points) else np.zeros((0, len(modes)))
    ranks = np.full(len(pts), -1, dtype=int)
    remaining = np.arange(len(pts))
    r = 0
    while len(remaining):
        mask = pareto_mask(pts[remaining], modes)
        ranks[remaining[mask]] = r
        remaining = remaining[~mask]
        r += 1
    return ranks


def crowding_distance(points: Sequence[Sequence[float]]) -> np.ndarray:
    """NSGA-II's crowding distance (per-objective normalized gaps; extremes are infinite)."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    if n <= 2:
        return np.full(n, np.inf)
    dist = np.zeros(n)
    for k in range(pts.shape[1]):
        order = np.argsort(pts[:, k], kind="stable")
        span = pts[order[-1], k] - pts[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (pts[order[2:], k] - pts[order[:-2], k]) / span
    return dist


def pareto_order(points: Sequence[Sequence[float]], modes: Sequence[str]) -> np.ndarray:
    """Indices of ``points`` from best to worst in NSGA-II's order: non-dominated rank, then crowding
    distance (larger first) within a rank."""
    pts = np.asarray(points, dtype=float).reshape(len(points), len(modes)) if len(points) else np.zeros((0, len(modes)))
    if not len(pts):
        return np.zeros(0, dtype=int)
    ranks = nondominated_ranks(pts, modes)
    crowd = np.zeros(len(pts))
    for r in np.unique(ranks):
        idx = np.flatnonzero(ranks == r)
        crowd[idx] = crowding_distance(pts[idx])
    return np.lexsort((-crowd, ranks))
