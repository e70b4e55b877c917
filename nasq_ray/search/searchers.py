"""Searchers as Ray sees them: a nasq-ray strategy behind Ray's ``Searcher``, warm-start configs
proposed first, a cost budget held before training, and the run's searcher chosen by name.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import sys
from dataclasses import replace
from ..config import ExperimentConfig, with_checksum
from ..errors import ConfigError
from ..objective import ObjectiveConfig, budget_violation, within_budget
from ..space.search_space import MAX_REJECTIONS, SearchSpace
from .strategies import CONSTRAINT_ATTR, FINISHED, MULTI_OBJECTIVE_ONLY, BaseStrategy, make_searcher
from ray.tune.search import BasicVariantGenerator, SearchGenerator, Searcher  # noqa: E402
from ..results.records import trial_status


class StrategySearcher(Searcher):
    """Ray ``Searcher`` around a :class:`BaseStrategy`."""

    def __init__(self, strategy: BaseStrategy, max_epochs: int, metric: str = "score", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.strategy = strategy
        self.max_epochs = max_epochs
        self.configs: dict[str, dict] = {}
        self.finished = False  # the strategy said it has nothing more (grid, hawq): fewer trials is no interruption

    def suggest(self, trial_id: str):
        cfg = self.strategy.suggest(trial_id)
        if cfg is FINISHED or cfg == FINISHED:
            self.finished = True
            return Searcher.FINISHED
        if cfg is not None:
            self.configs[trial_id] = dict(cfg)
        return cfg

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.strategy.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        status = trial_status(result, error, self.max_epochs)
        payload = {**(result or {}), "status": status}
        self.strategy.on_trial_complete(trial_id, self.configs.get(trial_id, {}), payload)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"strategy": self.strategy.get_state(), "configs": self.configs}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.strategy.set_state(state["strategy"])
        self.configs = state["configs"]


class WrappingSearcher(Searcher):
    """A searcher around ``inner``: search properties pass through; ``save``/``restore`` keep the
    inner searcher's state beside the attributes named in ``STATE``."""

    STATE: tuple[str, ...] = ()

    def __init__(self, inner: Searcher):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner

    @property
    def finished(self) -> bool:
        return getattr(self.inner, "finished", False)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    INNER_KEY = "__inner_state__"

    def save(self, checkpoint_path: str) -> None:
        """One file: Ray copies the searcher's checkpoint file to storage, and a file beside it (the
        inner state once went to ``<path>.inner``) stayed behind, so every resume lost the search."""
        with tempfile.TemporaryDirectory() as d:
            inner = os.path.join(d, "inner.pkl")
            self.inner.save(inner)
            with open(inner, "rb") as f:
                inner_bytes = f.read()
        with open(checkpoint_path, "wb") as f:
            pickle.dump({self.INNER_KEY: inner_bytes, **{k: getattr(self, k) for k in self.STATE}}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        with tempfile.TemporaryDirectory() as d:
            inner = os.path.join(d, "inner.pkl")
            with open(inner, "wb") as f:
                f.write(state.pop(self.INNER_KEY))
            self.inner.restore(inner)
        self.__dict__.update(state)


class WarmStartSearcher(WrappingSearcher):
    """Proposes ``points`` (whole configs) first, then the wrapped searcher's suggestions; the
    wrapped searcher learns the points' results as if it had suggested them (a nasq-ray strategy
    through ``on_trial_complete``, a Ray searcher through ``add_evaluated_point`` where it has one)."""

    STATE = ("points", "given")

    def __init__(self, inner: Searcher, points: list[dict], max_epochs: int):
        super().__init__(inner)
        self.points, self.max_epochs = [dict(p) for p in points], max_epochs
        self.given: dict[str, dict] = {}

    def suggest(self, trial_id: str):
        if self.points:
            self.given[trial_id] = self.points.pop(0)
            return dict(self.given[trial_id])
        return self.inner.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.given:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        config = self.given.get(trial_id)
        if isinstance(self.inner, StrategySearcher) and config is not None:
            self.inner.configs[trial_id] = dict(config)  # its own path tells the strategy, with the config
        if config is None or isinstance(self.inner, StrategySearcher):
            self.inner.on_trial_complete(trial_id, result, error)
        elif result and not error and self.metric in result:
            try:
                self.inner.add_evaluated_point(config, result[self.metric],
                                               pruned=trial_status(result, False, self.max_epochs) == "pruned")
            except NotImplementedError:
                pass  # this Ray searcher cannot learn from configs it did not suggest


class BudgetSearcher(WrappingSearcher):
    """Holds ``objective.max_cost`` before training: a suggestion whose exact cost (``cost_model``)
    is over the budget is not run; the wrapped searcher is told it failed, with its cost and its
    excess over the budget (Optuna strategies learn it as infeasible), and asked again under a new
    id. The id Ray gave is mapped to the id of the suggestion that was kept."""

    STATE = ("alias", "refused", "cheapest", "kept")

    def __init__(self, inner: Searcher, cost_model, objective: ObjectiveConfig):
        super().__init__(inner)
        self.cost_model, self.objective = cost_model, objective
        self.alias: dict[str, str] = {}  # Ray's trial id -> the inner searcher's id of the kept suggestion
        self.refused = 0
        self.cheapest: float | None = None  # the lowest cost of a refused suggestion
        self.gave_up = False  # MAX_REJECTIONS suggestions in a row over the budget: no new trials
        self.kept = 0  # suggestions within the budget

    @property
    def finished(self) -> bool:
        return self.gave_up or super().finished

    def suggest(self, trial_id: str):
        for k in range(MAX_REJECTIONS):
            inner_id = trial_id if k == 0 else f"{trial_id}-over-budget-{k}"
            cfg = self.inner.suggest(inner_id)
            if not isinstance(cfg, dict):
                return cfg
            cost = self.cost_model(cfg)
            if cost is None or within_budget(cost, self.objective):
                self.alias[trial_id] = inner_id
                self.kept += 1
                return cfg
            self.refused += 1
            self.cheapest = cost if self.cheapest is None else min(self.cheapest, cost)
            excess = budget_violation(cost, self.objective)
            self.inner.on_trial_complete(inner_id, {self.objective.cost: cost, CONSTRAINT_ATTR: excess,
                                                    "fail_reason": f"cost {cost:g} over objective.max_cost"}, error=True)
        self.gave_up = True
        if self.kept:  # with no trial at all, the driver says it as the run's one-line error
            print(f"objective.max_cost: {self.refusal()}; no new trials are started", file=sys.stderr)
        return Searcher.FINISHED

    def refusal(self) -> str:
        return (f"the searcher proposed {MAX_REJECTIONS} configs in a row over the budget ({self.objective.max_cost:g} "
                f"{self.objective.cost}; the cheapest config it refused: {self.cheapest:g})")

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(self.alias.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.inner.on_trial_complete(self.alias.pop(trial_id, trial_id), result, error)


def budget_refusal(searcher) -> str | None:
    """Why the run's cost budget stopped its searcher (see ``BudgetSearcher``), or None."""
    while searcher is not None:
        if isinstance(searcher, BudgetSearcher) and searcher.gave_up:
            return searcher.refusal()
        searcher = getattr(searcher, "inner", None)
    return None


def build_searcher(cfg: ExperimentConfig, space: SearchSpace, objective: ObjectiveConfig,
                   points: list[dict] | None = None, cost_model=None, sensitivity=None) -> Searcher:
    """The run's searcher; ``points`` (warm-start configs) are proposed before its own suggestions;
    ``cost_model`` (a config's exact cost before training) is offered to the strategy and, with a
    cost budget, refuses suggestions over it; ``sensitivity`` (a callable giving the kind's
    per-layer sensitivities) is called only for a strategy that takes them (hawq)."""
    from ..plugins import Lazy

    s = cfg.search
    name = resolve_searcher(cfg)
    made = make_searcher(name, space, objective, seed=s.seed, budget=s.num_samples, cost_model=cost_model,
                         sensitivity=Lazy(sensitivity) if sensitivity is not None else None, **s.searcher_args)
    if isinstance(made, BaseStrategy):
        made = StrategySearcher(made, s.max_epochs)
    elif not isinstance(made, Searcher):
        raise ConfigError(f"searcher '{name}': the factory returned {type(made).__name__}; expected a "
                          "nasq_ray BaseStrategy or a ray.tune.search.Searcher")
    if points:
        made = WarmStartSearcher(made, points, s.max_epochs)
    if objective.max_cost is not None and cost_model is not None:
        made = BudgetSearcher(made, cost_model, objective)
    return made


DEFAULT_SEARCHER = "tpe"
DEFAULT_MULTI_OBJECTIVE_SEARCHER = "ehvi"  # chosen on NB201's cifar10 and cifar100 columns (BENCHMARKS.md)


def resolve_searcher(cfg: ExperimentConfig) -> str:
    """The searcher to use: the one asked for, else ``tpe`` (``ehvi`` for a multi-objective run;
    ``random`` under PBT)."""
    s = cfg.search
    if s.scheduler == "pbt":
        if s.searcher not in (None, "random"):
            raise ConfigError(f"scheduler: pbt cannot be combined with searcher '{s.searcher}': Ray Tune refuses a "
                              "search algorithm with PBT (PBT starts from random configs, then copies and perturbs "
                              "the best); use --searcher random, or another scheduler with this searcher")
        return "random"
    return s.searcher or (DEFAULT_MULTI_OBJECTIVE_SEARCHER if cfg.objective.multi else DEFAULT_SEARCHER)


def effective_objective(cfg: ExperimentConfig) -> ObjectiveConfig:
    """NSGA-II optimizes (accuracy, cost): it implies a multi-objective run."""
    obj = cfg.objective
    if resolve_searcher(cfg) in MULTI_OBJECTIVE_ONLY and not obj.multi:
        obj = replace(obj, multi=True)
    return obj


def experiment_yaml(cfg: ExperimentConfig, objective: ObjectiveConfig | None = None) -> str:
    """A run's experiment.yaml: the experiment with the objective that ran, ``objective`` where the
    trial kind set it (a table run's cost column), else ``effective_objective`` (a searcher that implies
    a multi-objective run, nsga2, saved with objective.multi true), its paths absolute (``--resume`` from
    any folder)."""
    return with_checksum(replace(cfg.with_absolute_paths(), objective=objective or effective_objective(cfg)).to_yaml())


def repoint_storage(storage, storage_path: str, name: str) -> None:
    """Point a restored ``StorageContext`` (pickled with the run) at where the run is now, as Ray does for
    restored trials (``TuneController._restore_trials``)."""
    import pyarrow.fs

    if storage is None:
        return
    storage.storage_filesystem, storage.storage_fs_path = pyarrow.fs.FileSystem.from_uri(storage_path)
    storage.experiment_dir_name = name


class RestoredSearchGenerator(SearchGenerator):
    """Ray's ``SearchGenerator`` for a resumed run, whose new trials are written where the run is now.

    Ray restores the generator's saved experiment, storage included, so a results folder that was
    copied or moved and then resumed wrote its new trials (checkpoints, trial folders) into the old
    folder: the copy's new trials had no checkpoint, and the original was changed. Ray re-points the
    restored trials; this does the same for trials still to come.
    """

    def __init__(self, searcher: Searcher, storage_path: str, name: str):
        super().__init__(searcher)
        self.storage_path, self.name = storage_path, name

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        experiment = self._experiment
        repoint_storage(getattr(experiment, "storage", None), self.storage_path, self.name)
        if isinstance(getattr(experiment, "spec", None), dict):
            repoint_storage(experiment.spec.get("storage"), self.storage_path, self.name)


class RestoredVariantGenerator(BasicVariantGenerator):
    """``RestoredSearchGenerator``'s twin for a run without a searcher (pbt): Ray's variant generator
    restores the trial spec it makes the remaining trials from, storage included."""

    def __init__(self, max_concurrent: int, storage_path: str, name: str):
        super().__init__(max_concurrent=max_concurrent)
        self.storage_path, self.name = storage_path, name

    def set_state(self, state: dict) -> None:
        storage_path, name = self.storage_path, self.name  # the saved state replaces every attribute
        super().set_state(state)
        self.storage_path, self.name = storage_path, name
        for iterator in self._iterators:
            repoint_storage(iterator.unresolved_spec.get("storage"), storage_path, name)
            for _, spec in getattr(iterator.variants, "iterable", None) or ():
                repoint_storage(spec.get("storage"), storage_path, name)


def restored_search_algorithm(searcher: Searcher | None, max_concurrent: int | None, storage_path: str, name: str):
    """What a resumed run's TuneConfig holds instead of ``searcher`` (limited to ``max_concurrent`` as Tune
    would have limited it: its ``max_concurrent_trials`` must then be None); None: a run without a searcher."""
    from ray.tune.search import ConcurrencyLimiter

    if searcher is None:
        return RestoredVariantGenerator(max_concurrent or 0, storage_path, name)
    inner = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher
    return RestoredSearchGenerator(inner, storage_path, name)


def base_searcher(search_alg):
    """nasq-ray's searcher inside Ray's wrappers (``SearchGenerator``, ``ConcurrencyLimiter``), or None."""
    while search_alg is not None and not isinstance(search_alg, (StrategySearcher, WrappingSearcher)):
        search_alg = getattr(search_alg, "searcher", None)
    return search_alg
