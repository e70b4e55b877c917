"""The Ray Tune adapter: the only module that drives Ray Tune.

* :class:`StrategySearcher` maps a nasq-ray :class:`BaseStrategy` onto Ray's ``Searcher``, telling
  the strategy how each trial ended (complete, pruned by the scheduler, or failed).
* schedulers come from ``schedulers.py`` by name; PBT runs without a searcher, from random configs.
* :func:`run_search` runs one experiment end to end and writes the results folder.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .checkpoint_gc import CheckpointGC
from .config import ExperimentConfig, from_dict, load_yaml
from .data import Dataset, load_dataset
from .errors import ConfigError, NasqError, unknown_name
from .objective import ObjectiveConfig, check_training_cost
from .optuna_store import OptunaStoreCallback, default_url, open_study
from .results import TrialRecord, _num, front_table, write_results
from .space import Choice, Float, Int, Ordinal, SearchSpace, read_space_yaml, resolve_space_path
from .table import Table, TableContext, default_test_column, run_table_trial
from .schedulers import build_scheduler
from .strategies import FINISHED, MULTI_OBJECTIVE_ONLY, BaseStrategy, make_searcher
from .trial import TrialContext, run_trial
from .warm_start import warm_start_configs

DNAS_PREFIX = "dnas."

# Quiet Ray by default; --verbose brings its logs back.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new reporter prints a header even at verbose=0

import numpy as np  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

CHECKPOINT_FILE = "state.pt"

# ------------------------------------------------------------------------------------------ space


def to_param_space(space: SearchSpace) -> dict:
    """A plain Ray Tune ``param_space`` for a flat space (no conditional parameters)."""
    if not space.is_flat:
        cond = next(p for p in space.params if p.when is not None)
        raise ConfigError(f"space '{space.name}' is conditional ('{cond.name}' exists only when "
                          f"{space.describe_when(cond)}): use its Optuna define-by-run function instead")
    out = {}
    for p in space.params:
        d = p.domain
        if isinstance(d, (Choice, Ordinal)):
            out[p.name] = tune.choice(list(d.values))
        elif isinstance(d, Int):
            out[p.name] = tune.lograndint(d.low, d.high + 1) if d.log else tune.randint(d.low, d.high + 1)
        elif isinstance(d, Float):
            out[p.name] = tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)
    return out


# ------------------------------------------------------------------------------------- searchers


def trial_status(result: dict | None, error: bool, max_epochs: int) -> str:
    """How a finished trial ended: ``complete``, ``pruned`` (stopped early by a scheduler) or ``failed``."""
    if error or not result or result.get("status") == "failed":
        return "failed"
    return "complete" if int(result.get("epoch", 0)) >= max_epochs else "pruned"


class StrategySearcher(Searcher):
    """Ray ``Searcher`` around a :class:`BaseStrategy`."""

    def __init__(self, strategy: BaseStrategy, max_epochs: int, metric: str = "score", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.strategy = strategy
        self.max_epochs = max_epochs
        self.configs: dict[str, dict] = {}

    def suggest(self, trial_id: str):
        cfg = self.strategy.suggest(trial_id)
        if cfg is FINISHED or cfg == FINISHED:
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


class WarmStartSearcher(Searcher):
    """Proposes ``points`` (whole configs) first, then the wrapped searcher's suggestions; the
    wrapped searcher learns the points' results as if it had suggested them (a nasq-ray strategy
    through ``on_trial_complete``, a Ray searcher through ``add_evaluated_point`` where it has one)."""

    def __init__(self, inner: Searcher, points: list[dict], max_epochs: int):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner, self.points, self.max_epochs = inner, [dict(p) for p in points], max_epochs
        self.given: dict[str, dict] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

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

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path + ".inner")
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"points": self.points, "given": self.given}, f)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path + ".inner")
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.points, self.given = state["points"], state["given"]


def build_searcher(cfg: ExperimentConfig, space: SearchSpace, objective: ObjectiveConfig,
                   points: list[dict] | None = None) -> Searcher:
    """The run's searcher; ``points`` (warm-start configs) are proposed before its own suggestions."""
    s = cfg.search
    name = resolve_searcher(cfg)
    made = make_searcher(name, space, objective, seed=s.seed, budget=s.num_samples, **s.searcher_args)
    if isinstance(made, BaseStrategy):
        made = StrategySearcher(made, s.max_epochs)
    elif not isinstance(made, Searcher):
        raise ConfigError(f"searcher '{name}': the factory returned {type(made).__name__}; expected a "
                          "nasq_ray BaseStrategy or a ray.tune.search.Searcher")
    return WarmStartSearcher(made, points, s.max_epochs) if points else made


# ----------------------------------------------------------------------------- pbt (no searcher)

PBT_MUTABLE = ("train.lr", "train.weight_decay", "train.momentum", "train.batch_size")
PBT_ARCH_KEY = "__config"


def pbt_mutations(space: SearchSpace | None) -> dict:
    """Tune domains of the training hyperparameters PBT may perturb while a model trains."""
    params = {p.name: p for p in (space.params if space is not None else [])}
    out = {}
    for name in PBT_MUTABLE:
        p = params.get(name)
        if p is None or p.when is not None:
            continue
        d = p.domain
        if isinstance(d, (Choice, Ordinal)):
            out[name] = list(d.values)
        elif isinstance(d, Float):
            out[name] = tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)
        elif isinstance(d, Int):
            out[name] = tune.randint(d.low, d.high + 1)
    if not out:
        raise ConfigError(f"scheduler: pbt perturbs training hyperparameters, and space '{getattr(space, 'name', '?')}' "
                          f"searches none of {', '.join(PBT_MUTABLE)}; use another scheduler")
    return out


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


class _SampleConfig:
    """A picklable ``tune.sample_from`` function: a random config of the space (PBT's starting points)."""

    def __init__(self, space: SearchSpace, seed: int):
        self.space = space
        self.rng = np.random.default_rng(seed)

    def __call__(self, spec):
        return self.space.sample(self.rng)


def pbt_param_space(space: SearchSpace, seed: int) -> dict:
    """PBT's ``param_space``: a whole random config, with the mutable hyperparameters beside it at
    the top level where PBT can perturb them."""
    return {PBT_ARCH_KEY: tune.sample_from(_SampleConfig(space, seed))}


def flat_config(config: dict) -> dict:
    """The space config of a trial (PBT keeps it under a key, with perturbed values beside it)."""
    if PBT_ARCH_KEY not in config:
        return config
    base = dict(config[PBT_ARCH_KEY])
    base.update({k: v for k, v in config.items() if k != PBT_ARCH_KEY and k in base})
    return base


def resolve_searcher(cfg: ExperimentConfig) -> str:
    """The searcher to use: the one asked for, else ``tpe`` (``random`` under PBT)."""
    s = cfg.search
    if s.scheduler == "pbt":
        if s.searcher not in (None, "random"):
            raise ConfigError(f"scheduler: pbt cannot be combined with searcher '{s.searcher}': Ray Tune refuses a "
                              "search algorithm with PBT (PBT starts from random configs, then copies and perturbs "
                              "the best); use --searcher random, or another scheduler with this searcher")
        return "random"
    return s.searcher or "tpe"


# -------------------------------------------------------------------------------------- trainable


def _crash_once(epoch: int) -> None:
    """Fault injection for the tests (``NASQ_CRASH_ONCE_DIR``): kill this trial's worker process
    after its second epoch, once per trial (``always``: after every epoch from the second on)."""
    where = os.environ.get("NASQ_CRASH_ONCE_DIR")
    if not where or epoch < 2:
        return
    if where != "always":
        mark = Path(where) / tune.get_context().get_trial_id()
        if mark.exists():
            return
        mark.touch()
    os._exit(17)


def _trainable(config: dict, ctx: TrialContext) -> None:
    import ray
    import torch

    node = ray.get_runtime_context().get_node_id()
    config = flat_config(config)
    if isinstance(ctx, TableContext):
        run_table_trial(config, ctx, lambda metrics, payload: tune.report({**metrics, "node_id": node}))
        return
    run = run_trial
    if any(k.startswith(DNAS_PREFIX) for k in config):
        from .dnas import run_dnas_trial as run
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location=ctx.device, weights_only=False)

    def report(metrics: dict, payload: dict | None) -> None:
        metrics = {**metrics, "node_id": node}
        if payload is None:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as d:
                torch.save(payload, Path(d) / CHECKPOINT_FILE)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        _crash_once(int(metrics.get("epoch", 0)))

    run(config, ctx, report, state)


class ProgressCallback(tune.Callback):
    """The live view of a search: trials done / running / pruned / failed, best score, front size,
    elapsed and estimated remaining time (counted from Ray's own trial list, so a resumed run goes on).

    ``text`` on a terminal: one status line rewritten in place. ``text`` into a pipe or file: the same
    line at most every ``every_s`` seconds, and for the last trial. ``json``: one object per ended
    trial, for machines.
    """

    def __init__(self, num_samples: int, objective: ObjectiveConfig, max_epochs: int, log_format: str = "text",
                 every_s: float = 10.0):
        self.n = num_samples
        self.objective = objective
        self.max_epochs = max_epochs
        self.log_format = log_format
        self.every_s = every_s
        self.t0 = time.time()
        self._last_print = 0.0
        self._points: dict[str, tuple[float, float]] = {}  # complete trials' (acc, cost)
        self._best: float | None = None
        self._ended: dict[str, str] = {}  # trial id -> complete | pruned | failed

    def setup(self, **info):
        self.t0 = time.time()  # also when a resumed experiment starts again

    def _front_size(self) -> int:
        from .objective import pareto_mask

        return int(pareto_mask(list(self._points.values()), ("max", "min")).sum()) if self._points else 0

    def state(self, trials) -> dict:
        done = len(self._ended)
        elapsed = time.time() - self.t0
        ended_now = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
        done_total = max(done, ended_now)
        eta = elapsed / done * max(self.n - done_total, 0) if done else None
        return {"done": done_total, "requested": self.n,
                "running": sum(t.status == "RUNNING" and t.trial_id not in self._ended for t in trials),
                "pruned": sum(v == "pruned" for v in self._ended.values()),
                "failed": sum(v == "failed" for v in self._ended.values()),
                "best_score": self._best, "front_size": self._front_size(),
                "elapsed_s": round(elapsed, 1), "eta_s": None if eta is None else round(eta, 1)}

    @staticmethod
    def _clock(seconds) -> str:
        if seconds is None:
            return "?"
        seconds = int(seconds)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
            else f"{seconds // 60}:{seconds % 60:02d}"

    def status_line(self, st: dict) -> str:
        best = "-" if st["best_score"] is None else f"{st['best_score']:.4f}"
        return (f"[{st['done']:>3}/{st['requested']} done | {st['running']} running | {st['pruned']} pruned | "
                f"{st['failed']} failed]  best score {best}  front {st['front_size']}  "
                f"elapsed {self._clock(st['elapsed_s'])}  left ~{self._clock(st['eta_s'])}")

    def _ended_trial(self, trials, trial, error: bool) -> None:
        m = trial.last_result or {}
        status = trial_status(m, error, self.max_epochs)
        self._ended[trial.trial_id] = status
        acc, cost = m.get(self.objective.acc), m.get(self.objective.cost)
        if status == "complete" and isinstance(acc, (int, float)) and isinstance(cost, (int, float)):
            self._points[trial.trial_id] = (float(acc), float(cost))
            score = m.get("score")
            if isinstance(score, (int, float)) and (self._best is None or score > self._best):
                self._best = float(score)
        st = self.state(trials)
        if self.log_format == "json":
            event = {"event": "trial_end", "trial_id": trial.trial_id, "status": status,
                     "epoch": int(m.get("epoch", 0))}
            for k in (self.objective.acc, self.objective.cost, "score", "w_bits_str", "fail_reason"):
                if k in m and m[k] not in ("", None):
                    event["bits" if k == "w_bits_str" else k] = m[k]
            print(json.dumps({**event, **st}, default=str), flush=True)
            return
        line = self.status_line(st)
        if sys.stdout.isatty():
            print("\r" + line, end="", flush=True)
        elif time.time() - self._last_print >= self.every_s or st["done"] >= self.n:
            print(line, flush=True)
            self._last_print = time.time()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended_trial(trials, trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended_trial(trials, trial, error=True)

    def on_experiment_end(self, trials, **info):
        if self.log_format == "text" and sys.stdout.isatty():
            print(flush=True)  # end the in-place line


# ---------------------------------------------------------------------------------------- running


@dataclass
class SearchResult:
    out_dir: Path
    records: list[TrialRecord]
    front: list[TrialRecord]
    best: TrialRecord | None
    space: SearchSpace
    dataset: Dataset | None
    wall_s: float
    objective: ObjectiveConfig
    requested: int = 0
    interrupted: bool = False
    log_format: str = "text"

    @property
    def unfinished(self) -> int:
        """Trials the driver's stop interrupted (``--resume`` continues them)."""
        return sum(r.status == "unfinished" for r in self.records)

    @property
    def finished(self) -> int:
        return len(self.records) - self.unfinished


def effective_objective(cfg: ExperimentConfig) -> ObjectiveConfig:
    """NSGA-II optimizes (accuracy, cost): it implies a multi-objective run."""
    obj = cfg.objective
    if resolve_searcher(cfg) in MULTI_OBJECTIVE_ONLY and not obj.multi:
        obj = replace(obj, multi=True)
    return obj


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (``ray.init`` waits for minutes) when ``host:port`` does not accept connections."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address: '{address}' is not allowed; allowed: host:port, ray://host:port, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"address: cannot reach a Ray cluster at '{address}' ({e.strerror or e})") from None


def check_storage(cfg: ExperimentConfig) -> None:
    """Fail before Ray starts when ``--storage`` cannot be opened or written."""
    root = cfg.storage_root
    try:
        if "://" in root:
            import pyarrow.fs

            pyarrow.fs.FileSystem.from_uri(root)
        else:  # nothing is created yet: the nearest existing folder must be writable
            existing = next(p for p in (Path(root), *Path(root).parents) if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK):
                raise PermissionError(f"'{existing}' is not a writable folder")
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"storage: cannot use '{root}' ({reason}); allowed: a writable local or shared path, "
                          "or a URI pyarrow can open (s3://, gs://, hdfs://, file://)") from None


def _sigterm_as_interrupt() -> None:
    """SIGTERM stops a search the way Ctrl-C does: Ray Tune saves the experiment, the CLI prints how to
    resume. Installed after ``ray.init``, whose own handler would otherwise end the driver at once."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def init_ray(cfg: ExperimentConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.resources.address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(include_dashboard=False, log_to_driver=cfg.verbose,
                  logging_level=logging.INFO if cfg.verbose else logging.ERROR)
    if address and address != "local":
        check_reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError...
            raise ConfigError(f"address: cannot reach a Ray cluster at '{address}': "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    else:
        # "local": always a private instance, never a stale cluster named in /tmp/ray/ray_current_cluster
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", **kwargs)
    _sigterm_as_interrupt()


def trial_fields(config: dict, metrics: dict, error: bool, max_epochs: int) -> tuple[dict, str]:
    """A trial's space config (for DNAS: the derived network it trained) and how it ended."""
    config = flat_config(config)
    if "derived_config" in metrics:
        config = json.loads(metrics["derived_config"])
    return config, trial_status(metrics, error, max_epochs)


def saved_statuses(experiment_path: str) -> dict[str, str]:
    """Trial statuses in the experiment state on storage: what ``--resume`` will see."""
    import pyarrow.fs

    from .experiment_state import read_saved_state, saved_trial_statuses

    text = read_saved_state(*pyarrow.fs.FileSystem.from_uri(experiment_path))
    return saved_trial_statuses(text) if text else {}


def collect(grid, max_epochs: int, statuses: dict[str, str] | None = None) -> list[TrialRecord]:
    """One record per trial. ``statuses`` (from the saved experiment state) tell a trial a scheduler
    stopped from one the driver's stop interrupted: after Ctrl-C Ray marks both TERMINATED in memory."""
    records = []
    trials = grid._experiment_analysis.trials  # same order as the results
    for r, trial in zip(grid, trials):
        m = dict(r.metrics or {})
        error = ""
        if r.error is not None:
            lines = [ln for ln in str(r.error).strip().splitlines() if ln.strip()]
            error = lines[-1] if lines else type(r.error).__name__
        trial_id = m.get("trial_id") or Path(r.path).name.replace("trial_", "")
        flat = flat_config(dict(r.config or {}))
        extra = {k: v for k, v in flat.items() if k.startswith(DNAS_PREFIX)}
        config, status = trial_fields(flat, m, r.error is not None, max_epochs)
        tune_status = (statuses or {}).get(str(trial_id), trial.status)
        if status != "failed" and tune_status not in ("TERMINATED", "ERROR"):
            status = "unfinished"  # stopped with the driver, not by a scheduler: --resume continues it
        records.append(TrialRecord(
            trial_id=str(trial_id), status=status,
            config=config, metrics=m, extra=extra,
            time_s=float(m.get("time_total_s", 0.0) or 0.0), error=error,
            checkpoint=r.checkpoint.path if r.checkpoint is not None else None,
            node=f"{m.get('hostname', '')}/{str(m.get('node_id', ''))[:8]}".strip("/"),
            checkpoint_obj=r.checkpoint,
        ))
    return records


@dataclass
class Prepared:
    """Everything validated before Ray starts: the bound space, the trial context, the objective."""

    space: SearchSpace
    context: TrialContext | TableContext
    objective: ObjectiveConfig
    dataset: Dataset | None
    table: Table | None


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Resolve the trial kind (trained, or looked up in a table), load and check its inputs."""
    objective = effective_objective(cfg)
    path = resolve_space_path(cfg.space)
    raw = read_space_yaml(path)
    table_path = cfg.table.path or (raw.get("table") or {}).get("path")
    if table_path:
        space = SearchSpace(raw, source=str(path))
        default = space.table or {}
        if cfg.table.path:
            table_path = cfg.table.path
        elif default:
            table_path = default["path"]
        acc = cfg.table.acc or default.get("acc")
        cost = cfg.table.cost or default.get("cost")
        for field, value in (("table.acc", acc), ("table.cost", cost)):
            if not value:
                raise ConfigError(f"{field}: name the table's {field.split('.')[1]} column (--table-{field.split('.')[1]})")
        objective = replace(objective, cost=cost)
        table = Table(table_path, space, acc, cost, cfg.table.test)
        if cfg.table.test is None:
            table.test = default_test_column(acc, table.numeric)
        ctx = TableContext(space, table, objective, cfg.search.max_epochs)
        return Prepared(space, ctx, objective, None, table)
    check_training_cost(objective)
    data = load_dataset(cfg.data.name, cfg.data.dir, label_column=cfg.data.label_column,
                        val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
                        max_train=cfg.data.max_train, seed=cfg.data.seed)
    space = SearchSpace(raw, data.input_shape, data.num_classes, source=str(path))
    if space.is_abstract:
        raise ConfigError(f"space: '{space.name}' is abstract (a 'params' space) and has no table; give --table")
    import torch

    device = "cuda" if cfg.resources.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    ctx = TrialContext(space=space, train=data.train, val=data.val, max_epochs=cfg.search.max_epochs,
                       objective=objective, seed=cfg.search.seed,
                       threads=max(1, int(cfg.resources.cpus_per_trial)), device=device)
    return Prepared(space, ctx, objective, data, None)


def _tuner_parts(cfg: ExperimentConfig, prep: Prepared):
    """The trainable, tune config pieces and run config shared by a new and a resumed search."""
    pbt = cfg.search.scheduler == "pbt"
    resources = {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(_trainable, ctx=prep.context), resources)
    callbacks = [] if cfg.quiet else [ProgressCallback(cfg.search.num_samples, prep.objective, cfg.search.max_epochs,
                                                       cfg.log_format)]
    callbacks.append(OptunaStoreCallback(cfg.storage_db or default_url(cfg.out_dir), cfg.run_name, prep.space,
                                         prep.objective, cfg.search.max_epochs, trial_fields))
    # PBT restores other trials' checkpoints a little later: keep a few, or they are gone
    keep = max(cfg.search.keep_checkpoints, 4) if pbt else cfg.search.keep_checkpoints
    callbacks.append(CheckpointGC(keep))  # not Ray's num_to_keep: see checkpoint_gc for why
    run_config = tune.RunConfig(
        name=cfg.run_name, storage_path=cfg.storage_root, verbose=1 if cfg.verbose else 0,
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        callbacks=callbacks,
    )
    return trainable, run_config


def _fit(cfg: ExperimentConfig, prep: Prepared, tuner, t0: float) -> SearchResult:
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    with warnings.catch_warnings():
        if not cfg.verbose:
            warnings.simplefilter("ignore")
            tune_logger.setLevel(logging.ERROR)  # also when Ray was started by the caller, not by init_ray
        try:
            grid = tuner.fit()
        finally:
            tune_logger.setLevel(level)
    records = collect(grid, cfg.search.max_epochs, saved_statuses(cfg.experiment_path))
    out_dir = cfg.out_dir
    test_split = prep.dataset.test if prep.dataset is not None else None
    test_metric = prep.table.test if prep.table is not None else None
    front, best = write_results(out_dir, records, prep.space, prep.objective, test_split, seed=cfg.search.seed,
                                test_metric=test_metric)
    try:
        from .report import write_report

        write_report(out_dir)
    except Exception as e:  # noqa: BLE001 - a plot must never cost the search's results
        print(f"warning: report.html not written ({type(e).__name__}: {e}); "
              f"run python -m nasq_ray.report {out_dir}", file=sys.stderr)
    cut_short = any(r.status == "unfinished" for r in records) or len(records) < cfg.search.num_samples
    interrupted = cut_short and not _budget_spent(cfg, t0)
    return SearchResult(out_dir, records, front, best, prep.space, prep.dataset, time.time() - t0, prep.objective,
                        requested=cfg.search.num_samples, interrupted=interrupted, log_format=cfg.log_format)


def _budget_spent(cfg: ExperimentConfig, t0: float) -> bool:
    return cfg.search.time_budget_s is not None and time.time() - t0 >= cfg.search.time_budget_s


def run_search(cfg: ExperimentConfig) -> SearchResult:
    """Run the experiment described by ``cfg`` and write its results folder."""
    t0 = time.time()
    prep = prepare(cfg)
    space, objective = prep.space, prep.objective
    pbt = cfg.search.scheduler == "pbt"
    if pbt and prep.table is not None:
        raise ConfigError("scheduler: pbt perturbs training; a table run reports once per trial; use fifo")
    if cfg.search.warm_start and (pbt or prep.table is not None):
        raise ConfigError("search.warm_start: needs trained trials and a searcher (not a table run, not pbt); use 0")
    points = warm_start_configs(space, cfg.search.warm_start, prep.dataset.train.x,
                                cfg.search.seed) if cfg.search.warm_start else None
    searcher = None if pbt else build_searcher(cfg, space, objective, points)
    if pbt:
        resolve_searcher(cfg)  # refuses a searcher other than random, with the reason
    scheduler = build_scheduler(cfg.search.scheduler, cfg.search.scheduler_args, metric="score", mode="max",
                                max_t=cfg.search.max_epochs, seed=cfg.search.seed, objective=objective, space=space)
    check_storage(cfg)
    init_ray(cfg)
    _allow_pending_trials(cfg)
    if tune.Tuner.can_restore(cfg.experiment_path):
        raise ConfigError(f"name: '{cfg.experiment_path}' already holds an experiment; choose another --name, "
                          f"or continue it with --resume {cfg.out_dir}")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    open_study(cfg.storage_db or default_url(cfg.out_dir), cfg.run_name, prep.objective)  # fail fast on a bad DB
    trainable, run_config = _tuner_parts(cfg, prep)
    tuner = tune.Tuner(
        trainable,
        param_space=pbt_param_space(space, cfg.search.seed) if pbt else None,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=cfg.search.num_samples,
            max_concurrent_trials=cfg.search.max_concurrent, reuse_actors=True,
            time_budget_s=cfg.search.time_budget_s,
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
        ),
        run_config=run_config,
    )
    (cfg.out_dir / "experiment.yaml").write_text(_dump_config(cfg))
    return _fit(cfg, prep, tuner, t0)


def _allow_pending_trials(cfg: ExperimentConfig) -> None:
    """Let as many trials wait for their actors as the cluster has trial slots.

    With a search algorithm Ray Tune keeps one pending trial at a time by default, so on a cluster
    each new trial waits for the previous one's actor to start, and short trials never spread to
    more nodes than the first. (``TUNE_MAX_PENDING_TRIALS_PG`` set by the user wins.)
    """
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    slots = int(cpus // max(cfg.resources.cpus_per_trial, 1e-9)) or 1
    if cfg.search.max_concurrent:
        slots = min(slots, cfg.search.max_concurrent)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, slots)))


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def saved_config(result_dir: str | Path, field: str, overrides: dict | None = None) -> ExperimentConfig:
    """The experiment a results folder ran (its experiment.yaml, named after the folder), with
    ``overrides`` (``address`` or top-level keys); ``field`` names the flag in the error."""
    folder = Path(result_dir).expanduser().resolve()
    saved = folder / "experiment.yaml"
    if not saved.is_file():
        raise ConfigError(f"{field}: '{folder}' holds no nasq-ray experiment (no experiment.yaml); give the "
                          "results folder of an earlier run (OUT/NAME)")
    raw = load_yaml(saved)
    raw.update({"name": folder.name, "out": str(folder.parent)})
    for key, value in (overrides or {}).items():
        if key == "address":
            raw.setdefault("resources", {})["address"] = value
        else:
            raw[key] = value
    return from_dict(raw)


def local_experiment_dir(cfg: ExperimentConfig) -> Path | None:
    """The experiment folder on this machine (also for file:// storage); None for remote storage."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(cfg.experiment_path)
    return Path(path) if isinstance(fs, pyarrow.fs.LocalFileSystem) else None


def resume_search(result_dir: str | Path, **overrides) -> SearchResult:
    """Continue an interrupted experiment from its results folder: finished trials are kept,
    unfinished ones continue from their last checkpoint, the searcher's state is restored."""
    t0 = time.time()
    cfg = saved_config(result_dir, "resume", overrides)
    prep = prepare(cfg)
    check_storage(cfg)
    init_ray(cfg)
    _allow_pending_trials(cfg)
    if not tune.Tuner.can_restore(cfg.experiment_path):
        raise ConfigError(f"resume: no Ray Tune experiment state at '{cfg.experiment_path}' (the run stopped before "
                          "its first trial started); start it again instead")
    trainable, _ = _tuner_parts(cfg, prep)  # the run config (callbacks, storage) is restored with the state
    tuner = tune.Tuner.restore(cfg.experiment_path, trainable=trainable, resume_unfinished=True,
                               resume_errored=True, restart_errored=False,
                               param_space=pbt_param_space(prep.space, cfg.search.seed)
                               if cfg.search.scheduler == "pbt" else None)
    return _fit(cfg, prep, tuner, t0)


def _dump_config(cfg: ExperimentConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def summary_json(result: SearchResult) -> str:
    """The end of a search as one JSON object (``--log-format json``)."""
    objective = result.objective

    def row(r: TrialRecord) -> dict:
        return {"trial_id": r.trial_id, objective.acc: r.metrics.get(objective.acc), "test_acc": r.test_acc,
                objective.cost: r.metrics.get(objective.cost), "score": r.metrics.get("score"),
                "bits": r.metrics.get("w_bits_str", ""), "config": r.config}

    counts = {s: sum(r.status == s for r in result.records) for s in ("complete", "pruned", "failed", "unfinished")}
    return json.dumps({"event": "summary", "trials": len(result.records), **counts, "wall_s": round(result.wall_s, 1),
                       "out_dir": str(result.out_dir), "interrupted": result.interrupted,
                       "front": [row(r) for r in result.front], "best": row(result.best) if result.best else None},
                      default=_json_value)


def _json_value(o):
    return o.item() if hasattr(o, "item") else str(o)


def _wrapped(items: list[str], width: int = 100, indent: str = "  ") -> list[str]:
    lines, line = [], ""
    for item in items:
        if line and len(line) + 2 + len(item) > width - len(indent):
            lines.append(indent + line)
            line = ""
        line = f"{line}  {item}" if line else item
    return lines + ([indent + line] if line else [])


def summary(result: SearchResult) -> str:
    """The text printed at the end of a search: the front and the best config."""
    objective = result.objective
    n = len(result.records)
    by_status = {s: sum(r.status == s for r in result.records)
                 for s in ("complete", "pruned", "failed", "unfinished")}
    lines = [
        "",
        f"{n} trials in {result.wall_s:.0f} s ({by_status['complete']} complete, {by_status['pruned']} pruned, "
        f"{by_status['failed']} failed" + (f", {by_status['unfinished']} unfinished" if by_status["unfinished"] else "")
        + f"); results in {result.out_dir}",
        "",
        f"Pareto front ({objective.acc} vs {objective.cost}; test accuracy of front models only):",
        front_table(result.front, objective),
    ]
    if result.best is not None:
        b = result.best
        m = b.metrics
        size = "".join(f", {k} {_num(m[k])}" for k in ("size_kb", "bitops") if k in m and k != objective.cost)
        test = "-" if b.test_acc is None else round(b.test_acc, 4)
        lines += ["", f"Best score {m['score']:.4f}: trial {b.trial_id}, {objective.acc} {m[objective.acc]:.4f}, "
                      f"test_acc {test}, {objective.cost} {_num(m[objective.cost])}{size}",
                  "Best config:"]
        lines += _wrapped([f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in b.config.items()])
    return "\n".join(lines)


__all__ = ["NasqError", "SearchResult", "StrategySearcher", "run_search", "summary", "to_param_space"]
