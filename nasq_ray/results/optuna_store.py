"""Every trial also lands in an Optuna study (SQLite in the results folder by default), so
``optuna-dashboard sqlite:///OUT/NAME/optuna.db`` shows the search live and ``optuna.load_study``
reads it back: params (with their distributions), objective values, per-epoch intermediate values,
state (COMPLETE, PRUNED, FAIL), and the cost metrics as user attributes.

"""

from __future__ import annotations

import logging
import math
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from ..errors import ConfigError
from ..objective import ObjectiveConfig
from ..space.domains import optuna_distribution
from ..space.search_space import SearchSpace
from .records import METRIC_COLUMNS


optuna.logging.set_verbosity(logging.WARNING)
log = logging.getLogger(__name__)


STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


USER_ATTRS = (*METRIC_COLUMNS, "epoch")  # numeric ones become user attributes


def default_url(out_dir) -> str:
    return f"sqlite:///{out_dir}/optuna.db"


def directions(objective: ObjectiveConfig) -> list[str]:
    return ["maximize", "minimize"] if objective.multi else ["maximize"]


def objective_values(metrics: dict, objective: ObjectiveConfig) -> list[float]:
    if objective.multi:
        return [float(metrics[objective.acc]), float(metrics[objective.cost])]
    return [float(metrics["score"])]


CONNECT_TIMEOUT_S = 10
# drivers that take libpq's / MySQL's connect_timeout (seconds) as a connect argument
_TIMEOUT_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg", "mysql", "mysql+pymysql",
                    "mysql+mysqldb", "mariadb", "mariadb+pymysql", "mariadb+mysqldb"}


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine arguments for ``url``: a database server that accepts the connection and never
    answers had hung the run before its first trial; its drivers now give up after CONNECT_TIMEOUT_S
    (unless the URL sets its own connect_timeout)."""
    driver = url.split("://", 1)[0].lower()
    if driver in _TIMEOUT_DRIVERS and "connect_timeout" not in url:
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {}


def open_study(url: str, name: str, objective: ObjectiveConfig) -> optuna.Study:
    """Create (or reopen, on resume) the study; a bad URL is a one-line ConfigError."""
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
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
        dist = optuna_distribution(prm.domain)
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
