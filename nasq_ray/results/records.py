"""Trial records: one trial as plain data, the metric columns results show, and the one Pareto
front and best trial of a set of records (how a trial ended is :func:`nasq_ray.trials.trial_status`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..objective import ObjectiveConfig, pareto_mask, within_budget
from ..trials.base import BITS_METRIC, trial_status

if TYPE_CHECKING:
    from ..space.search_space import SearchSpace
    from ..trials.base import Prepared

METRIC_COLUMNS = ("val_acc", "val_f1", "score", "macs", "bitops", "size_bits", "size_kb", "n_weights",
                  "avg_w_bits", "train_loss")


def bits_of(metrics: dict) -> str:
    """A trial's bits per layer (``4/8 2/4 8/8``) as results show them."""
    return metrics.get(BITS_METRIC, "") or ""


@dataclass
class TrialRecord:
    """One trial as plain data (collected from Ray's results by the search driver)."""

    trial_id: str
    status: str  # complete | pruned | failed | unfinished
    config: dict
    metrics: dict
    time_s: float = 0.0
    error: str = ""
    checkpoint: str | None = None  # folder holding the trial's saved state
    node: str = ""
    test_acc: float | None = None
    test_f1: float | None = None
    extra: dict = field(default_factory=dict)
    checkpoint_obj: object = None  # ray.tune.Checkpoint (local or remote storage)

    @property
    def epochs(self) -> int:
        return int(self.metrics.get("epoch", 0) or 0)

    @property
    def bits(self) -> str:
        return bits_of(self.metrics)

    @property
    def usable(self) -> bool:
        """Finished (fully or early) with real metrics: eligible for the front."""
        return self.status != "failed" and self.epochs > 0 and "val_acc" in self.metrics


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (accuracy max, cost min) points, by cost (then accuracy, highest
    first). Points with a non-finite coordinate never enter it."""
    idx = [i for i, (a, c) in enumerate(points) if _finite(a) and _finite(c)]
    if not idx:
        return []
    mask = pareto_mask([points[i] for i in idx], ("max", "min"))
    front = [i for i, keep in zip(idx, mask) if keep]
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))


def pareto_records(records: list[TrialRecord], objective: ObjectiveConfig) -> list[TrialRecord]:
    """The non-dominated trials on (accuracy max, cost min), sorted by cost.

    Only trials trained for the full budget compete: a trial a scheduler stopped early was measured
    at lower fidelity, and its accuracy is not comparable.
    """
    pool = [r for r in records if r.usable and r.status == "complete"
            and within_budget(r.metrics.get(objective.cost, math.nan), objective)]
    front = pareto_front([(r.metrics.get(objective.acc), r.metrics.get(objective.cost)) for r in pool])
    return [pool[i] for i in front]


def best_record(records: list[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the highest score (none scoring ``-inf``: over the cost budget)."""
    pool = [r for r in records if r.usable and r.status == "complete" and r.metrics["score"] > -math.inf]
    return max(pool, key=lambda r: r.metrics["score"]) if pool else None


@dataclass
class SearchResult:
    out_dir: Path
    records: list[TrialRecord]
    front: list[TrialRecord]
    best: TrialRecord | None
    space: SearchSpace
    prepared: Prepared  # the trial kind's inputs
    wall_s: float
    objective: ObjectiveConfig
    requested: int = 0
    interrupted: bool = False
    log_format: str = "text"
    reference: list[dict] = field(default_factory=list)  # the kind's reference models (float, PTQ), beside the front

    @property
    def unfinished(self) -> int:
        """Trials the driver's stop interrupted (``--resume`` continues them)."""
        return sum(r.status == "unfinished" for r in self.records)

    @property
    def finished(self) -> int:
        return len(self.records) - self.unfinished


__all__ = ["BITS_METRIC", "METRIC_COLUMNS", "TrialRecord", "best_record", "bits_of", "pareto_front",
           "pareto_records", "trial_status", "SearchResult"]
