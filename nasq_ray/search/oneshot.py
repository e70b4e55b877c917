"""``search.mode: oneshot`` (``--oneshot``): train once, score thousands. One command, one results
folder, three phases, each an ordinary Tune run of its own trial kind:

1. ``OUT/NAME/supernet/``: one ``supernet`` trial trains the super-network for
   ``search.supernet_epochs`` (checkpointed every epoch; ``--resume`` continues it); its weights
   are then kept as ``OUT/NAME/supernet.pt``.
2. ``OUT/NAME/``: the search itself, every searcher and scheduler as usual, over ``subnet`` trials
   (the config's sub-network with inherited weights, recalibrated, evaluated: seconds each).
3. ``OUT/NAME/finetune/``: the front of phase 2 (at most ``search.finetune_top`` models)
   fine-tuned with QAT from the inherited weights for ``search.finetune_epochs`` epochs (0: no phase 3).

The results folder's ``trials.csv`` holds both: every phase-2 trial (``phase`` oneshot, its
``val_acc`` the one-shot estimate) and every fine-tuned one (``phase`` finetune, with the
``oneshot_val_acc`` it started from); ``pareto.csv`` and ``best.json`` are the fine-tuned front
(the one-shot front without phase 3). ``oneshot.json`` records which phases have finished, so
``--resume`` continues in the phase that was interrupted.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..config import ExperimentConfig
from ..errors import ConfigError
from ..results.console import counted
from ..results.records import SearchResult

PHASE1, PHASE3 = "supernet", "finetune"
STATE_FILE = "oneshot.json"


def phase_state(out: Path) -> dict:
    """Which phases have finished (``oneshot.json``; none before phase 1 ends)."""
    path = out / STATE_FILE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        state = e
    if not isinstance(state, dict) or not all(v == "done" for v in state.values()):
        raise ConfigError(f"{STATE_FILE}: {path} is damaged ({type(state).__name__}); it lists the one-shot phases that "
                          f"finished, e.g. {{\"{PHASE1}\": \"done\", \"search\": \"done\"}}: write what has finished, "
                          "or delete it to resume each phase from its own saved state")
    return state


def _mark(out: Path, phase: str) -> None:
    state = phase_state(out)
    state[phase] = "done"
    (out / STATE_FILE).write_text(json.dumps(state) + "\n")


def _sub(cfg: ExperimentConfig, name: str, **search) -> ExperimentConfig:
    """A phase's experiment inside the run's results folder (and its storage)."""
    storage = f"{cfg.storage.rstrip('/')}/{cfg.run_name}" if cfg.storage else None
    return replace(cfg, name=name, out=str(cfg.out_dir), storage=storage, quiet=True,
                   search=replace(cfg.search, mode="trials", **search))


def phase_configs(cfg: ExperimentConfig) -> tuple[ExperimentConfig, ExperimentConfig, ExperimentConfig]:
    s = cfg.search
    p1 = _sub(cfg, PHASE1, num_samples=1, max_epochs=s.supernet_epochs, scheduler="fifo", searcher="random",
              scheduler_args={}, searcher_args={}, warm_start=0, time_budget_s=None, max_concurrent=None)
    p1 = replace(p1, trial="supernet", objective=replace(cfg.objective, multi=False, max_cost=None))
    p2 = replace(cfg, trial="subnet", search=replace(s, mode="trials", max_epochs=1,
                                                      scheduler="fifo" if s.scheduler in (None, "asha", "hyperband", "median")
                                                      else s.scheduler))
    p3 = _sub(cfg, PHASE3, num_samples=max(1, s.finetune_top), warm_start=max(1, s.finetune_top),
              max_epochs=max(1, s.finetune_epochs), searcher="given", scheduler="fifo", searcher_args={},
              scheduler_args={}, time_budget_s=None)
    return p1, p2, replace(p3, trial="finetune")


def check_oneshot(cfg: ExperimentConfig) -> None:
    if cfg.search.scheduler == "pbt":
        raise ConfigError("search.mode: oneshot scores sub-networks with inherited weights, which PBT (copying and "
                          "training checkpoints) cannot perturb; use another scheduler, e.g. fifo")
    if cfg.model.factory is not None:
        raise ConfigError("search.mode: oneshot shares weights across a generated space's widths and depths; a user "
                          "model's space (--model) has no elastic dimension to share them in; leave out --oneshot")
    if cfg.table.path:
        raise ConfigError("search.mode: oneshot trains a super-network; a table run trains nothing; leave out one "
                          "of --oneshot and --table")
    if cfg.search.scheduler_args:  # phase 2 trials are one step each, phases 1 and 3 run every trial to the end
        raise ConfigError(f"search.scheduler_args: {cfg.search.scheduler_args} is not allowed with search.mode oneshot "
                          "(no phase stops a trial early: a sub-network is scored in one step); allowed: none")
    if cfg.search.searcher in ("dnas", "hawq"):  # before phase 1 trains, not when phase 2 would start
        needs = {"dnas": "trains its own differentiable super-network (trials of kind dnas)",
                 "hawq": "needs the Hessian sensitivities of a user model's float layers (--model)"}
        raise ConfigError(f"search.searcher: {cfg.search.searcher} {needs[cfg.search.searcher]}, which search.mode "
                          "oneshot does not give; use another searcher (e.g. tpe, ehvi, evolution) or leave out --oneshot")
    if cfg.trial not in (None, "subnet"):
        raise ConfigError(f"trial: '{cfg.trial}' cannot be combined with search.mode oneshot (its trials are subnet "
                          "trials)")


def run_oneshot(cfg: ExperimentConfig, run_search, resume_config, resuming: bool = False) -> SearchResult:
    """All three phases (or what is left of them when ``resuming``), each an ordinary search run by
    the driver's ``run_search`` / ``resume_config`` (handed in: the driver is what calls this)."""
    from ..trials.supernet import SUPERNET_FILE
    from ray import tune

    t0 = time.time()
    check_oneshot(cfg)
    if cfg.name is None:
        cfg = replace(cfg, name=cfg.run_name)
    out = cfg.out_dir
    p1, p2, p3 = phase_configs(cfg)
    if not resuming:
        from ..data.sources import check_data_dir_read
        from ..trials import run_space  # the space is checked before anything is written

        run_space(p1)
        check_data_dir_read(cfg.data)
    state = phase_state(out) if resuming else {}
    if not resuming and tune.Tuner.can_restore(cfg.experiment_path):
        raise ConfigError(f"name: '{cfg.experiment_path}' already holds an experiment; choose another --name, "
                          f"or continue it with --resume {out}")
    out.mkdir(parents=True, exist_ok=True)
    from .searchers import experiment_yaml

    (out / "experiment.yaml").write_text(experiment_yaml(cfg))
    if state.get(PHASE1) != "done":
        workers = cfg.search.supernet_workers
        _say(cfg, f"phase 1: training the super-network for {counted(cfg.search.supernet_epochs, 'epoch')}"
                  + (f" on {workers} data-parallel workers" if workers > 1 else ""))
        if workers > 1:
            _data_parallel_phase1(p1, workers, out / SUPERNET_FILE)
        else:
            r1 = _run_or_resume(_whole_node(p1), resuming, run_search, resume_config)
            if r1.interrupted or not r1.records or r1.records[0].status != "complete":
                return _stopped(r1, cfg, t0, "phase 1 (the super-network)")
            _keep_supernet(r1, out / SUPERNET_FILE)
        _mark(out, PHASE1)
    if state.get("search") != "done":
        _say(cfg, f"phase 2: searching {cfg.search.num_samples} sub-networks with inherited weights")
        # phase 2 runs in the one-shot run's folder: its experiment.yaml stays the one-shot run's throughout
        r2 = _run_or_resume(p2, resuming,
                            functools.partial(run_search, record_config=False), resume_config)
        if r2.interrupted:
            return _stopped(r2, cfg, t0, "phase 2 (the search)")
        _mark(out, "search")
    if cfg.search.finetune_epochs > 0 and state.get(PHASE3) != "done":
        n = min(cfg.search.finetune_top, _front_size(out)) or 1  # what phase 3 fine-tunes (and counts: "2 of 3")
        p3 = replace(p3, search=replace(p3.search, num_samples=n, warm_start=n))
        _say(cfg, f"phase 3: fine-tuning {counted(n, 'model')} of the front for "
                  f"{counted(cfg.search.finetune_epochs, 'epoch')}")
        r3 = _run_or_resume(p3, resuming, run_search, resume_config)
        if r3.interrupted:
            return _stopped(r3, cfg, t0, "phase 3 (fine-tuning)")
        _mark(out, PHASE3)
    return _combined(cfg, p2, p3, t0)


def _front_size(out: Path) -> int:
    """Models in phase 2's front (``pareto.csv``), which phase 3 fine-tunes."""
    from ..results.files import read_trials_table

    path = out / "pareto.csv"
    return len(read_trials_table(path, "search.mode: oneshot")) if path.is_file() else 0


def _say(cfg: ExperimentConfig, text: str) -> None:
    if not cfg.quiet:
        print(text, file=sys.stdout if cfg.log_format == "text" else sys.stderr, flush=True)


def _run_or_resume(pcfg: ExperimentConfig, resuming: bool, run_search, resume_config) -> SearchResult:
    from ray import tune

    if resuming and tune.Tuner.can_restore(pcfg.experiment_path):
        # the phase's own config: phase 2's folder is the run's, whose experiment.yaml is the one-shot run's
        return resume_config(replace(pcfg, quiet=True))
    return run_search(pcfg)


def _whole_node(p1: ExperimentConfig) -> ExperimentConfig:
    """Phase 1 is one trial: it asks for every CPU of the largest node (at least ``cpus_per_trial``), and
    trains on that many torch threads (a core left idle otherwise; measured on fashion_cnn with 2 CPUs:
    13.7 s -> 9.4 s per epoch)."""
    from .session import init_ray, largest_node_cpus

    init_ray(p1)
    cpus = max(p1.resources.cpus_per_trial, float(largest_node_cpus()))
    return replace(p1, resources=replace(p1.resources, cpus_per_trial=cpus))


def _data_parallel_phase1(p1: ExperimentConfig, workers: int, path: Path) -> None:
    """Phase 1 on ``workers`` Ray Train workers (a new run of it continues from its last checkpoint)."""
    import torch

    from ..trials import prepare
    from .session import check_storage, check_trials_fit, init_ray
    from .supernet_ddp import train_data_parallel

    _, prep = prepare(p1)
    check_storage(p1)
    check_trials_fit(p1, private=init_ray(p1), workers=workers)
    state = train_data_parallel(prep.context, workers, p1.resources.gpus_per_trial, p1.storage_root, p1.run_name)
    torch.save(state["supernet"], path)


def _keep_supernet(result: SearchResult, path: Path) -> None:
    import torch

    from ..trials.base import record_state

    state = record_state(result.records[0])
    if state is None:
        raise ConfigError("search.mode: oneshot: phase 1 ended without a checkpoint of the super-network")
    torch.save(state["supernet"], path)


def _stopped(result: SearchResult, cfg: ExperimentConfig, t0: float, phase: str) -> SearchResult:
    print(f"interrupted in {phase}", file=sys.stderr)
    return replace(result, out_dir=cfg.out_dir, interrupted=True, wall_s=time.time() - t0)


def _combined(cfg: ExperimentConfig, p2: ExperimentConfig, p3: ExperimentConfig, t0: float) -> SearchResult:
    """The results folder's files over both phases (see the module doc)."""
    from ..results.files import write_csv, write_results
    from ..trials import prepare

    kind2, prep2 = prepare(p2)
    records2 = _phase_records(p2, kind2, prep2)
    for r in records2:
        r.extra["phase"] = "oneshot"
    records3 = []
    if cfg.search.finetune_epochs > 0 and (Path(p3.out_dir) / "trials.csv").is_file():
        kind3, prep3 = prepare(p3)
        key = lambda r: json.dumps(r.config, sort_keys=True, default=str)  # noqa: E731 - the same config in both phases
        estimate = {key(r): r.metrics.get("val_acc") for r in records2}
        records3 = _phase_records(p3, kind3, prep3)
        for r in records3:
            r.extra["phase"] = PHASE3
            r.extra["oneshot_val_acc"] = estimate.get(key(r))
        front, best = write_results(cfg.out_dir, records3, prep3.space, prep3.objective,
                                    test_accuracy=lambda chosen: kind3.test_accuracy(chosen, prep3))
        prep = prep3
    else:
        front, best = write_results(cfg.out_dir, records2, prep2.space, prep2.objective,
                                    test_accuracy=lambda chosen: kind2.test_accuracy(chosen, prep2))
        prep = prep2
    records = records2 + records3
    write_csv(cfg.out_dir / "trials.csv", sorted(records, key=lambda r: (r.extra["phase"] != "oneshot", r.trial_id)),
              prep.space, prep.objective)
    try:
        from ..results.report import write_report

        write_report(cfg.out_dir, records)
    except Exception as e:  # noqa: BLE001 - a plot must never cost the search's results
        print(f"warning: report.html not written ({type(e).__name__}: {e})", file=sys.stderr)
    return SearchResult(cfg.out_dir, records, front, best, prep.space, prep, time.time() - t0, prep.objective,
                        requested=cfg.search.num_samples, log_format=cfg.log_format)


def _phase_records(pcfg: ExperimentConfig, kind, prep):
    """The records of a finished phase, from its Ray experiment (checkpoints included)."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    from .collect import TrialFields, collect
    from .session import saved_statuses

    grid = ResultGrid(ExperimentAnalysis(pcfg.experiment_path))
    return collect(grid, TrialFields(kind, pcfg.search.max_epochs), saved_statuses(pcfg.experiment_path))

