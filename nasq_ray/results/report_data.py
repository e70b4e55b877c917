"""What a results folder says about a search (:func:`load_run`): its trials, their curves and
status, hypervolume over trials and parameter importances.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from ..config import load_yaml, saved_config
from ..errors import ConfigError, NasqError
from ..objective import hypervolume
from ..trials.base import trial_status
from .files import RECORD_COLUMNS, read_reference, read_trials_table, record_row
from .records import TrialRecord, bits_of, pareto_front


NOT_PARAMS = set(RECORD_COLUMNS)


@dataclass
class Run:
    """What a results folder says about a search."""

    folder: Path
    name: str
    acc: str = "val_acc"
    cost: str = "size_kb"
    requested: int = 0
    max_epochs: int = 0
    trials: list[dict] = field(default_factory=list)  # one dict per trial: status, metrics, params
    curves: dict[str, list[dict]] = field(default_factory=dict)  # trial id -> reported results
    state: str = "finished"  # finished | interrupted | running
    reference: list[dict] = field(default_factory=list)  # reference.csv: float / PTQ models beside the front
    sensitivity: dict | None = None  # sensitivity.json: per-layer Hessian sensitivities (own-model runs)

    @cached_property  # trials are final once load_run returns
    def complete(self) -> list[dict]:
        return [t for t in self.trials if t["status"] == "complete" and is_finite_number(t.get(self.acc))
                and is_finite_number(t.get(self.cost))]

    @cached_property
    def front(self) -> list[dict]:
        pool = self.complete
        return [pool[i] for i in pareto_front([(t[self.acc], t[self.cost]) for t in pool])]


def is_finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _value(text: str | None):
    if text is None or text == "":  # None: a row cut short (a crash while it was written)
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _experiment_folder(folder: Path) -> Path:
    """Where Ray Tune keeps the run's trial folders (its storage; the results folder by default)."""
    try:
        return saved_config(folder, "report").local_experiment_dir or folder
    except NasqError:
        return folder


def load_run(folder: str | Path, records: list[TrialRecord] | None = None) -> Run:
    """What a results folder says about a search. ``records`` (a search that just ended hands them
    over) stand for trials.csv."""
    folder = Path(folder).expanduser().resolve()
    saved_file = folder / "experiment.yaml"
    if not folder.exists():
        raise ConfigError(f"report: '{folder}' does not exist; give the results folder of a run (OUT/NAME)")
    if not folder.is_dir() or not (saved_file.is_file() or (folder / "trials.csv").is_file()):
        raise ConfigError(f"report: '{folder}' holds no nasq-ray results (no experiment.yaml or trials.csv); "
                          "give the results folder of a run (OUT/NAME)")
    saved = load_yaml(saved_file, "report") if saved_file.is_file() else {}
    saved = saved if isinstance(saved, dict) else {}
    objective = saved.get("objective") or {}
    search = saved.get("search") or {}
    run = Run(folder, folder.name, acc=objective.get("acc", "val_acc"), cost=objective.get("cost", "size_kb"),
              requested=int(search.get("num_samples", 0) or 0), max_epochs=int(search.get("max_epochs", 0) or 0))
    by_id: dict[str, dict] = {}
    exp = _experiment_folder(folder)
    for result in sorted(exp.glob("trial_*/result.json")):
        lines = []
        for line in result.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                break  # a line being written right now
        if not lines:
            continue
        tid = result.parent.name.replace("trial_", "")
        run.curves[tid] = lines
        last = lines[-1]
        params = {k: v for k, v in (last.get("config") or {}).items() if not isinstance(v, dict)}
        # no trials.csv row yet: a trial short of the budget may still be running
        status = trial_status(last, False, run.max_epochs or math.inf, ended=False)
        by_id[tid] = {"trial_id": tid, "status": status, "epochs": last.get("epoch"), "bits": bits_of(last),
                      "end_time": last.get("timestamp"),
                      **{k: last[k] for k in (run.acc, run.cost, "val_acc", "score", "size_kb", "bitops", "avg_w_bits")
                         if k in last}, "params": params}
    table = folder / "trials.csv"
    rows = [record_row(r, list(r.config), fmt=lambda v: v) for r in records] if records is not None else None
    if rows is None and table.is_file():
        rows = [{k: v if k == "trial_id" else _value(v) for k, v in row.items()}  # an id may be all digits
                for row in read_trials_table(table, "report")]
    if rows is not None:
        for row in rows:
            tid = row["trial_id"]
            t = by_id.setdefault(tid, {"trial_id": tid, "params": {}})
            end_time = t.get("end_time")
            t.update({k: v for k, v in row.items() if k in NOT_PARAMS})
            t["params"] = {k: v for k, v in row.items() if k not in NOT_PARAMS and v not in ("", None)}
            t["trial_id"], t["end_time"] = tid, end_time
        run.state = "interrupted" if any(t["status"] == "unfinished" for t in by_id.values()) or (
            run.requested and len(by_id) < run.requested) else "finished"
    else:
        run.state = "running"
    run.trials = sorted(by_id.values(), key=lambda t: (t.get("end_time") or 0, t["trial_id"]))
    run.reference = read_reference(folder)
    sens = folder / "sensitivity.json"
    if sens.is_file():
        try:
            run.sensitivity = json.loads(sens.read_text())
        except ValueError:
            run.sensitivity = None
    return run


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (accuracy max, cost min) up to ``ref`` (acc, cost)."""
    return hypervolume(points, ref, ("max", "min")) if points else 0.0


def hv_over_trials(run: Run) -> list[tuple[int, float]]:
    done = run.complete
    if not done:
        return []
    ref = (0.0, max(t[run.cost] for t in done) * 1.1)
    out, pts = [], []
    for i, t in enumerate(done, 1):
        pts.append((t[run.acc], t[run.cost]))
        out.append((i, hypervolume_2d(pts, ref)))
    return out


def importances(run: Run) -> dict[str, float]:
    """fANOVA importances of the parameters for the score, from the run's Optuna study."""
    db = run.folder / "optuna.db"
    if not db.is_file() or len(run.complete) < 3:
        return {}
    import optuna

    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{db}")
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0), target=target))
    except Exception:  # noqa: BLE001 - too few trials, one value everywhere...: no importances
        return {}
