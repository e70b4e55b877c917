"""Trial kinds by name: ``trained`` (build, QAT-train, measure, score), ``table`` (metrics looked up in a
table), ``dnas`` (a differentiable super-network inside one trial), ``own_model`` (a user's model,
pruned, quantized and distilled); plug-ins from the entry-point
group ``nasq_ray.trials`` (a :class:`BaseTrialKind` subclass or a factory returning an instance).

A run's kind is ``trial: NAME`` in the experiment (``--trial``); without it, a run with a model
(``--model``) runs ``own_model`` trials, a space or run with a table looks its metrics up, the
``dnas`` searcher runs DNAS trials, and everything else trains.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError, unknown_name
from ..plugins import call_plugin, installed, load_plugin
from .base import BaseTrialKind, Prepared, Reporter, trial_status

ENTRY_POINT_GROUP = "nasq_ray.trials"
# name -> "module:Class" (imported on first use: the kinds import torch) or the class itself
TRIAL_KINDS: dict[str, str | type[BaseTrialKind]] = {
    "trained": "nasq_ray.trials.trained:TrainedTrial",
    "table": "nasq_ray.trials.table:TableTrial",
    "dnas": "nasq_ray.trials.dnas:DNASTrial",
    "own_model": "nasq_ray.trials.own_model:OwnModelTrial",
    "supernet": "nasq_ray.trials.supernet:SupernetTrial",
    "subnet": "nasq_ray.trials.supernet:SubnetTrial",
    "finetune": "nasq_ray.trials.supernet:FinetuneTrial",
}


def register_trial_kind(cls: type[BaseTrialKind]) -> type[BaseTrialKind]:
    """Register a kind under ``cls.name`` (usable as a class decorator). Twice is an error."""
    if not cls.name or cls.name in TRIAL_KINDS:
        raise ValueError(f"trial kind '{cls.name}': a kind needs a name not yet registered")
    TRIAL_KINDS[cls.name] = cls
    return cls


def _load(ref: str | type) -> type:
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)
    return ref


def trial_kind_names() -> list[str]:
    return sorted(set(TRIAL_KINDS) | set(installed(ENTRY_POINT_GROUP)))


def get_trial_kind(name: str) -> BaseTrialKind:
    """An instance of the kind ``name`` (built-in or plug-in)."""
    if name in TRIAL_KINDS:
        return _load(TRIAL_KINDS[name])()
    eps = installed(ENTRY_POINT_GROUP)
    if name not in eps:
        raise unknown_name("trial", name, trial_kind_names())
    made = load_plugin(eps[name], "trial")
    made = call_plugin(made, "trial", f"trial kind '{name}'") if callable(made) else made
    if not isinstance(made, BaseTrialKind):
        raise ConfigError(f"trial '{name}': the plug-in gave {type(made).__name__}; expected a "
                          "nasq_ray.trials.BaseTrialKind")
    if made.name != name:  # records, checkpoints and --resume name a trial's kind by its entry point
        raise ConfigError(f"trial '{name}': the plug-in's kind {type(made).__name__} is named {made.name!r}; "
                          f"allowed: its entry point's name, '{name}' (set name = '{name}' on the class)")
    missing = [m for m in ("prepare", "run") if getattr(type(made), m) is getattr(BaseTrialKind, m)]
    if missing:
        raise ConfigError(f"trial '{name}': the plug-in's kind {type(made).__name__} does not define "
                          f"{' and '.join(missing)}; a trial kind implements prepare(cfg, raw_space, space_path, "
                          "objective) and run(config, context, report, state)")
    return made


def _hook(name: str, method, *args):
    """A kind's hook called: a plug-in's error (but a nasq-ray one) is one line naming the kind."""
    return method(*args) if name in TRIAL_KINDS else call_plugin(method, "trial", f"trial kind '{name}'", *args)


NETWORK_KINDS = ("trained", "dnas", "own_model", "supernet", "subnet", "finetune")  # the built-ins that train


def prepare(cfg, objective=None) -> tuple[BaseTrialKind, Prepared]:
    """The run's trial kind and its validated inputs (before Ray starts). ``objective``: the run's
    (default ``cfg.objective``; the search driver passes the one its searcher implies)."""
    from ..space.files import read_space_yaml, resolve_space_path

    path = resolve_space_path(cfg.space_ref)
    raw = read_space_yaml(path)
    name = kind_name_for(cfg, raw)
    table_fields = [f for f in ("acc", "cost", "test") if getattr(cfg.table, f) is not None]
    if table_fields and name in NETWORK_KINDS:  # it would be ignored: these kinds train networks
        raise ConfigError(f"table.{table_fields[0]}: names a column of a table, and this run has none (trial kind "
                          f"'{name}'); give --table, or leave out table.{table_fields[0]}")
    kind = get_trial_kind(name)
    prepared = _hook(name, kind.prepare, cfg, raw, path, objective if objective is not None else cfg.objective)
    _hook(name, kind.check, cfg, prepared)
    return kind, prepared


def run_space(cfg):
    """The search space a run would search (``--show-space``), without preparing its trials."""
    from ..space.files import read_space_yaml, resolve_space_path

    path = resolve_space_path(cfg.space_ref)
    raw = read_space_yaml(path)
    name = kind_name_for(cfg, raw)
    if name == "trained" and cfg.search.mode == "oneshot":
        name = "subnet"  # what phase 2 searches: the training hyperparameters held at phase 1's
    return _hook(name, get_trial_kind(name).space, cfg, raw, path)


def kind_name_for(cfg, raw_space: dict) -> str:
    """The kind a run uses: the one it names, else by what it holds (a table; the dnas searcher)."""
    if cfg.trial:
        return cfg.trial
    if cfg.model.factory is not None:
        return "own_model"
    table = raw_space.get("table")
    if cfg.table.path or table is not None:  # a table section that is not a mapping is refused by the space
        return "table"
    return "dnas" if cfg.search.searcher == "dnas" else "trained"


__all__ = ["BaseTrialKind", "ENTRY_POINT_GROUP", "Prepared", "Reporter", "TRIAL_KINDS", "get_trial_kind",
           "kind_name_for", "prepare", "register_trial_kind", "run_space", "trial_kind_names", "trial_status"]
