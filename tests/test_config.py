"""Experiment config: a run without a name is named once, so every folder it writes is the same one."""

from __future__ import annotations

import itertools
import time

from nasq_ray.config import from_dict


def test_a_run_without_a_name_is_named_once(monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: f"20261202-0000{next(ticks):02d}")
    cfg = from_dict({"space": "digits_small"})
    first = cfg.run_name
    # the clock moves on between accesses; the name does not
    assert cfg.run_name == first and cfg.out_dir.name == first and cfg.experiment_path.endswith("/" + first)
    assert cfg.name is None  # the experiment (run_search) fixes it and saves it in experiment.yaml
    assert from_dict({"space": "digits_small"}).run_name != first  # another run, another name
