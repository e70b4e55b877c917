"""Every trial also lands in an Optuna study (SQLite in the results folder by default), so
``optuna-dashboard sqlite:///OUT/NAME/optuna.db`` shows the search live and ``optuna.load_study``
reads it back: params (with their distributions), objective values, per-epoch intermediate values,
state (COMPLETE, PRUNED, FAIL), and the cost metrics as user attributes.
"""

from __future__ import annotations

import logging
import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray import tune

from .errors import ConfigError
from .objective import ObjectiveConfig
from .space import Choice, Float, Int, Ordinal, SearchSpace

optuna.logging.set_verbosity(logging.WARNING)

log = logging.getLogger(__name__)
STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
USER_ATTRS = ("val_acc", "val_f1", "size_kb", "size_bits", "bitops", "macs", "avg_w_bits", "epoch")


def default_url(out_dir) -> str:
    return f"sqlite:///{out_dir}/optuna.db"


def distribution(domain):
    """The Optuna distribution of a space domain (ordinal values stored as themselves)."""
    if isinstance(domain, (Choice, Ordinal)):
        return CategoricalDistribution(list(domain.values))
    if isinstance(domain, Int):
        return IntDistribution(domain.low, domain.high, log=domain.log)
    if isinstance(domain, Float):
        return FloatDistribution(domain.low, domain.high, log=domain.log)
    raise TypeError(f"unknown domain {domain!r}")


def directions(objective: ObjectiveConfig) -> list[str]:
    return ["maximize", "minimize"] if objective.multi else ["maximize"]


def objective_values(metrics: dict, objective: ObjectiveConfig) -> list[float]:
    if objective.multi:
        return [float(metrics[objective.acc]), float(metrics[objective.cost])]
    return [float(metrics["score"])]


def open_study(url: str, name: str, objective: ObjectiveConfig) -> optuna.Study:
    """Create (or reopen, on resume) the study; a bad URL is a one-line ConfigError."""
    try:
        storage = optuna.storages.RDBStorage(url)
        return optuna.create_study(storage=storage, study_name=name, directions=directions(objective),
                                   load_if_exists=True)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises many kinds
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"storage_db: cannot open '{url}' ({reason}); allowed: an SQLAlchemy URL such as "
                          "sqlite:///path/optuna.db or postgresql://user@host/db") from None


def frozen_trial(trial_id: str, status: str, config: dict, metrics: dict, intermediate: dict[int, float],
                 space: SearchSpace, objective: ObjectiveConfig) -> optuna.trial.FrozenTrial:
    params, dists = {}, {}
    for name, value in config.items():
        prm = space.param(name)
        if prm is None:
            continue
        dist = distribution(prm.domain)
        if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
            continue
        if not isinstance(dist, CategoricalDistribution) and not dist._contains(dist.to_internal_repr(value)):
            continue  # a value outside the space (e.g. an old trial's) is left out, not a crash
        params[name], dists[name] = value, dist
    state = STATES[status]
    values = objective_values(metrics, objective) if state == TrialState.COMPLETE else None
    if values is not None and not all(math.isfinite(v) for v in values):
        state, values = TrialState.FAIL, None
    attrs = {"trial_id": trial_id, "status": status}
    attrs.update({k: metrics[k] for k in USER_ATTRS if isinstance(metrics.get(k), (int, float))})
    return optuna.trial.create_trial(
        state=state, params=params, distributions=dists, values=values, user_attrs=attrs,
        intermediate_values={} if objective.multi else {int(k): float(v) for k, v in intermediate.items()
                                                        if math.isfinite(v)})


class OptunaStoreCallback(tune.Callback):
    """Writes each trial to the study as it ends (and remembers what it wrote, for a resume)."""

    def __init__(self, url: str, study_name: str, space: SearchSpace, objective: ObjectiveConfig,
                 max_epochs: int, trial_fields):
        self.url, self.study_name = url, study_name
        self.space, self.objective, self.max_epochs = space, objective, max_epochs
        self.trial_fields = trial_fields  # (trial config, metrics) -> (config, status)
        self._study = None
        self._written: set[str] = set()
        self._intermediate: dict[str, dict[int, float]] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_study"] = None
        return state

    def _open(self) -> optuna.Study:
        if self._study is None:
            self._study = open_study(self.url, self.study_name, self.objective)
            self._written |= {t.user_attrs.get("trial_id") for t in self._study.get_trials(deepcopy=False)}
        return self._study

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result and isinstance(result.get("score"), (int, float)):
            self._intermediate.setdefault(trial.trial_id, {})[int(result["epoch"])] = float(result["score"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, error=True)

    def _write(self, trial, error: bool) -> None:
        study = self._open()
        if trial.trial_id in self._written:
            return
        metrics = dict(trial.last_result or {})
        config, status = self.trial_fields(dict(trial.config or {}), metrics, error, self.max_epochs)
        try:
            study.add_trial(frozen_trial(trial.trial_id, status, config, metrics,
                                         self._intermediate.pop(trial.trial_id, {}), self.space, self.objective))
        except (ValueError, TypeError) as e:  # the study is a view of the run: never let it stop the search
            log.warning("optuna storage: trial %s not written (%s)", trial.trial_id, e)
        self._written.add(trial.trial_id)
