"""The progress line counts the trials that really run, also while they train."""

from __future__ import annotations

from types import SimpleNamespace

from nasq_ray.objective import ObjectiveConfig
from nasq_ray.search.callbacks import ProgressCallback


def _trial(tid, status, **last):
    return SimpleNamespace(trial_id=tid, status=status, last_result=last)


def test_progress_counts_both_trials_that_train_at_once(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    cb = ProgressCallback(4, ObjectiveConfig(), max_epochs=3, every_s=0.0)
    a, b = _trial("a", "RUNNING", epoch=1, score=0.5), _trial("b", "RUNNING", epoch=1, score=0.4)
    cb.on_trial_result(0, [a, b], a, a.last_result)
    assert "| 2 running |" in capsys.readouterr().out
    # a ends; the trial that takes over its actor starts: two run again
    a.status, a.last_result = "TERMINATED", {"epoch": 3, "score": 0.9, "val_acc": 0.9, "size_kb": 1.0}
    c = _trial("c", "PENDING")  # Ray marks a starting trial RUNNING after on_trial_start
    cb.on_trial_complete(0, [a, b, c], a)
    cb.on_trial_start(0, [a, b, c], c)
    lines = capsys.readouterr().out.strip().splitlines()
    assert "[  1/4 done | 2 running |" in lines[-1], lines
