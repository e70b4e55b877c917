"""Every registered strategy passes the same conformance checks; Optuna-specific behaviour."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from nasq_ray.objective import ObjectiveConfig
from nasq_ray.space import SearchSpace, load_space
from nasq_ray.strategies import SEARCHERS, make_searcher
from nasq_ray.testing import check_strategy, synthetic_result
from nasq_ray.errors import ConfigError, UnknownNameError

FLAT = {
    "name": "flat", "input": "image",
    "stages": [{"channels": [4, 8, 16], "ops": "conv3x3"}],
    "quant": {"w_bits": [2, 4, 8], "a_bits": [4, 8]},
    "train": {"lr": {"low": 0.001, "high": 0.1, "log": True}},
}


def _flat_space():
    return SearchSpace(FLAT, (1, 8, 8), 10, source="flat")


@pytest.mark.parametrize("name", sorted(SEARCHERS))
@pytest.mark.parametrize("multi", [False, True])
def test_conformance_on_default_space(name, multi):
    check_strategy(SEARCHERS[name], load_space("digits_small"), ObjectiveConfig(multi=multi))


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_conformance_on_flat_space(name):
    space = _flat_space()
    assert space.is_flat
    check_strategy(SEARCHERS[name], space, ObjectiveConfig(multi=name == "nsga2"))


def test_optuna_tells_pruned_trials_as_pruned_not_complete():
    space = load_space("digits_small")
    obj = ObjectiveConfig(multi=True)
    s = make_searcher("nsga2", space, obj, seed=0)
    cfgs = {f"t{k}": s.suggest(f"t{k}") for k in range(3)}
    s.on_trial_complete("t0", cfgs["t0"], synthetic_result(cfgs["t0"], obj, "complete"))
    s.on_trial_complete("t1", cfgs["t1"], synthetic_result(cfgs["t1"], obj, "pruned", epoch=2))
    s.on_trial_complete("t2", cfgs["t2"], synthetic_result(cfgs["t2"], obj, "failed"))
    states = [t.state for t in s.study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    done = s.study.get_trials(deepcopy=False)[0]
    r = synthetic_result(cfgs["t0"], obj)
    assert done.values == [r["val_acc"], r["size_kb"]]


def test_single_objective_tpe_gets_intermediate_values():
    space = load_space("digits_small")
    obj = ObjectiveConfig()
    s = make_searcher("tpe", space, obj, seed=0)
    cfg = s.suggest("a")
    s.on_trial_result("a", {"score": 0.5, "epoch": 1})
    s.on_trial_result("a", {"score": 0.7, "epoch": 2})
    s.on_trial_complete("a", cfg, {"score": 0.7, "epoch": 2, "status": "pruned"})
    t = s.study.get_trials(deepcopy=False)[0]
    assert t.state == TrialState.PRUNED and t.intermediate_values == {1: 0.5, 2: 0.7}


def test_optuna_skips_invalid_configs():
    raw = {**FLAT, "stages": [{"channels": 4, "ops": "conv3x3", "stride": [1, 2]}] * 6}
    space = SearchSpace(raw, (1, 8, 8), 10, source="strides")
    s = make_searcher("tpe", space, ObjectiveConfig(), seed=0)
    for k in range(15):
        cfg = s.suggest(str(k))
        assert space.violation(cfg) == ""
    assert any(t.state == TrialState.FAIL for t in s.study.get_trials(deepcopy=False))


def test_unknown_searcher_and_bad_arguments():
    space = _flat_space()
    with pytest.raises(UnknownNameError, match="allowed: .*random.*tpe"):
        make_searcher("tpee", space, ObjectiveConfig())
    with pytest.raises(ConfigError, match="searcher_args"):
        make_searcher("random", space, ObjectiveConfig(), bogus=1)
    with pytest.raises(ConfigError, match="searcher_args"):
        make_searcher("tpe", space, ObjectiveConfig(), n_startup_trialz=3)
