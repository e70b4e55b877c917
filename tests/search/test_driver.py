"""The driver's pure decisions (no Ray): whether a search that returned has work left for ``--resume``."""

from __future__ import annotations

import pytest

from nasq_ray.search.driver import was_interrupted


@pytest.mark.parametrize("statuses, requested, searcher_finished, budget_spent, expected", [
    (["complete"] * 4, 4, False, False, False),  # done
    (["complete", "unfinished"], 2, False, False, True),  # Ctrl-C during a trial
    # one-shot phase 3: a fixed list of configs, all handed out, one cut off: work left, not done
    (["complete", "unfinished"], 2, True, False, True),
    (["complete"] * 3, 8, False, False, True),  # stopped between trials
    (["complete"] * 3, 8, True, False, False),  # an exhausted grid: nothing more to propose
    (["complete", "unfinished"], 8, False, True, False),  # the time budget ended it: not resumable work
    ([], 4, False, False, True),
])
def test_a_search_is_interrupted_when_work_is_left(statuses, requested, searcher_finished, budget_spent, expected):
    assert was_interrupted(statuses, requested, searcher_finished, budget_spent) is expected
