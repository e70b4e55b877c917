"""Warm start: configs whose bits calibration chooses, proposed before the searcher's own."""

from __future__ import annotations

import numpy as np
import pytest

from nasq_ray.data import load_dataset
from nasq_ray.errors import ConfigError
from nasq_ray.objective import ObjectiveConfig
from nasq_ray.space import SearchSpace
from nasq_ray.space import load_space, read_space_yaml, resolve_space_path
from nasq_ray.search.strategies import BaseStrategy, make_searcher
from nasq_ray.trials.trained import calibrate
from nasq_ray.search.searchers import StrategySearcher, WarmStartSearcher
from nasq_ray.trials.trained import auto_bits_config, warm_start_configs

DATA = load_dataset("digits", max_train=200, seed=0)


def _space(**quant) -> SearchSpace:
    raw = read_space_yaml(resolve_space_path("digits_small"))
    raw["quant"].update(quant)
    return SearchSpace(raw, DATA.input_shape, DATA.num_classes)


def test_warm_start_bits_are_what_calibration_chooses():
    space = _space()
    cfg = space.sample(3)
    warm = auto_bits_config(space, cfg, DATA.train, seed=0)
    auto = _space(policy="auto")
    chosen = calibrate(auto.decode({k: v for k, v in cfg.items() if auto.param(k) is not None}),
                       DATA.train, 0)
    assert {k: v for k, v in warm.items() if space.param_kind(k) != "bits"} == \
        {k: v for k, v in cfg.items() if space.param_kind(k) != "bits"}  # the architecture is kept
    for layer, bits in chosen.quant.layers.items():
        assert (warm[f"{layer}.w_bits"], warm[f"{layer}.a_bits"]) == (bits.w_bits, bits.a_bits)
    assert warm_start_configs(space, 2, DATA.train, seed=1) == warm_start_configs(space, 2, DATA.train, seed=1)


def test_block_and_uniform_policies_take_the_widest_layer():
    for policy in ("block", "uniform"):
        space = _space(policy=policy)
        cfg = warm_start_configs(space, 1, DATA.train, seed=0)[0]
        spec = space.decode(cfg)
        layer_space = _space()
        per_layer = auto_bits_config(layer_space, layer_space.complete(
            {k: v for k, v in cfg.items() if space.param_kind(k) != "bits"}, 0), DATA.train, seed=0)
        for layer, bits in spec.quant.layers.items():
            assert bits.w_bits >= per_layer[f"{layer}.w_bits"] and bits.a_bits >= per_layer[f"{layer}.a_bits"]


def test_warm_start_refuses_an_auto_space():
    with pytest.raises(ConfigError, match="search.warm_start: space policy 'auto'"):
        warm_start_configs(_space(policy="auto"), 1, DATA.train)


class _Recorder(BaseStrategy):
    def __init__(self, space, objective, seed=0):
        super().__init__(space, objective, seed)
        self.told: list[tuple[str, dict, str]] = []

    def suggest(self, trial_id):
        return self.space.sample(len(self.told) + 7)

    def on_trial_complete(self, trial_id, config, result):
        self.told.append((trial_id, config, result["status"]))


def test_the_searcher_proposes_the_points_first_and_learns_them(tmp_path):
    space = load_space("digits_small")
    obj = ObjectiveConfig()
    points = [space.sample(100), space.sample(101)]
    searcher = WarmStartSearcher(StrategySearcher(_Recorder(space, obj), max_epochs=3), points, max_epochs=3)
    assert searcher.suggest("a") == points[0]
    searcher.save(str(tmp_path / "s.pkl"))
    again = WarmStartSearcher(StrategySearcher(_Recorder(space, obj), 3), [], 3)
    again.restore(str(tmp_path / "s.pkl"))
    for s in (searcher, again):
        assert s.suggest("b") == points[1]
        third = s.suggest("c")
        assert third not in points and space.validate(third) == third
    searcher.on_trial_complete("a", {"score": 0.9, "val_acc": 0.9, "size_kb": 1.0, "epoch": 3})
    searcher.on_trial_complete("b", {"score": 0.5, "epoch": 1})
    searcher.on_trial_complete("c", {"score": 0.7, "epoch": 3})
    assert searcher.inner.strategy.told == [("a", points[0], "complete"), ("b", points[1], "pruned"),
                                            ("c", searcher.inner.configs["c"], "complete")]


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_optuna_strategies_learn_a_config_they_did_not_suggest(name):
    space = load_space("digits_small")
    obj = ObjectiveConfig(multi=name == "nsga2")
    strategy = make_searcher(name, space, obj, seed=0)
    point = space.sample(5)
    strategy.on_trial_complete("w", point, {"status": "complete", "score": 0.8, "val_acc": 0.8, "size_kb": 2.0})
    (told,) = strategy.study.get_trials()
    assert told.values[0] == pytest.approx(0.8)
    # stored as the strategy asks for it (ordinal values by index), so its own model can use it
    assert {k: (space.param(k).domain.values[v] if k in told.params and hasattr(space.param(k).domain, "index")
                else v) for k, v in told.params.items()} == point
    rng = np.random.default_rng(0)
    for k in range(14):  # past TPE's 10 startup trials: the sampler models the warm trial with the rest
        cfg = strategy.suggest(f"t{k}")
        strategy.on_trial_complete(f"t{k}", cfg, {"status": "complete", "score": float(rng.random()),
                                                  "val_acc": float(rng.random()), "size_kb": float(rng.random())})
    assert len(strategy.study.get_trials()) >= 15
