"""The function Ray runs for each trial: the trial kind's ``run``, started from the trial's last
checkpoint, with a ``report`` that writes Ray results and checkpoints. It names no kind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from ..trials.base import BaseTrialKind, read_checkpoint, write_checkpoint
from .schedulers import flat_config


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


def run_in_ray(config: dict, kind: BaseTrialKind, context: Any) -> None:
    """One trial inside a Ray Tune trial actor."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = read_checkpoint(d, getattr(context, "device", "cpu"))

    def report(metrics: dict, payload: dict | None) -> None:
        metrics = {**metrics, "node_id": node}
        if payload is None:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as d:
                write_checkpoint(d, payload)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        _crash_once(int(metrics.get("epoch", 0)))

    kind.run(flat_config(config), context, report, state)
