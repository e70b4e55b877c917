"""The results folder's files: ``trials.csv``, ``pareto.csv`` and ``best.json``, and the test accuracy
of the final Pareto models (the only place the test split is used).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..objective import ObjectiveConfig
from ..space.search_space import SearchSpace
from .records import METRIC_COLUMNS, TrialRecord, best_record, pareto_records

# trials.csv's columns besides the space's parameters and the kind's extra columns
RECORD_COLUMNS = ("trial_id", "status", "epochs", *METRIC_COLUMNS, "test_acc", "test_f1", "bits", "time_s", "node",
                  "error")


def check_param_names(space: SearchSpace) -> None:
    """A parameter named like one of trials.csv's own columns would overwrite it in every row."""
    clash = next((n for n in space.names if n in RECORD_COLUMNS), None)
    if clash is not None:
        raise ConfigError(f"{space.source}: params.{clash}: '{clash}' is a column of trials.csv; allowed: a parameter "
                          f"name other than {', '.join(RECORD_COLUMNS)}")


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 6)) if abs(v) < 1e15 else repr(v)
    return "" if v is None else v


def record_row(r: TrialRecord, param_names, metric_columns: tuple[str, ...] = METRIC_COLUMNS, fmt=_fmt) -> dict:
    """A record as its trials.csv row (values through ``fmt``; the report takes them as they are)."""
    row = {"trial_id": r.trial_id, "status": r.status, "epochs": r.epochs}
    row.update({k: fmt(r.metrics.get(k)) for k in metric_columns})
    row.update({"test_acc": fmt(r.test_acc), "test_f1": fmt(r.test_f1), "bits": r.bits,
                "time_s": fmt(r.time_s), "node": r.node, "error": r.error or r.metrics.get("fail_reason", "")})
    row.update({k: fmt(r.config.get(k)) for k in param_names})
    row.update({k: fmt(v) for k, v in r.extra.items()})
    return row


def write_csv(path: Path, records: list[TrialRecord], space: SearchSpace, objective: ObjectiveConfig | None = None) -> None:
    names = space.names
    metrics = METRIC_COLUMNS
    if objective is not None and objective.cost not in metrics:
        metrics = (*metrics, objective.cost)
    extras = {k: None for r in records for k in r.extra}
    fields = list(record_row(TrialRecord("", "", {}, {}, extra=extras), names, metrics))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(record_row(r, names, metrics) for r in records)


def write_results(out_dir: Path, records: list[TrialRecord], space: SearchSpace, objective: ObjectiveConfig,
                  test_accuracy: Callable[[list[TrialRecord]], None] | None = None
                  ) -> tuple[list[TrialRecord], TrialRecord | None]:
    """Write trials.csv, pareto.csv and best.json. ``test_accuracy`` (the trial kind's) first gives
    the front and the best trial their test accuracy; when it fails (a corrupt checkpoint, a user
    model that fails on the test split) the files are written without it and a warning says why."""
    out_dir.mkdir(parents=True, exist_ok=True)
    front = pareto_records(records, objective)
    best = best_record(records)
    if test_accuracy is not None:
        try:
            test_accuracy(front + ([best] if best is not None and best not in front else []))
        except Exception as e:  # noqa: BLE001 - the search's results must never be lost to a test evaluation
            print(f"warning: test accuracy not measured ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                  "; trials.csv, pareto.csv and best.json are written without it", file=sys.stderr)
    records = sorted(records, key=lambda r: r.trial_id)
    write_csv(out_dir / "trials.csv", records, space, objective)
    write_csv(out_dir / "pareto.csv", front, space, objective)
    if best is not None:
        payload = {
            "trial_id": best.trial_id, "status": best.status, "epochs": best.epochs,
            "metrics": {k: best.metrics.get(k) for k in (*METRIC_COLUMNS, objective.cost) if k in best.metrics},
            "test_acc": best.test_acc, "test_f1": best.test_f1, "bits": best.bits,
            "checkpoint": best.checkpoint, "config": best.config,
        }
        (out_dir / "best.json").write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return front, best


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


REFERENCE_FILE = "reference.csv"  # the reference models a trial kind reports beside the front (float, PTQ)
REFERENCE_COLUMNS = ("name", "val_acc", "val_f1", "test_acc", "macs", "bitops", "size_bits", "size_kb", "n_weights",
                     "avg_w_bits", "bits")


def write_reference(out_dir: Path, rows: list[dict]) -> None:
    """reference.csv: one row per reference model (none written when the kind gives none)."""
    if not rows:
        return
    with open(out_dir / REFERENCE_FILE, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(REFERENCE_COLUMNS), extrasaction="ignore", restval="")
        w.writeheader()
        w.writerows({k: _fmt(v) for k, v in row.items()} for row in rows)


def read_trials_table(path: Path, field: str) -> list[dict]:
    """The rows of a run's trials.csv or pareto.csv, as written (strings); a file that is missing,
    or lacks the ``trial_id`` and ``status`` columns every such file has, raises naming it."""
    if not path.is_file():
        raise ConfigError(f"{field}: '{path}' does not exist (it is written when a run ends); allowed: the results "
                          "folder of a run that has ended")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("trial_id", "status") if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{field}: '{path}' is not a nasq-ray trials table (no {', '.join(missing)} column); "
                              "allowed: the file as a run wrote it")
        return list(reader)


def read_reference(folder: Path) -> list[dict]:
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        return []
    with open(path) as f:
        return [{k: (float(v) if k != "name" and k != "bits" and v not in ("", None) else (v or None))
                 for k, v in row.items()} for row in csv.DictReader(f)]


def typed_config(space, row: dict) -> dict:
    """A trial's config from a CSV row, each value in its parameter's type."""
    from ..space.domains import Choice, Float, Int, Ordinal

    config = {}
    for name in space.names:
        text = row.get(name, "")
        if text in ("", None):
            continue
        dom = space.param(name).domain
        if isinstance(dom, (Choice, Ordinal)):
            config[name] = next((v for v in dom.values if str(v) == text), text)
        elif isinstance(dom, Int):
            config[name] = int(float(text))
        elif isinstance(dom, Float):
            config[name] = float(text)
    return config
