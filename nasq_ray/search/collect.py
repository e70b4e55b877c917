"""Ray Tune's results as nasq-ray's records: one :class:`~nasq_ray.results.records.TrialRecord`
per trial, its config shown the way its trial kind shows it."""

from __future__ import annotations

from pathlib import Path

from ..results.records import TrialRecord
from ..trials import BaseTrialKind, trial_status
from .schedulers import flat_config


class TrialFields:
    """A trial's config as results show it (the kind's :meth:`~BaseTrialKind.record`), its extra
    columns and how it ended; picklable, for the Optuna store callback."""

    def __init__(self, kind: BaseTrialKind, max_epochs: int):
        self.kind, self.max_epochs = kind, max_epochs

    def __call__(self, config: dict, metrics: dict, error: bool) -> tuple[dict, dict, str]:
        shown, extra = self.kind.record(flat_config(config), metrics)
        return shown, extra, trial_status(metrics, error, self.max_epochs)


def collect(grid, fields: TrialFields, statuses: dict[str, str] | None = None) -> list[TrialRecord]:
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
        config, extra, status = fields(dict(r.config or {}), m, r.error is not None)
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
