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

Under ``asha`` and ``moasha`` the warm-start configs (``search.warm_start``; ``protected``) run to
``max_epochs``: their results still count at every rung they pass, but they are not stopped there.
They are the few configs chosen from sensitivities before the search; a first rung after one epoch
stopped them for an accuracy a pruned or low-bit network had not yet recovered (BENCHMARKS.md,
issue 11).
"""

from __future__ import annotations

from collections.abc import Callable
import numpy as np
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ..errors import ConfigError, unknown_name
from ..plugins import call_factory, installed, load_plugin
from ..objective import ObjectiveConfig, pareto_order
from ..space.domains import Float, Int
from ..space.search_space import SearchSpace
from .domains import PBT_MUTABLE, pbt_mutations


ENTRY_POINT_GROUP = "nasq_ray.schedulers"


def _fifo(**_):
    return FIFOScheduler()


def _asha(metric, mode, max_t, grace_period=None, reduction_factor=3, protected=(), **_):
    grace_period = grace_period or max(1, max_t // 5)
    return ProtectingASHA(protected, metric=metric, mode=mode, max_t=max_t, grace_period=grace_period,
                          reduction_factor=reduction_factor)


def _protects(protected, trial, result: dict, max_t: int) -> bool:
    """Whether a trial the scheduler would stop goes on: a warm-start config, short of ``max_t``."""
    return (bool(protected) and result.get("status") != "failed"
            and int(result.get("training_iteration", 0)) < max_t and flat_config(trial.config) in protected)


class ProtectingASHA(tune.schedulers.AsyncHyperBandScheduler):
    """Ray's ASHA, except that the ``protected`` configs (the warm start) are not stopped at a rung."""

    def __init__(self, protected=(), **kwargs):
        super().__init__(**kwargs)
        self.protected = [dict(c) for c in protected]
        self.protected_max_t = kwargs["max_t"]

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and _protects(self.protected, trial, result, self.protected_max_t):
            return TrialScheduler.CONTINUE
        return decision


class FinishingHyperBand(tune.schedulers.HyperBandScheduler):
    """Ray's synchronous HyperBand, except that a bracket that finishes because a trial *ended* (its
    function returned after the last epoch: Ray hands that result to ``on_trial_complete``) stops its
    paused trials. Ray's ``on_trial_remove`` skips a finished bracket, so a trial paused at the
    bracket's last milestone waited for ever and the run hung (intermittently: it depends on which
    trial's last result came first; ``tests/search/test_schedulers.py`` replays the order)."""

    def on_trial_remove(self, tune_controller, trial):
        bracket, _ = self._trial_info[trial]
        super().on_trial_remove(tune_controller, trial)
        if bracket.finished():
            bracket.cleanup_full(tune_controller)  # stops the bracket's paused trials


def _hyperband(metric, mode, max_t, reduction_factor=3, **_):
    return FinishingHyperBand(metric=metric, mode=mode, max_t=max_t, reduction_factor=reduction_factor)


def _median(metric, mode, max_t, grace_period=None, min_samples_required=3, **_):
    return tune.schedulers.MedianStoppingRule(
        time_attr="training_iteration", metric=metric, mode=mode,
        grace_period=grace_period or max(1, max_t // 5), min_samples_required=min_samples_required)


def _pbt(metric, mode, max_t, seed=0, space=None, perturbation_interval=None, quantile_fraction=0.25,
         resample_probability=0.25, **_):
    mutations = pbt_mutations(space)
    return tune.schedulers.PopulationBasedTraining(
        time_attr="training_iteration", metric=metric, mode=mode,
        perturbation_interval=perturbation_interval or max(1, max_t // 5),
        hyperparam_mutations=mutations, quantile_fraction=quantile_fraction,
        resample_probability=resample_probability, custom_explore_fn=ClipToSpace(space))


class MOASHAScheduler(FIFOScheduler):
    """Asynchronous successive halving that promotes by Pareto rank, not by one scalar."""

    def __init__(self, objective: ObjectiveConfig, max_t: int, grace_period: int = 1, reduction_factor: float = 3,
                 protected=()):
        super().__init__()
        self.protected = [dict(c) for c in protected]
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
        if self.promotable(rung, trial.trial_id) or _protects(self.protected, trial, result, self.max_t):
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP

    def promotable(self, rung: dict[str, tuple[float, float]], trial_id: str) -> bool:
        """Whether ``trial_id`` ranks in the top ``1/rf`` of ``rung`` (at least the single best goes on)."""
        ids = list(rung)
        order = pareto_order([rung[i] for i in ids], ("max", "min"))
        keep = max(1, int(len(ids) / self.rf))
        return ids.index(trial_id) in set(order[:keep].tolist())

    def debug_string(self) -> str:
        return f"MOASHA: rungs {self.rungs}, " + ", ".join(f"{r}: {len(v)}" for r, v in self.recorded.items())


def _moasha(max_t, objective=None, grace_period=None, reduction_factor=3, protected=(), **_):
    return MOASHAScheduler(objective or ObjectiveConfig(), max_t, grace_period or max(1, max_t // 5), reduction_factor,
                           protected)


SCHEDULERS: dict[str, Callable] = {"fifo": _fifo, "asha": _asha, "hyperband": _hyperband, "median": _median,
                                   "pbt": _pbt, "moasha": _moasha}


_ARGS = {"asha": ("grace_period", "reduction_factor"), "hyperband": ("reduction_factor",),
         "median": ("grace_period", "min_samples_required"), "fifo": (),
         "pbt": ("perturbation_interval", "quantile_fraction", "resample_probability"),
         "moasha": ("grace_period", "reduction_factor")}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# what each argument of the built-in schedulers allows (max_t: the run's max_epochs); Ray would
# otherwise fail on a bad value with a traceback, or after Ray has started
_ARG_RULES = {
    "grace_period": (lambda v, max_t: _is_int(v) and 1 <= v <= max_t, "integers from 1 to max_epochs ({max_t})"),
    "reduction_factor": (lambda v, max_t: _is_number(v) and v > 1, "numbers > 1"),
    "min_samples_required": (lambda v, max_t: _is_int(v) and v >= 1, "integers >= 1"),
    "perturbation_interval": (lambda v, max_t: _is_int(v) and 1 <= v <= max_t, "integers from 1 to max_epochs ({max_t})"),
    "quantile_fraction": (lambda v, max_t: _is_number(v) and 0 <= v <= 0.5, "numbers from 0 to 0.5"),
    "resample_probability": (lambda v, max_t: _is_number(v) and 0 <= v <= 1, "numbers from 0 to 1"),
}


def check_scheduler_args(name: str, args: dict, max_t: int) -> None:
    """Unknown arguments of a built-in scheduler, and values it does not allow, raise naming them."""
    bad = sorted(set(args) - set(_ARGS[name]))
    if bad:
        raise ConfigError(f"scheduler_args: scheduler '{name}' does not accept {bad}; allowed: "
                          f"{', '.join(_ARGS[name]) or 'none'}")
    for k, v in args.items():
        allows, allowed = _ARG_RULES[k]
        if v is not None and not allows(v, max_t):
            raise ConfigError(f"scheduler_args.{k}: {v!r} is not allowed; allowed: {allowed.format(max_t=max_t)}")


DEFAULT_SCHEDULER = "asha"
# A multi-objective run ranks trials on (accuracy, cost): a scalar score at ASHA's rungs stops the cheap
# end of the front (own model on Fashion-MNIST: every pruned trial stopped at its first rung; BENCHMARKS.md)
DEFAULT_MULTI_OBJECTIVE_SCHEDULER = "moasha"


def resolve_scheduler(name: str | None, objective: ObjectiveConfig) -> str:
    """The scheduler to use: the one asked for, else ``asha`` (``moasha`` for a multi-objective run)."""
    return name or (DEFAULT_MULTI_OBJECTIVE_SCHEDULER if objective.multi else DEFAULT_SCHEDULER)


def scheduler_names() -> list[str]:
    return sorted(set(SCHEDULERS) | set(installed(ENTRY_POINT_GROUP)))


def build_scheduler(name: str, args: dict, *, metric: str, mode: str, max_t: int, seed: int,
                    objective: ObjectiveConfig, space=None, protected=()) -> TrialScheduler:
    """The scheduler ``name`` with user ``args``; unknown names and arguments raise naming them.
    ``protected``: configs ``asha`` and ``moasha`` do not stop early (the warm start)."""
    if name in SCHEDULERS:
        check_scheduler_args(name, args, max_t)
        return SCHEDULERS[name](metric=metric, mode=mode, max_t=max_t, seed=seed, objective=objective,
                                space=space, protected=protected, **args)
    eps = installed(ENTRY_POINT_GROUP)
    if name not in eps:
        raise unknown_name("scheduler", name, scheduler_names())
    sched = call_factory(load_plugin(eps[name], "search.scheduler"), args, "scheduler_args", f"scheduler '{name}'",
                         offered=dict(metric=metric, mode=mode, max_t=max_t, seed=seed, objective=objective, space=space),
                         plugin="search.scheduler")
    if not isinstance(sched, TrialScheduler):
        raise ConfigError(f"scheduler '{name}': the factory returned {type(sched).__name__}; expected a "
                          "ray.tune.schedulers.TrialScheduler")
    if getattr(sched, "metric", metric) is None:  # made without the run's metric (e.g. ASHAScheduler()): Tune's
        sched.set_search_properties(metric, mode)  # own hook gives it, as for a metric set in TuneConfig
    return sched




PBT_ARCH_KEY = "__config"


class ClipToSpace:
    """PBT's ``custom_explore_fn``: Ray scales a continuous value by 0.8 or 1.2 without looking at its
    bounds, so a perturbed learning rate can leave the space; put it back on the nearest bound."""

    def __init__(self, space: SearchSpace):
        self.domains = {p.name: p.domain for p in space.params if p.name in PBT_MUTABLE}

    def __call__(self, config: dict) -> dict:
        for name, d in self.domains.items():
            if name in config and isinstance(d, (Float, Int)):
                v = min(max(config[name], d.low), d.high)
                config[name] = int(round(v)) if isinstance(d, Int) else float(v)
        return config


def pbt_param_space(space: SearchSpace, seed: int, num_samples: int) -> dict:
    """PBT's ``param_space``: ``num_samples`` whole random configs (one trial each: run them with
    ``num_samples=1``), the mutable hyperparameters beside them at the top level where PBT perturbs them.

    Plain values, not a ``tune.sample_from`` function: Tune keeps such a function as a placeholder in
    each trial's unresolved config and calls it again when a run is resumed, so every restored trial
    got a new random network and failed to load its own checkpoint (and an exploited one lost the
    config it had cloned)."""
    rng = np.random.default_rng(seed)
    return {PBT_ARCH_KEY: tune.grid_search([space.sample(rng) for _ in range(num_samples)])}


def flat_config(config: dict) -> dict:
    """The space config of a trial (PBT keeps it under a key, with perturbed values beside it)."""
    if PBT_ARCH_KEY not in config:
        return config
    base = dict(config[PBT_ARCH_KEY])
    base.update({k: v for k, v in config.items() if k != PBT_ARCH_KEY and k in base})
    return base
