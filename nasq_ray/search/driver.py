"""The search driver: :func:`run_search` runs one experiment end to end through Ray Tune and writes
its results folder; :func:`resume_search` continues one. It never asks which trial kind it runs.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

from ray import tune
from ray.tune.search import Searcher

from ..config import ExperimentConfig, saved_config
from ..data.sources import check_data_dir_read
from ..errors import ConfigError, NasqError
from ..results.files import check_param_names, write_reference, write_results
from ..results.optuna_store import default_url, open_study
from ..results.records import SearchResult
from ..trials import BaseTrialKind, Prepared, prepare
from .callbacks import OptunaStoreCallback, ProgressCallback
from .checkpoint_gc import CheckpointGC
from .collect import TrialFields, collect
from .schedulers import build_scheduler, pbt_param_space, resolve_scheduler
from .searchers import (base_searcher, budget_refusal, build_searcher, effective_objective, experiment_yaml,
                        resolve_searcher, restored_search_algorithm)
from .session import (allow_pending_trials, check_checkpoints_kept, check_storage, check_trials_fit, folder_lock,
                      init_ray, saved_statuses)
from .trainable import run_in_ray


def _tuner_parts(cfg: ExperimentConfig, kind: BaseTrialKind, prep: Prepared):
    """The trainable, tune config pieces and run config shared by a new and a resumed search."""
    pbt = cfg.search.scheduler == "pbt"
    resources = {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(run_in_ray, kind=kind, context=prep.context), resources)
    callbacks = [] if cfg.quiet else [ProgressCallback(cfg.search.num_samples, prep.objective, cfg.search.max_epochs,
                                                       cfg.log_format)]
    callbacks.append(OptunaStoreCallback(cfg.storage_db or default_url(cfg.out_dir), cfg.run_name, prep.space,
                                         prep.objective, TrialFields(kind, cfg.search.max_epochs)))
    # PBT restores other trials' checkpoints a little later: keep a few, or they are gone
    keep = max(cfg.search.keep_checkpoints, 4) if pbt else cfg.search.keep_checkpoints
    callbacks.append(CheckpointGC(keep))  # not Ray's num_to_keep: see checkpoint_gc for why
    run_config = tune.RunConfig(
        name=cfg.run_name, storage_path=cfg.storage_root, verbose=1 if cfg.verbose else 0,
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        callbacks=callbacks,
    )
    return trainable, run_config


def _fit(cfg: ExperimentConfig, kind: BaseTrialKind, prep: Prepared, tuner, t0: float, searcher) -> SearchResult:
    # Ray Tune's, tensorboardX's (its event files get a failed trial's -inf score: "NaN or Inf found") and
    # Optuna's (a sampler's notes, GPSampler's "greenlet is unavailable, falling back to ...")
    loggers = [logging.getLogger(name) for name in ("ray.tune", "tensorboardX.x2num", "optuna")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        if not cfg.verbose:
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.CRITICAL)  # also when Ray was started by the caller; failures are in the summary
        sigint = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
        try:
            grid = tuner.fit()
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            if sigint is not None:  # Ray Tune leaves its handler behind: Ctrl-C did nothing after a search
                signal.signal(signal.SIGINT, sigint)
    records = collect(grid, TrialFields(kind, cfg.search.max_epochs), saved_statuses(cfg.experiment_path))
    out_dir = cfg.out_dir
    front, best = write_results(out_dir, records, prep.space, prep.objective,
                                test_accuracy=lambda chosen: kind.test_accuracy(chosen, prep))
    try:
        reference = kind.reference_rows(prep)
    except NasqError as e:  # the search's results are written already; a reference row is extra
        print(f"warning: reference models not measured ({e})", file=sys.stderr)
        reference = []
    write_reference(out_dir, reference)
    try:
        from ..results.report import write_report

        write_report(out_dir, records)
    except Exception as e:  # noqa: BLE001 - a plot must never cost the search's results
        print(f"warning: report.html not written ({type(e).__name__}: {e}); "
              f"run python -m nasq_ray.report {out_dir}", file=sys.stderr)
    refusal = budget_refusal(searcher)
    if refusal and not records:  # the budget is one no config of the space meets: a bad value, said in one line
        raise ConfigError(f"objective.max_cost: {refusal}, and no trial ran; allowed: a budget some config of the "
                          "space is within")
    interrupted = was_interrupted([r.status for r in records], cfg.search.num_samples,
                                  searcher_finished=bool(getattr(searcher, "finished", False)),
                                  budget_spent=_budget_spent(cfg, t0))
    return SearchResult(out_dir, records, front, best, prep.space, prep, time.time() - t0, prep.objective,
                        requested=cfg.search.num_samples, interrupted=interrupted, log_format=cfg.log_format,
                        reference=reference)


def was_interrupted(statuses: list[str], requested: int, searcher_finished: bool, budget_spent: bool) -> bool:
    """Whether a search that returned was stopped (Ctrl-C, SIGTERM) and has work left for ``--resume``.
    A trial left unfinished is work left, also where the searcher has handed out all it had (the fixed
    list of one-shot phase 3: its interrupted trials had been taken for done); fewer trials than
    requested are work left unless the searcher said it has nothing more (an exhausted grid)."""
    if budget_spent:
        return False
    return "unfinished" in statuses or (len(statuses) < requested and not searcher_finished)


def _budget_spent(cfg: ExperimentConfig, t0: float) -> bool:
    return cfg.search.time_budget_s is not None and time.time() - t0 >= cfg.search.time_budget_s


def run_search(cfg: ExperimentConfig, *, record_config: bool = True) -> SearchResult:
    """Run the experiment described by ``cfg`` and write its results folder (with its experiment.yaml
    unless ``record_config`` is false: one-shot phase 2 runs in the folder of the one-shot run, whose
    experiment.yaml must stay the one-shot run's, or a resume after a kill would skip phase 3)."""
    if cfg.search.mode == "oneshot":
        from .oneshot import run_oneshot

        return run_oneshot(cfg, run_search, resume_config)
    t0 = time.time()
    if cfg.name is None:  # the name is fixed once, here, and saved with the experiment
        cfg = replace(cfg, name=cfg.run_name)
    check_data_dir_read(cfg.data)
    kind, prep = prepare(cfg, effective_objective(cfg))
    space, objective = prep.space, prep.objective
    check_param_names(space)
    pbt = cfg.search.scheduler == "pbt"
    if cfg.search.warm_start and pbt:
        raise ConfigError("search.warm_start: needs a searcher, and pbt runs without one; use 0")
    if objective.max_cost is not None and pbt:
        raise ConfigError("objective.max_cost: pbt runs without a searcher, so nothing holds proposals to the budget; "
                          "use another scheduler (asha, fifo, ...)")
    points = kind.warm_start_configs(prep, cfg.search.warm_start, cfg.search.seed) if cfg.search.warm_start else None
    searcher = None if pbt else build_searcher(cfg, space, objective, points, kind.cost_model(prep),
                                               sensitivity=lambda: kind.sensitivity(prep))
    if pbt:
        resolve_searcher(cfg)  # refuses a searcher other than random, with the reason
    scheduler = build_scheduler(resolve_scheduler(cfg.search.scheduler, objective), cfg.search.scheduler_args,
                                metric="score", mode="max", max_t=cfg.search.max_epochs, seed=cfg.search.seed,
                                objective=objective, space=space, protected=points or ())
    check_storage(cfg)
    check_trials_fit(cfg, private=init_ray(cfg))
    allow_pending_trials(cfg)
    with folder_lock(cfg.out_dir):  # checked again under the lock: a run of the same name may just have ended
        if tune.Tuner.can_restore(cfg.experiment_path):
            raise ConfigError(f"name: '{cfg.experiment_path}' already holds an experiment; choose another --name, "
                              f"or continue it with --resume {cfg.out_dir}")
        return _start(cfg, kind, prep, searcher, scheduler, pbt, t0, record_config)


def _start(cfg, kind, prep, searcher, scheduler, pbt: bool, t0: float, record_config: bool) -> SearchResult:
    space = prep.space
    open_study(cfg.storage_db or default_url(cfg.out_dir), cfg.run_name, prep.objective)  # fail fast on a bad DB
    trainable, run_config = _tuner_parts(cfg, kind, prep)
    tuner = tune.Tuner(
        trainable,
        param_space=pbt_param_space(space, cfg.search.seed, cfg.search.num_samples) if pbt else None,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=1 if pbt else cfg.search.num_samples,
            max_concurrent_trials=cfg.search.max_concurrent, reuse_actors=True,
            time_budget_s=cfg.search.time_budget_s,
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
        ),
        run_config=run_config,
    )
    if record_config:
        (cfg.out_dir / "experiment.yaml").write_text(experiment_yaml(cfg, prep.objective))
    return _fit(cfg, kind, prep, tuner, t0, searcher)


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def resume_search(result_dir: str | Path, **overrides) -> SearchResult:
    """Continue an interrupted experiment from its results folder: finished trials are kept,
    unfinished ones continue from their last checkpoint, the searcher's state is restored."""
    cfg = saved_config(result_dir, "resume", overrides)
    if cfg.trial in ("supernet", "finetune"):  # a one-shot run's phase folder: the run resumes its phases in order
        raise ConfigError(f"resume: '{cfg.out_dir}' is phase {1 if cfg.trial == 'supernet' else 3} of the one-shot run "
                          f"in '{cfg.out_dir.parent}'; resume that run: --resume {cfg.out_dir.parent}")
    if cfg.search.mode == "oneshot":
        from .oneshot import run_oneshot

        return run_oneshot(cfg, run_search, resume_config, resuming=True)
    return resume_config(cfg)


def resume_config(cfg: ExperimentConfig) -> SearchResult:
    """Continue the interrupted experiment ``cfg`` describes (a one-shot run resumes each phase with
    its own config: the folder's experiment.yaml is the whole run's)."""
    with folder_lock(cfg.out_dir):
        return _resume(cfg)


def _resume(cfg: ExperimentConfig) -> SearchResult:
    t0 = time.time()
    kind, prep = prepare(cfg, effective_objective(cfg))
    check_storage(cfg)
    if not tune.Tuner.can_restore(cfg.experiment_path):
        raise ConfigError(f"resume: no Ray Tune experiment state at '{cfg.experiment_path}' (no tuner.pkl: the run "
                          "stopped before its first trial started, or it was deleted); start a new run instead")
    check_checkpoints_kept(cfg.experiment_path)
    check_trials_fit(cfg, private=init_ray(cfg))
    allow_pending_trials(cfg)
    trainable, run_config = _tuner_parts(cfg, kind, prep)
    tuner = tune.Tuner.restore(cfg.experiment_path, trainable=trainable, resume_unfinished=True,
                               resume_errored=True, restart_errored=False)
    searcher = _run_here(tuner, run_config.callbacks)
    return _fit(cfg, kind, prep, tuner, t0, searcher)


def _run_here(tuner, callbacks: list):
    """A restored tuner holds the run config and searcher pickled when the run started: callbacks that
    wrote to the old folder's optuna.db (and the old run's --quiet), and a search generator that puts new
    trials in the old folder (see ``searchers.RestoredSearchGenerator``). A copied or moved results folder ran its
    resume into the folder it came from. Ray's restore takes no run config or search algorithm, so they
    are set on the tuner it built (``Tuner._local_tuner``). Returns nasq-ray's searcher inside it (None
    for pbt), restored once the tuner runs: whether it is exhausted says if a cut-short run is done."""
    internal = getattr(tuner, "_local_tuner", None)
    run_config, tune_config = getattr(internal, "_run_config", None), getattr(internal, "_tune_config", None)
    if run_config is None or tune_config is None:
        raise NasqError("resume: this Ray version's Tuner has no _local_tuner._run_config/_tune_config; nasq-ray "
                        "needs them to resume a run (see nasq_ray.search.driver._run_here)")
    run_config.callbacks = callbacks
    if tune_config.search_alg is None or isinstance(tune_config.search_alg, Searcher):  # None: pbt
        tune_config.search_alg = restored_search_algorithm(tune_config.search_alg, tune_config.max_concurrent_trials,
                                                           run_config.storage_path, run_config.name)
        tune_config.max_concurrent_trials = None  # limited inside it, as Tune would have
    return base_searcher(tune_config.search_alg)
