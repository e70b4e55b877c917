"""Results of a search: ``trials.csv``, ``pareto.csv``, ``best.json``, and the test accuracy of
the final Pareto models (the only place the test split is used)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import Split
from .objective import ObjectiveConfig, pareto_mask
from .space import SearchSpace

METRIC_COLUMNS = ("val_acc", "val_f1", "score", "macs", "bitops", "size_bits", "size_kb", "n_weights",
                  "avg_w_bits", "train_loss")


@dataclass
class TrialRecord:
    """One trial as plain data (collected from Ray's results by ``tune.py``)."""

    trial_id: str
    status: str  # complete | pruned | failed
    config: dict
    metrics: dict
    time_s: float = 0.0
    error: str = ""
    checkpoint: str | None = None  # folder holding state.pt
    node: str = ""
    test_acc: float | None = None
    test_f1: float | None = None
    extra: dict = field(default_factory=dict)
    checkpoint_obj: object = None  # ray.tune.Checkpoint (local or remote storage)

    @property
    def epochs(self) -> int:
        return int(self.metrics.get("epoch", 0) or 0)

    @property
    def usable(self) -> bool:
        """Finished (fully or early) with real metrics: eligible for the front."""
        return self.status != "failed" and self.epochs > 0 and "val_acc" in self.metrics


def pareto_records(records: list[TrialRecord], objective: ObjectiveConfig) -> list[TrialRecord]:
    """The non-dominated trials on (accuracy max, cost min), sorted by cost.

    Only trials trained for the full budget compete: a trial a scheduler stopped early was measured
    at lower fidelity, and its accuracy is not comparable.
    """
    pool = [r for r in records if r.usable and r.status == "complete"]
    if not pool:
        return []
    mask = pareto_mask([(r.metrics[objective.acc], r.metrics[objective.cost]) for r in pool], ("max", "min"))
    front = [r for r, keep in zip(pool, mask) if keep]
    return sorted(front, key=lambda r: (r.metrics[objective.cost], -r.metrics[objective.acc]))


def best_record(records: list[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the highest score."""
    pool = [r for r in records if r.usable and r.status == "complete"]
    return max(pool, key=lambda r: r.metrics["score"]) if pool else None


def evaluate_on_test(records: list[TrialRecord], space: SearchSpace, test: Split, seed: int) -> None:
    """Fill ``test_acc`` / ``test_f1`` of ``records`` from their last checkpoints."""
    import torch

    from .trial import evaluate_state

    for r in records:
        if r.test_acc is not None or not (r.checkpoint or r.checkpoint_obj):
            continue
        state = load_checkpoint_state(r)
        if state is None:
            continue
        r.test_acc, r.test_f1 = evaluate_state(space, r.config, state["model"], test, seed)


def load_checkpoint_state(r: TrialRecord) -> dict | None:
    """The saved training state of a trial's last checkpoint (downloaded first if it is remote)."""
    import torch

    if r.checkpoint_obj is not None:
        with r.checkpoint_obj.as_directory() as d:
            path = Path(d) / "state.pt"
            return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
    path = Path(r.checkpoint) / "state.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 6)) if abs(v) < 1e15 else repr(v)
    return "" if v is None else v


def _row(r: TrialRecord, param_names: list[str], metric_columns: tuple[str, ...]) -> dict:
    row = {"trial_id": r.trial_id, "status": r.status, "epochs": r.epochs}
    row.update({k: _fmt(r.metrics.get(k)) for k in metric_columns})
    row.update({"test_acc": _fmt(r.test_acc), "test_f1": _fmt(r.test_f1), "bits": r.metrics.get("w_bits_str", ""),
                "time_s": _fmt(r.time_s), "node": r.node, "error": r.error or r.metrics.get("fail_reason", "")})
    row.update({k: _fmt(r.config.get(k)) for k in param_names})
    row.update({k: _fmt(v) for k, v in r.extra.items()})
    return row


def write_csv(path: Path, records: list[TrialRecord], space: SearchSpace, objective: ObjectiveConfig | None = None) -> None:
    names = space.names
    metrics = METRIC_COLUMNS
    if objective is not None and objective.cost not in metrics:
        metrics = (*metrics, objective.cost)
    extras = {k: None for r in records for k in r.extra}
    fields = list(_row(TrialRecord("", "", {}, {}, extra=extras), names, metrics))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(_row(r, names, metrics) for r in records)


def write_results(out_dir: Path, records: list[TrialRecord], space: SearchSpace, objective: ObjectiveConfig,
                  test: Split | None, seed: int = 0, test_metric: str | None = None
                  ) -> tuple[list[TrialRecord], TrialRecord | None]:
    """Write trials.csv, pareto.csv and best.json; give the front (and best) a test accuracy:
    evaluated on ``test`` from their checkpoints, or read from the metric ``test_metric`` (tables)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    front = pareto_records(records, objective)
    best = best_record(records)
    chosen = front + ([best] if best else [])
    if test_metric is not None:
        for r in chosen:
            r.test_acc = r.metrics.get(test_metric)
    elif test is not None and len(test):
        evaluate_on_test(chosen, space, test, seed)
    records = sorted(records, key=lambda r: r.trial_id)
    write_csv(out_dir / "trials.csv", records, space, objective)
    write_csv(out_dir / "pareto.csv", front, space, objective)
    if best is not None:
        payload = {
            "trial_id": best.trial_id, "status": best.status, "epochs": best.epochs,
            "metrics": {k: best.metrics.get(k) for k in (*METRIC_COLUMNS, objective.cost) if k in best.metrics},
            "test_acc": best.test_acc, "test_f1": best.test_f1, "bits": best.metrics.get("w_bits_str", ""),
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


def front_table(front: list[TrialRecord], objective: ObjectiveConfig) -> str:
    """The Pareto front as a text table (cost columns that the trials report)."""
    extra = [c for c in ("size_kb", "bitops", "avg_w_bits") if c != objective.cost and front and c in front[0].metrics]
    cols = [objective.cost, *extra]
    head = f"{'trial':<10} {objective.acc:>9} {'test_acc':>9} " + " ".join(f"{c:>12}" for c in cols)
    head += f" {'epochs':>6}" + ("  bits (W/A per layer)" if front and "w_bits_str" in front[0].metrics else "")
    lines = [head, "-" * len(head)]
    for r in front:
        m = r.metrics
        test = f"{r.test_acc:.4f}" if r.test_acc is not None else "-"
        vals = " ".join(f"{_num(m.get(c)):>12}" for c in cols)
        lines.append(f"{r.trial_id:<10} {m[objective.acc]:>9.4f} {test:>9} {vals} {r.epochs:>6}  {m.get('w_bits_str', '')}".rstrip())
    return "\n".join(lines)


def _num(v) -> str:
    """A metric for a table cell: integers with thousands separators, others to 4 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return f"{int(v):,}"
