"""Trial records: the front and the best trial keep to the cost budget."""

from __future__ import annotations

from nasq_ray.objective import ObjectiveConfig, score
from nasq_ray.results.records import TrialRecord, best_record, pareto_records


def _record(tid, acc, size_kb, objective):
    metrics = {"val_acc": acc, "size_kb": size_kb, "epoch": 3, "score": score(acc, size_kb, objective)}
    return TrialRecord(tid, "complete", {}, metrics)


def test_trials_over_the_budget_enter_neither_the_front_nor_the_best():
    budget = ObjectiveConfig(max_cost=5.0)
    records = [_record("cheap", 0.80, 2.0, budget), _record("edge", 0.90, 5.0, budget),
               _record("dear", 0.99, 9.0, budget)]
    assert [r.trial_id for r in pareto_records(records, budget)] == ["cheap", "edge"]
    assert best_record(records).trial_id in ("cheap", "edge")
    assert [r.trial_id for r in pareto_records(records, ObjectiveConfig())] == ["cheap", "edge", "dear"]
    assert best_record([records[2]]) is None


def test_the_summary_of_a_run_with_no_finished_trial_says_so():
    from pathlib import Path

    from nasq_ray.results.console import summary
    from nasq_ray.results.records import SearchResult

    one = TrialRecord("a", "unfinished", {}, {})
    text = summary(SearchResult(Path("out"), [one], [], None, None, None, 15.0, ObjectiveConfig(), requested=6))
    assert "1 trial in 15 s (0 complete" in text and "(empty: no trial has finished yet)" in text


def test_json_lines_are_strict_json_a_failed_trials_minus_infinity_included():
    import json as stdlib_json

    import numpy as np

    from nasq_ray.results.console import json_line

    line = json_line({"score": float("-inf"), "acc": np.float32(0.5), "n": np.int64(3), "nested": [float("nan")],
                      "path": __import__("pathlib").Path("/x")})
    assert "Infinity" not in line and "NaN" not in line
    assert stdlib_json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == {
        "score": None, "acc": 0.5, "n": 3, "nested": [None], "path": "/x"}
