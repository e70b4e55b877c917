"""Trial schedulers by name: Ray Tune's own, used as they are, and ``moasha``.

Each factory is called as ``factory(metric=, mode=, max_t=, seed=, objective=, **scheduler_args)``
and returns a Ray ``TrialScheduler``; plug-ins register in the entry-point group
``nasq_ray.schedulers`` (their factories may accept any subset of those keywords).

* ``fifo``       no early stopping.
* ``asha``       asynchronous successive halving on ``score`` (first rung at a fifth of the budget).
* ``hyperband``  synchronous HyperBand brackets on ``score``.
* ``median``     stop a trial whose ``score`` falls below the median of others at the same epoch.
* ``pbt``        population-based training: exploits better trials' checkpoints and perturbs the
                 ``train.*`` hyperparameters. Ray refuses it with a search algorithm, so it samples
                 its starting configs at random (only ``--searcher random`` goes with it).
* ``moasha``     Pareto-aware asynchronous successive halving for multi-objective runs: at each rung
                 a trial goes on if it ranks in the top ``1/reduction_factor`` of the trials recorded
                 there by non-dominated rank on (accuracy max, cost min), ties broken by crowding
                 distance, instead of by one scalar.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import entry_points

import numpy as np
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from .errors import ConfigError, unknown_name
from .objective import ObjectiveConfig, crowding_distance, nondominated_ranks

ENTRY_POINT_GROUP = "nasq_ray.schedulers"


def _fifo(**_):
    return FIFOScheduler()


def _asha(metric, mode, max_t, grace_period=None, reduction_factor=3, **_):
    grace_period = grace_period or max(1, max_t // 5)
    return tune.schedulers.ASHAScheduler(metric=metric, mode=mode, max_t=max_t, grace_period=grace_period,
                                         reduction_factor=reduction_factor)


def _hyperband(metric, mode, max_t, reduction_factor=3, **_):
    return tune.schedulers.HyperBandScheduler(metric=metric, mode=mode, max_t=max_t,
                                              reduction_factor=reduction_factor)


def _median(metric, mode, max_t, grace_period=None, min_samples_required=3, **_):
    return tune.schedulers.MedianStoppingRule(
        time_attr="training_iteration", metric=metric, mode=mode,
        grace_period=grace_period or max(1, max_t // 5), min_samples_required=min_samples_required)


def _pbt(metric, mode, max_t, seed=0, space=None, perturbation_interval=None, quantile_fraction=0.25,
         resample_probability=0.25, **_):
    from .tune import ClipToSpace, pbt_mutations

    mutations = pbt_mutations(space)
    return tune.schedulers.PopulationBasedTraining(
        time_attr="training_iteration", metric=metric, mode=mode,
        perturbation_interval=perturbation_interval or max(1, max_t // 5),
        hyperparam_mutations=mutations, quantile_fraction=quantile_fraction,
        resample_probability=resample_probability, custom_explore_fn=ClipToSpace(space))


class MOASHAScheduler(FIFOScheduler):
    """Asynchronous successive halving that promotes by Pareto rank, not by one scalar."""

    def __init__(self, objective: ObjectiveConfig, max_t: int, grace_period: int = 1, reduction_factor: float = 3):
        super().__init__()
        if grace_period < 1 or reduction_factor <= 1:
            raise ConfigError(f"scheduler_args: grace_period={grace_period}, reduction_factor={reduction_factor}: "
                              "need grace_period >= 1 and reduction_factor > 1")
        self.acc, self.cost = objective.acc, objective.cost
        self.rf = reduction_factor
        self.max_t = max_t
        rungs, r = [], grace_period
        while r < max_t:
            rungs.append(int(r))
            r = r * reduction_factor
        self.rungs = sorted(set(rungs))
        self.recorded: dict[int, dict[str, tuple[float, float]]] = {r: {} for r in self.rungs}

    def on_trial_result(self, tune_controller, trial, result):
        t = int(result.get("training_iteration", 0))
        if result.get("status") == "failed" or t >= self.max_t:
            return TrialScheduler.STOP
        if t not in self.recorded or self.acc not in result or self.cost not in result:
            return TrialScheduler.CONTINUE
        rung = self.recorded[t]
        rung[trial.trial_id] = (float(result[self.acc]), float(result[self.cost]))
        return TrialScheduler.CONTINUE if self.promotable(rung, trial.trial_id) else TrialScheduler.STOP

    def promotable(self, rung: dict[str, tuple[float, float]], trial_id: str) -> bool:
        """Whether ``trial_id`` ranks in the top ``1/rf`` of ``rung`` (at least the single best goes on)."""
        ids = list(rung)
        pts = np.asarray([rung[i] for i in ids], dtype=float)
        ranks = nondominated_ranks(pts, ("max", "min"))
        crowd = np.zeros(len(ids))
        for r in np.unique(ranks):
            idx = np.flatnonzero(ranks == r)
            crowd[idx] = crowding_distance(pts[idx] * np.array([1.0, -1.0]))
        order = np.lexsort((-crowd, ranks))
        keep = max(1, int(len(ids) / self.rf))
        return ids.index(trial_id) in set(order[:keep].tolist())

    def debug_string(self) -> str:
        return f"MOASHA: rungs {self.rungs}, " + ", ".join(f"{r}: {len(v)}" for r, v in self.recorded.items())


def _moasha(max_t, objective=None, grace_period=None, reduction_factor=3, **_):
    return MOASHAScheduler(objective or ObjectiveConfig(), max_t, grace_period or max(1, max_t // 5), reduction_factor)


SCHEDULERS: dict[str, Callable] = {"fifo": _fifo, "asha": _asha, "hyperband": _hyperband, "median": _median,
                                   "pbt": _pbt, "moasha": _moasha}
_ARGS = {"asha": ("grace_period", "reduction_factor"), "hyperband": ("reduction_factor",),
         "median": ("grace_period", "min_samples_required"), "fifo": (),
         "pbt": ("perturbation_interval", "quantile_fraction", "resample_probability"),
         "moasha": ("grace_period", "reduction_factor")}


def scheduler_names() -> list[str]:
    return sorted(set(SCHEDULERS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def build_scheduler(name: str, args: dict, *, metric: str, mode: str, max_t: int, seed: int,
                    objective: ObjectiveConfig, space=None) -> TrialScheduler:
    """The scheduler ``name`` with user ``args``; unknown names and arguments raise naming them."""
    if name in SCHEDULERS:
        bad = sorted(set(args) - set(_ARGS[name]))
        if bad:
            raise ConfigError(f"scheduler_args: scheduler '{name}' does not accept {bad}; allowed: "
                              f"{', '.join(_ARGS[name]) or 'none'}")
        return SCHEDULERS[name](metric=metric, mode=mode, max_t=max_t, seed=seed, objective=objective,
                                space=space, **args)
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in eps:
        raise unknown_name("scheduler", name, scheduler_names())
    factory = eps[name].load()
    offered = dict(metric=metric, mode=mode, max_t=max_t, seed=seed, objective=objective, space=space)
    try:
        params = inspect.signature(factory).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
        inspect.signature(factory).bind(**kwargs, **args)
    except TypeError as e:
        raise ConfigError(f"scheduler_args: scheduler '{name}' rejects {sorted(args)}: {e}") from None
    sched = factory(**kwargs, **args)
    if not isinstance(sched, TrialScheduler):
        raise ConfigError(f"scheduler '{name}': the factory returned {type(sched).__name__}; expected a "
                          "ray.tune.schedulers.TrialScheduler")
    return sched
