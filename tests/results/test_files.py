"""The results files of a run."""

from __future__ import annotations

import csv
import json

from nasq_ray.objective import ObjectiveConfig
from nasq_ray.results.files import write_results
from nasq_ray.results.records import TrialRecord
from nasq_ray.space import load_space


def test_a_failing_test_evaluation_costs_only_the_test_accuracy(tmp_path, capsys):
    space, objective = load_space("digits_small"), ObjectiveConfig()
    records = [TrialRecord(tid, "complete", space.sample(i), {"val_acc": acc, "score": acc, "size_kb": 1.0 + i, "epoch": 3})
               for i, (tid, acc) in enumerate([("a", 0.9), ("b", 0.8)])]

    def broken(chosen):
        raise RuntimeError("checkpoint.pt is truncated\nsecond line")

    write_results(tmp_path, records, space, objective, test_accuracy=broken)
    err = capsys.readouterr().err
    assert err.strip() == ("warning: test accuracy not measured (RuntimeError: checkpoint.pt is truncated); "
                           "trials.csv, pareto.csv and best.json are written without it")
    with open(tmp_path / "trials.csv", newline="") as f:
        assert [r["trial_id"] for r in csv.DictReader(f)] == ["a", "b"]
    assert json.loads((tmp_path / "best.json").read_text())["trial_id"] == "a"
