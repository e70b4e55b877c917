"""Optuna samplers (TPE, NSGA-II, Gaussian process, random) driven by ask-and-tell over the joint space.

The space's define-by-run walk asks Optuna for each active parameter, so conditional parameters
(a block's op, a layer's bits) exist only where they apply. Ordinal parameters (bit-widths, channel
counts) are asked as an integer index, so TPE models neighbouring widths as neighbours.

Trials stopped early by a scheduler are told to Optuna as PRUNED (with their intermediate values
for single-objective studies), not as completed trials with low-fidelity values; an invalid
configuration (for example too much downsampling) is told as FAIL and another one is asked; a
config that already finished is answered from memory (not trained twice) and another one asked.

With a cost budget (``objective.max_cost``) the samplers that take constraints (TPE, NSGA-II, GP)
get one: a trial's excess over the budget, so they learn where the budget ends. A config refused
before training for its known cost is told as a complete trial with the worst accuracy and that
excess, never as a plain failure (which the samplers ignore, and would propose again).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import pickle
import threading
import warnings
from dataclasses import replace

import numpy as np
import optuna
from optuna.trial import TrialState

from ...errors import ConfigError, SearchSpaceError
from ...plugins import check_args
from ...objective import budget_violation, score
from ...space.search_space import MAX_REJECTIONS
from ...space.domains import Choice, Float, Int, Ordinal, Param, optuna_distribution
from ._base import FINISHED, BaseStrategy
from ._history import config_key

optuna.logging.set_verbosity(logging.WARNING)
_LOCK_TYPE = type(threading.Lock())
REPEATS_BEFORE_RANDOM = 3  # finished configs the sampler may propose in a row before an unseen one is tried


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
        from ...space import SearchSpace

        if not isinstance(space, SearchSpace):
            raise ConfigError(f"space: expected a SearchSpace (nasq_ray.load_space(...)), got {type(space).__name__}")
        self.space = space

    def __call__(self, trial):
        return self.space.walk(lambda prm, view: suggest_param(trial, prm))


CONSTRAINT_ATTR = "cost_over_budget"  # user attribute: the trial's cost minus objective.max_cost
CONSTRAINT_NAME = "max_cost"
# Optuna 5 reads a trial's constraints from the trial (``set_constraint``); Optuna 4 from a
# ``constraints_func`` given to the sampler
TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def budget_constraint(trial: optuna.trial.FrozenTrial) -> tuple[float]:
    """Optuna 4's ``constraints_func``: the trial's excess over the cost budget (<= 0: feasible)."""
    return (float(trial.user_attrs.get(CONSTRAINT_ATTR, 0.0)),)


def make_sampler(kind: str, objective, seed: int, **kwargs) -> optuna.samplers.BaseSampler:
    budget = {} if objective.max_cost is None or TRIAL_CONSTRAINTS else {"constraints_func": budget_constraint}
    samplers = {"tpe": (optuna.samplers.TPESampler,
                        dict(multivariate=True, group=True, constant_liar=True, n_startup_trials=10, **budget)),
                "nsga2": (optuna.samplers.NSGAIISampler, dict(population_size=16, **budget)),
                "gp": (optuna.samplers.GPSampler, dict(n_startup_trials=10, **budget)),
                "random": (optuna.samplers.RandomSampler, {})}
    if kind not in samplers:
        raise ConfigError(f"searcher: unknown Optuna sampler '{kind}'")
    cls, opts = samplers[kind]
    check_args(cls, kwargs, "searcher_args", f"searcher '{kind}' (Optuna's {cls.__name__})", skip=("seed",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return cls(seed=seed, **{**opts, **kwargs})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"searcher_args: {e}") from None


class OptunaStrategy(BaseStrategy):
    """An Optuna study as a nasq-ray strategy. ``sampler``: ``tpe``, ``nsga2``, ``gp`` or ``random``;
    other keyword arguments go to the Optuna sampler."""

    sampler_kind = "tpe"
    ask_every_param = False  # ask inactive parameters too (a sampler that models one fixed-shape space)

    def __init__(self, space, objective, seed=0, **sampler_kwargs):
        super().__init__(space, objective, seed)
        directions = ["maximize" if m == "max" else "minimize" for m in objective.modes]
        sampler = make_sampler(self.sampler_kind, objective, seed, **sampler_kwargs)
        self.study = optuna.create_study(directions=directions, sampler=sampler)
        self.live: dict[str, optuna.Trial] = {}
        self.configs: dict[str, tuple] = {}  # running trial -> its config's key
        self.done: dict[tuple, tuple] = {}  # finished config -> (the values told, its budget excess)
        self.rng = np.random.default_rng(seed)  # random unseen configs when the sampler keeps repeating

    def _ask_config(self, trial: optuna.Trial) -> dict:
        if not self.ask_every_param:
            return self.space.walk(lambda prm, view: suggest_param(trial, prm))
        values = {prm.name: suggest_param(trial, prm) for prm in self.space.params}
        return self.space.walk(lambda prm, view: values[prm.name])

    def _tell(self, trial: optuna.Trial, told, excess: float | None) -> None:
        if excess is not None:
            trial.set_user_attr(CONSTRAINT_ATTR, excess)
            if TRIAL_CONSTRAINTS:
                trial.set_constraint(CONSTRAINT_NAME, excess)
        self.study.tell(trial, told)

    def suggest(self, trial_id):
        reason, repeats = "", 0
        for _ in range(MAX_REJECTIONS):
            if repeats >= REPEATS_BEFORE_RANDOM:  # the sampler is stuck on finished configs: try an unseen one
                repeats = 0
                unseen = self._random_unseen()
                if unseen is None:
                    return FINISHED
                self.study.enqueue_trial(self._optuna_params(unseen)[0], skip_if_exists=False)
            trial = self.study.ask()
            cfg = self._ask_config(trial)
            key = config_key(cfg)
            if key in self.done:  # asked again for a finished config: answer from memory, ask anew
                self._tell(trial, *self.done[key])
                repeats += 1
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
        refused = status == "failed" and result.get(CONSTRAINT_ATTR, 0.0) > 0  # over the budget, not trained
        if status == "complete" or refused:
            told, excess = self._told(result, refused)
            self._tell(trial, told, excess)
            if key is not None:
                self.done[key] = (told, excess)
        elif status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)


    def _told(self, result: dict, refused: bool) -> tuple[object, float | None]:
        """The values told for a finished trial, and its budget excess (None without a budget). A
        trial over the budget is told its score without the budget (not ``-inf``), and a config
        refused before training the worst accuracy (0) at its cost; the excess marks both infeasible."""
        obj = self.objective
        if obj.max_cost is None:
            vals = self.values(result)
            return (vals if obj.multi else vals[0]), None
        cost = float(result[obj.cost])
        acc = 0.0 if refused else float(result[obj.acc])
        told = (acc, cost) if obj.multi else score(acc, cost, replace(obj, max_cost=None))
        return told, budget_violation(cost, obj)

    # Optuna 5's NSGA-II sampler holds a thread lock, which cannot be pickled: Ray pickles the
    # searcher, and its checkpoints hold the state; the lock is left out and a new one made on load
    def get_state(self) -> dict:
        sampler = self.study.sampler
        locks = [k for k, v in vars(sampler).items() if isinstance(v, _LOCK_TYPE)]
        held = {k: getattr(sampler, k) for k in locks}
        for k in locks:
            setattr(sampler, k, None)
        try:
            return {"pickled": pickle.dumps(copy.copy(self.__dict__)), "locks": locks}
        finally:
            for k, v in held.items():
                setattr(sampler, k, v)

    def set_state(self, state: dict) -> None:
        if "pickled" not in state:
            return super().set_state(state)
        restored = pickle.loads(state["pickled"])
        for k in state["locks"]:
            setattr(restored["study"].sampler, k, threading.Lock())
        self.__dict__.update(restored)

    __getstate__ = get_state
    __setstate__ = set_state

    def _random_unseen(self) -> dict | None:
        taken = set(self.done) | set(self.configs.values())
        for _ in range(MAX_REJECTIONS):
            cfg = self.space.sample(self.rng)
            if config_key(cfg) not in taken:
                return cfg
        return None

    def _optuna_params(self, config: dict) -> tuple[dict, dict]:
        """``config`` in the form ``suggest_param`` asks for it (ordinal values by index), and the
        distributions; with ``ask_every_param`` an inactive parameter gets its domain's first value."""
        params, dists = {}, {}
        for prm in self.space.params:
            if prm.name not in config and not self.ask_every_param:
                continue
            d = prm.domain
            value = config.get(prm.name, d.values[0] if isinstance(d, (Choice, Ordinal)) else d.low)
            dists[prm.name] = optuna_distribution(d, ordinal_as_index=True)
            params[prm.name] = d.index(value) if isinstance(d, Ordinal) else value
        return params, dists

    def _as_trial(self, config: dict, result: dict) -> optuna.trial.FrozenTrial:
        """``config`` as a finished trial of this study, in the form ``suggest_param`` asks for it."""
        params, dists = self._optuna_params(config)
        complete = result["status"] == "complete"
        told, excess = self._told(result, False) if complete else (None, None)
        return optuna.trial.create_trial(
            state=TrialState.COMPLETE if complete else TrialState.PRUNED, params=params, distributions=dists,
            values=None if told is None else list(told) if self.objective.multi else [told],
            user_attrs={} if excess is None else {CONSTRAINT_ATTR: excess},
            system_attrs={f"constraints:{CONSTRAINT_NAME}": excess} if excess is not None and TRIAL_CONSTRAINTS else None)


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


@contextlib.contextmanager
def one_torch_thread():
    """Run a GP fit on one torch thread: its tensors are tiny, and one thread is several times faster
    than many (and does not fight the trials for the cores); the caller's setting is restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class GPStrategy(OptunaStrategy):
    """Optuna's ``GPSampler``: a Gaussian process with (log) expected improvement, expected
    hypervolume improvement when multi-objective, constraints for a cost budget, and running trials
    taken into account. A GP models one fixed-shape space, so every parameter is asked on every trial
    (an inactive one's value is not used) instead of only the active ones."""

    sampler_kind = "gp"
    ask_every_param = True

    def suggest(self, trial_id):
        with one_torch_thread():
            return super().suggest(trial_id)
