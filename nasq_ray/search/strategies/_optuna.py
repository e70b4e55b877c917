"""Optuna samplers (TPE, NSGA-II, random) driven by ask-and-tell over the joint space.

The space's define-by-run walk asks Optuna for each active parameter, so conditional parameters
(a block's op, a layer's bits) exist only where they apply. Ordinal parameters (bit-widths, channel
counts) are asked as an integer index, so TPE models neighbouring widths as neighbours.

Trials stopped early by a scheduler are told to Optuna as PRUNED (with their intermediate values
for single-objective studies), not as completed trials with low-fidelity values; an invalid
configuration (for example too much downsampling) is told as FAIL and another one is asked; a
config that already finished is answered from memory (not trained twice) and another one asked.
"""

from __future__ import annotations

import logging
import warnings

import optuna
from optuna.trial import TrialState

from ...errors import ConfigError, SearchSpaceError
from ...space.search_space import MAX_REJECTIONS
from ...space.domains import Choice, Float, Int, Ordinal, Param, optuna_distribution
from ._base import FINISHED, BaseStrategy
from ._history import config_key

optuna.logging.set_verbosity(logging.WARNING)


def suggest_param(trial: optuna.Trial, prm: Param):
    """Ask ``trial`` for ``prm``'s value (Ordinal domains by index)."""
    d = prm.domain
    if isinstance(d, Ordinal):
        return d.values[trial.suggest_int(prm.name, 0, len(d.values) - 1)]
    if isinstance(d, Choice):
        return trial.suggest_categorical(prm.name, list(d.values))
    if isinstance(d, Int):
        return trial.suggest_int(prm.name, d.low, d.high, log=d.log)
    if isinstance(d, Float):
        return trial.suggest_float(prm.name, d.low, d.high, log=d.log)
    raise TypeError(f"unknown domain {d!r}")


class define_by_run:  # noqa: N801 - used like a function: define_by_run(space)
    """An Optuna define-by-run function for ``space`` (for Ray's ``OptunaSearch(space=...)``).

    It returns the decoded values so that ordinal parameters reach the trial as values, not
    indices. A class rather than a closure, so that Ray can pickle it into experiment checkpoints.
    """

    def __init__(self, space):
        self.space = space

    def __call__(self, trial):
        return self.space.walk(lambda prm, view: suggest_param(trial, prm))


def make_sampler(kind: str, objective, seed: int, **kwargs) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            if kind == "tpe":
                opts = dict(multivariate=True, group=True, constant_liar=True, n_startup_trials=10)
                return optuna.samplers.TPESampler(seed=seed, **{**opts, **kwargs})
            if kind == "nsga2":
                opts = dict(population_size=16)
                return optuna.samplers.NSGAIISampler(seed=seed, **{**opts, **kwargs})
            if kind == "random":
                return optuna.samplers.RandomSampler(seed=seed, **kwargs)
        except TypeError as e:
            raise ConfigError(f"searcher_args: {e}") from None
    raise ConfigError(f"searcher: unknown Optuna sampler '{kind}'")


class OptunaStrategy(BaseStrategy):
    """An Optuna study as a nasq-ray strategy. ``sampler``: ``tpe``, ``nsga2`` or ``random``;
    other keyword arguments go to the Optuna sampler."""

    sampler_kind = "tpe"

    def __init__(self, space, objective, seed=0, **sampler_kwargs):
        super().__init__(space, objective, seed)
        directions = ["maximize" if m == "max" else "minimize" for m in objective.modes]
        sampler = make_sampler(self.sampler_kind, objective, seed, **sampler_kwargs)
        self.study = optuna.create_study(directions=directions, sampler=sampler)
        self.live: dict[str, optuna.Trial] = {}
        self.configs: dict[str, tuple] = {}  # running trial -> its config's key
        self.done: dict[tuple, object] = {}  # finished config -> the values told

    def suggest(self, trial_id):
        reason = ""
        for _ in range(MAX_REJECTIONS):
            trial = self.study.ask()
            cfg = self.space.walk(lambda prm, view: suggest_param(trial, prm))
            key = config_key(cfg)
            if key in self.done:  # asked again for a finished config: answer from memory, ask anew
                self.study.tell(trial, self.done[key])
                continue
            reason = self.space.violation(cfg)
            if not reason:
                self.live[trial_id] = trial
                self.configs[trial_id] = key
                return cfg
            trial.set_user_attr("invalid", reason)
            self.study.tell(trial, state=TrialState.FAIL)
        if reason:
            raise SearchSpaceError(f"{self.space.source}: Optuna found no valid configuration in {MAX_REJECTIONS} asks: {reason}")
        return FINISHED  # every suggestion repeats a finished config: the space is exhausted

    def on_trial_result(self, trial_id, result):
        trial = self.live.get(trial_id)
        if trial is not None and not self.objective.multi and "score" in result and "epoch" in result:
            trial.report(float(result["score"]), step=int(result["epoch"]))

    def on_trial_complete(self, trial_id, config, result):
        trial = self.live.pop(trial_id, None)
        if trial is None:  # a config this strategy did not suggest (a warm start): add it as a finished trial
            if config and result.get("status") in ("complete", "pruned"):
                self.study.add_trial(self._as_trial(config, result))
            return
        status = result.get("status")
        key = self.configs.pop(trial_id, None)
        if status == "complete":
            vals = self.values(result)
            told = vals if self.objective.multi else vals[0]
            self.study.tell(trial, told)
            if key is not None:
                self.done[key] = told
        elif status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)


    def _as_trial(self, config: dict, result: dict) -> optuna.trial.FrozenTrial:
        """``config`` as a finished trial of this study, in the form ``suggest_param`` asks for it."""
        params, dists = {}, {}
        for name, value in config.items():
            prm = self.space.param(name)
            if prm is None:
                continue
            dists[name] = optuna_distribution(prm.domain, ordinal_as_index=True)
            params[name] = prm.domain.index(value) if isinstance(prm.domain, Ordinal) else value
        complete = result["status"] == "complete"
        vals = self.values(result) if complete else None
        return optuna.trial.create_trial(
            state=TrialState.COMPLETE if complete else TrialState.PRUNED, params=params, distributions=dists,
            values=list(vals) if vals is not None else None)


class TPEStrategy(OptunaStrategy):
    """Optuna's TPE (multivariate, grouped for conditional spaces); multi-objective when the
    objective is (MOTPE)."""

    sampler_kind = "tpe"


class NSGA2Strategy(OptunaStrategy):
    """Optuna's NSGA-II on (accuracy, cost), one generation at a time.

    Optuna gives a trial its generation when the trial is asked, from how many trials of the newest
    generation have completed. With several trials in flight (Ray runs them side by side) every
    trial asked while a generation is still running joins it: generations overflow and the next
    parents are chosen from whatever had finished (NB201 cifar100 column, 100 trials, 4 in flight:
    HV ratio 0.818, below random's 0.820; one at a time 0.864). So a generation's
    ``population_size`` trials are asked, then ``suggest`` returns None (Ray asks again later)
    until every one of them has ended."""

    sampler_kind = "nsga2"

    def __init__(self, space, objective, seed=0, **sampler_kwargs):
        super().__init__(space, objective, seed, **sampler_kwargs)
        self.asked_in_generation = 0

    def suggest(self, trial_id):
        if self.asked_in_generation >= self.study.sampler._population_size:
            if self.live:
                return None  # the generation is still running
            self.asked_in_generation = 0
        cfg = super().suggest(trial_id)
        if isinstance(cfg, dict):
            self.asked_in_generation += 1
        return cfg
