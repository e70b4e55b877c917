"""``python -m nasq_ray.run``: run a joint architecture + bit-width search.

With no arguments it searches the default space (``digits_small``) on scikit-learn's digits and
prints the Pareto front of accuracy against size and BitOPs. Bad input exits with code 2 and one
line on stderr naming the field.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConfigError, NasqError, OneLineParser

EPILOG = """examples:
  python -m nasq_ray.run                                  # default search on digits (~1 min on 2 cores)
  python -m nasq_ray.run --space mlp --num-samples 40
  python -m nasq_ray.run --data mnist --data-dir ~/data/mnist --space digits_small --max-train 10000
  python -m nasq_ray.run --objective multi                # ehvi on (val_acc, size_kb)
  python -m nasq_ray.run --config experiment.yaml --set search.max_epochs=30
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m nasq_ray.run", description=__doc__.split("\n\n")[0],
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--config", metavar="YAML", help="experiment file holding any of the settings below (flags override it)")
    a("--space", help="search space: a shipped name (digits_small, cifar_cnn, mlp, ...) or a YAML path "
                      "(default: digits_small)")
    a("--data", help="dataset: digits (embedded, default), mnist, fashion_mnist, cifar10, csv; or MODULE:CALLABLE, "
                     "a factory returning {'train': Dataset, 'val': Dataset, 'test': Dataset} (test optional)")
    a("--data-arg", action="append", metavar="K=V", help="keyword argument for a data factory (repeatable)")
    a("--model", metavar="MODULE:CALLABLE", help="your own model: a callable returning a torch.nn.Module (the "
                                                 "current directory is importable); the search prunes, quantizes "
                                                 "and distils it (space: own_model)")
    a("--model-arg", action="append", metavar="K=V", help="keyword argument for the model factory (repeatable)")
    a("--weights", metavar="PATH", help="the model's trained float weights: a torch.save'd state_dict (or a dict "
                                        "holding one under 'state_dict' or 'model'); without it the model is "
                                        "trained first (model.float_epochs)")
    a("--float-epochs", type=int, metavar="N", help="epochs of float training when no --weights are given (10)")
    a("--data-dir", metavar="PATH", help="folder (or CSV file) holding the dataset in its standard format")
    a("--label-column", help="label column of a CSV dataset (default: label)")
    a("--max-train", type=int, metavar="N", help="use at most N training samples (stratified)")
    a("--max-val", type=int, metavar="N", help="use at most N validation samples (stratified): every epoch's "
      "val_acc is measured on them")
    a("--searcher", help="search strategy by name (default: tpe; ehvi with --objective multi; random with "
                                                "--scheduler pbt); see --list-strategies")
    a("--searcher-arg", action="append", metavar="K=V", help="keyword argument for the searcher (repeatable)")
    a("--scheduler", help="trial scheduler: asha (default; moasha with --objective multi), fifo, hyperband, median, pbt, moasha; see --list-strategies")
    a("--scheduler-arg", action="append", metavar="K=V", help="keyword argument for the scheduler (repeatable)")
    a("--num-samples", type=int, metavar="N", help="number of trials (default: 24)")
    a("--max-epochs", type=int, metavar="N", help="epochs per trial; the resource early stopping uses (default: 15)")
    a("--objective", help="score form: mnas (acc*(cost/target)^w, default), linear (acc - penalty*cost/target), "
                          "acc; or multi: searchers optimize (accuracy, cost) as two objectives (default searcher: ehvi)")
    a("--table", metavar="CSV", help="tabular trials: look each config's metrics up in this CSV (keyed by the "
                                   "space's parameters) instead of training; nb201 uses its table by default")
    a("--table-acc", metavar="COLUMN", help="the table's accuracy column (nb201: cifar10_val_acc)")
    a("--table-cost", metavar="COLUMN", help="the table's cost column (nb201: macs)")
    a("--trial", help="trial kind: trained (default), own_model (the default with --model), table, dnas, or a "
                       "plug-in; see --list-strategies")
    a("--cost", help="cost metric: size_kb (default), size_bits, bitops, macs, latency_ms (onnxruntime, measured "
                     "on this machine per network structure, cached)")
    a("--latency", help="how latency_ms is found: model (the whole exported network timed, default) or table (the sum of "
                        "its parts, each timed once per machine and cached: the latency table)")
    a("--target", type=float, help="cost target of the score, in the cost metric's unit (default: 2.0 for size_kb; needed for another cost where it ranks: linear, or mnas with alpha != beta)")
    a("--max-cost", type=float, metavar="COST", help="hard budget on the cost metric (its unit): no config over it is "
                                                    "proposed where its cost is known before training; none enters the front")
    a("--seed", type=int, help="seed of the searcher, model init and data order (default: 0)")
    a("--out", metavar="DIR", help="results root (default: ./nasq_results); results go to OUT/NAME/")
    a("--name", help="experiment name (default: <space>-<date>-<time>; with --model: <model>-<date>-<time>)")
    a("--cpus-per-trial", type=float, metavar="N", help="CPUs per trial; also its torch threads (default: 1; --oneshot phase 1 takes a whole node)")
    a("--gpus-per-trial", type=float, metavar="N", help="GPUs per trial, fractions allowed (default: 0)")
    a("--max-concurrent", type=int, metavar="N", help="trials running at once (default: as resources allow)")
    a("--max-failures", type=int, metavar="N", help="retries of a crashed trial from its last checkpoint (default: 0)")
    a("--time-budget", type=float, metavar="SECONDS", help="start no new trial after this much wall time")
    a("--address", help="join a running Ray cluster (host:port, ray://..., or auto: the one started on this machine); "
                         "local: a private Ray for this run (the default); also read from RAY_ADDRESS")
    a("--storage", metavar="PATH|URI", help="where Ray Tune keeps experiment state and checkpoints: a local or "
                                          "shared path, or s3:// gs:// ... (default: --out)")
    a("--storage-db", metavar="URL", help="Optuna study of every trial, an SQLAlchemy URL "
                                         "(default: sqlite:///OUT/NAME/optuna.db); open it with optuna-dashboard")
    a("--log-format", choices=["text", "json"], help="progress output: text (default) or json, one object per line")
    a("--keep-checkpoints", type=int, metavar="N", help="checkpoints kept per trial (default: 1)")
    a("--warm-start", type=int, metavar="N", help="propose first N configs whose bits are chosen from the value "
                                                 "range (calibration, quant.auto_sqnr_db; default: 0)")
    a("--resume", metavar="RESULT_DIR", help="continue an interrupted experiment (its results folder); "
                                             "--address, --quiet, --verbose and --log-format may be given with it")
    a("--set", action="append", metavar="SECTION.KEY=V", help="set any config field, e.g. objective.alpha=-0.1")
    a("--oneshot", action="store_true", help="weight sharing: train one super-network of the space, then score "
                                             "sub-networks with its weights in seconds, then fine-tune the front "
                                             "(search.mode oneshot)")
    a("--supernet-epochs", type=int, metavar="N", help="--oneshot: epochs of super-network training (30)")
    a("--supernet-workers", type=int, metavar="N", help="--oneshot: train the super-network data-parallel on N "
                                                       "Ray Train workers (DDP; default 1: one trial)")
    a("--finetune-epochs", type=int, metavar="N", help="--oneshot: QAT epochs of each fine-tuned front model "
                                                       "(5; 0: none)")
    a("--show-space", action="store_true", help="print every parameter of the run's space, its choices and the "
                                                "layers it governs, then exit")
    a("--list-strategies", action="store_true", help="list searchers, schedulers and trial kinds (built-in and plug-ins), then exit")
    a("--verbose", action="store_true", help="show Ray's own logs and progress table")
    a("--quiet", action="store_true", help="print only the final summary")
    return p


_FLAG_FIELDS = {
    "space": "space", "data": "data.name", "data_dir": "data.dir", "label_column": "data.label_column",
    "max_train": "data.max_train", "max_val": "data.max_val", "searcher": "search.searcher", "scheduler": "search.scheduler",
    "num_samples": "search.num_samples", "max_epochs": "search.max_epochs", "seed": "search.seed",
    "cost": "objective.cost", "target": "objective.target", "max_cost": "objective.max_cost", "latency": "objective.latency", "out": "out", "name": "name",
    "cpus_per_trial": "resources.cpus_per_trial", "gpus_per_trial": "resources.gpus_per_trial",
    "max_concurrent": "search.max_concurrent", "max_failures": "search.max_failures", "address": "resources.address",
    "time_budget": "search.time_budget_s", "table": "table.path", "storage": "storage",
    "supernet_epochs": "search.supernet_epochs", "supernet_workers": "search.supernet_workers", "finetune_epochs": "search.finetune_epochs",
    "model": "model.factory", "weights": "model.weights", "float_epochs": "model.float_epochs",
    "keep_checkpoints": "search.keep_checkpoints", "warm_start": "search.warm_start", "storage_db": "storage_db", "log_format": "log_format", "table_acc": "table.acc", "table_cost": "table.cost", "trial": "trial",
}


def config_from_args(args: argparse.Namespace):
    from .config import from_dict, load_yaml, parse_kv, set_dotted

    raw = load_yaml(args.config) if args.config else {}
    for flag, dotted in _FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            set_dotted(raw, dotted, value)
    if args.objective is not None:
        if args.objective == "multi":
            set_dotted(raw, "objective.multi", True)
        else:
            set_dotted(raw, "objective.form", args.objective)
    if args.oneshot:
        set_dotted(raw, "search.mode", "oneshot")
    if args.model_arg:
        set_dotted(raw, "model.args", parse_kv(args.model_arg, "--model-arg"))
    if args.data_arg:
        set_dotted(raw, "data.args", parse_kv(args.data_arg, "--data-arg"))
    if args.searcher_arg:
        set_dotted(raw, "search.searcher_args", parse_kv(args.searcher_arg, "--searcher-arg"))
    if args.scheduler_arg:
        set_dotted(raw, "search.scheduler_args", parse_kv(args.scheduler_arg, "--scheduler-arg"))
    for k, v in parse_kv(args.set, "--set").items():
        set_dotted(raw, k, v)
    if args.verbose or args.quiet:  # a flag wins over the file's setting
        raw["verbose"], raw["quiet"] = bool(args.verbose), bool(args.quiet)
    if raw.get("verbose") is True and raw.get("quiet") is True:  # (one-shot phases run so, inside)
        raise ConfigError("quiet: true with verbose true; allowed: one of them (--verbose: Ray's logs as well, --quiet: "
                          "only the final summary)")
    cfg = from_dict(raw)
    _check_flags_apply(args, cfg)
    return cfg


def _check_flags_apply(args: argparse.Namespace, cfg) -> None:
    """Flags of one kind of run given to another would be ignored without a word: refused."""
    if cfg.search.mode != "oneshot":
        for flag in ("supernet_epochs", "supernet_workers", "finetune_epochs"):
            if getattr(args, flag) is not None:
                name = "--" + flag.replace("_", "-")
                raise ConfigError(f"search.{flag}: {name} applies to a one-shot search only; add --oneshot, or leave "
                                  f"out {name}")
        if cfg.trial in ("supernet", "subnet", "finetune"):
            raise ConfigError(f"trial: '{cfg.trial}' trials are phases of a one-shot search, run by it; allowed: "
                              "--oneshot (leave out --trial), or another kind")
    if args.float_epochs is not None and cfg.model.factory is None:
        raise ConfigError("model.float_epochs: --float-epochs sets the float training of your own model; give "
                          "--model MODULE:CALLABLE, or leave out --float-epochs")


def list_strategies() -> str:
    from .search.strategies import SEARCHERS, plugin_searchers
    from .search.schedulers import SCHEDULERS, scheduler_names
    from .trials import TRIAL_KINDS, trial_kind_names

    plugins = plugin_searchers()
    lines = ["searchers:"]
    lines += [f"  {n:<14} built-in" for n in sorted(SEARCHERS)]
    lines += [f"  {n:<14} plug-in ({ep.value})" for n, ep in sorted(plugins.items()) if n not in SEARCHERS]
    lines.append("schedulers:")
    lines += [f"  {n:<14} {'built-in' if n in SCHEDULERS else 'plug-in'}" for n in scheduler_names()]
    lines.append("trial kinds:")
    lines += [f"  {n:<14} {'built-in' if n in TRIAL_KINDS else 'plug-in'}" for n in trial_kind_names()]
    return "\n".join(lines)


_RESUME_ALLOWED = {"resume", "address", "quiet", "verbose", "log_format", "list_strategies", "show_space"}


def _resume_overrides(args: argparse.Namespace) -> dict:
    """With --resume the experiment runs as it was configured; only where and how loudly may change."""
    given = [k for k, v in vars(args).items()  # `is`, not `in`: --max-epochs 0 is given (0 == False)
             if k not in _RESUME_ALLOWED and v is not None and v is not False and v != []]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ConfigError(f"{flag}: not allowed with --resume (the experiment continues as configured); "
                          "allowed with it: --address, --quiet, --verbose, --log-format")
    out = {"quiet": args.quiet, "verbose": args.verbose}
    if args.address:
        out["address"] = args.address
    if args.log_format:
        out["log_format"] = args.log_format
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = _sigterm_as_ctrl_c()
    try:
        return _main(args)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    folder = None  # the results folder this command writes, once known
    try:
        if args.list_strategies:
            print(list_strategies())
            return 0
        if args.show_space:
            from .space.show import show_space
            from .trials import run_space

            if args.resume is not None:  # the space of the run that would continue, not the default one
                from .config import saved_config

                cfg = saved_config(args.resume, "resume", _resume_overrides(args))
            else:
                cfg = config_from_args(args)
            print(show_space(run_space(cfg)))
            return 0
        from .search.driver import resume_search, run_search
        from .results.console import counted, summary, summary_json

        if args.resume is not None:
            if not args.resume.strip():
                raise ConfigError("--resume: '' is not allowed; allowed: the results folder of an earlier run (OUT/NAME)")
            folder = Path(args.resume).expanduser()
            result = resume_search(args.resume, **_resume_overrides(args))
        else:
            cfg = config_from_args(args)
            folder = cfg.out_dir  # its name (a default one holds the time) is fixed with the config
            result = run_search(cfg)
        print(summary_json(result) if result.log_format == "json" else summary(result))
        if result.interrupted:
            print(f"interrupted: {result.finished} of {counted(result.requested, 'trial')} finished; resume with:\n"
                  f"  python -m nasq_ray.run --resume {result.out_dir}", file=sys.stderr)
            return 130
        return 1 if _all_failed(result) or _none_finished(result) else 0
    except NasqError as e:
        if args.verbose and e.__cause__ is not None:  # a plug-in's own error: its traceback, for its author
            import traceback

            traceback.print_exception(e.__cause__, file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if folder is not None and _resumable(folder):  # stopped outside Ray Tune's own stop: between one-shot
            # phases, or while the results were written; the experiment state on disk is what --resume reads
            print(f"\ninterrupted; resume with:\n  python -m nasq_ray.run --resume {folder}", file=sys.stderr)
        else:
            print("\ninterrupted before the search started; nothing to resume", file=sys.stderr)
        return 130


def _resumable(folder: Path) -> bool:
    """A results folder with an experiment Ray Tune saved (one-shot runs: a phase's, one folder down)."""
    return (folder / "experiment.yaml").is_file() and any(
        (d / "tuner.pkl").is_file() for d in (folder, *(p for p in folder.iterdir() if p.is_dir())))


def _sigterm_as_ctrl_c():
    """SIGTERM before the search starts (data loading, the float model's training) ends the command as
    Ctrl-C does: one line, exit 130 (it ended with 143 and nothing said). Once Ray runs, the driver's own
    handler (``session._sigterm_as_interrupt``) takes over and the search stops resumably. Returns the
    handler it replaced (None off the main thread, where signals cannot be handled)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum, frame):
    # KeyboardInterrupt itself, not a SIGINT: a Ray Tune run earlier in this process (a notebook, the
    # tests) leaves its own SIGINT handler behind, which would only set a flag nobody reads any more
    raise KeyboardInterrupt


def _all_failed(result) -> bool:
    """Say so (and exit 1, as a test runner would) when every trial of a finished run failed: the run gave
    no model (a data factory's labels out of range, a space whose networks all diverge)."""
    from .results.console import counted

    failed = [r for r in result.records if r.status == "failed"]
    if not failed or len(failed) < len(result.records):
        return False
    error = failed[0].error or str(failed[0].metrics.get("fail_reason") or "")  # Ray's, or the trial's own report
    reason = next((ln.strip() for ln in reversed(error.splitlines()) if ln.strip()), "no error recorded")
    if len(reason) > 200:
        reason = reason[:200].rsplit(" ", 1)[0] + " ..."
    print(f"error: every trial failed ({counted(len(failed), 'trial')}); the first one's error: {reason} "
          f"(all errors in {result.out_dir / 'trials.csv'})", file=sys.stderr)
    return True


def _none_finished(result) -> bool:
    """A run that ended with no complete trial (cut by --time-budget before any trained its epochs): exit 1."""
    from .results.console import counted

    if not result.records or any(r.status == "complete" for r in result.records):
        return False
    print(f"error: no trial finished ({counted(len(result.records), 'trial')} started, none trained all its epochs); "
          "give the search more time (--time-budget) or fewer epochs (--max-epochs)", file=sys.stderr)
    return True


if __name__ == "__main__":
    sys.exit(main())
