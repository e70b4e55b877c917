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


def test_after_a_resume_the_line_counts_the_trials_that_had_ended(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    cb = ProgressCallback(4, ObjectiveConfig(), max_epochs=3, every_s=0.0)
    done = [_trial("a", "TERMINATED", epoch=3, score=0.86, val_acc=0.9, size_kb=2.0),
            _trial("b", "TERMINATED", epoch=3, score=0.5, val_acc=0.6, size_kb=1.0)]
    c = _trial("c", "PENDING")
    cb.on_trial_start(0, [*done, c], c)
    line = capsys.readouterr().out
    # it read "best score -  front 0" although two trials had finished before the interruption
    assert "[  2/4 done | 1 running |" in line and "best score 0.8600" in line and "front 2" in line, line
    assert cb.state([*done, c])["eta_s"] is None  # no trial has ended in this session: no pace to go by


def test_the_front_it_counts_leaves_out_trials_over_the_cost_budget():
    cb = ProgressCallback(3, ObjectiveConfig(max_cost=1.5), max_epochs=3)
    trials = [_trial("a", "TERMINATED", epoch=3, score=0.9, val_acc=0.9, size_kb=2.0),  # over --max-cost
              _trial("b", "TERMINATED", epoch=3, score=0.5, val_acc=0.6, size_kb=1.0),
              _trial("c", "TERMINATED", epoch=3, score=0.4, val_acc=0.5, size_kb=0.5)]
    assert cb.state(trials)["front_size"] == 2  # the results' front: b and c (it said 3)
    assert ProgressCallback(3, ObjectiveConfig(), max_epochs=3).state(trials)["front_size"] == 3
