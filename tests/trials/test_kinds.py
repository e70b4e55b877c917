"""Trial kinds: every built-in (and the README's plug-in example) passes the conformance check;
kinds are chosen by what a run holds or by name; bad names exit with one line."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from nasq_ray.config import from_dict
from nasq_ray.errors import ConfigError, UnknownNameError
from nasq_ray.search.strategies import make_searcher
from nasq_ray.testing import check_trial_kind
from nasq_ray.trials import (
    TRIAL_KINDS,
    BaseTrialKind,
    get_trial_kind,
    kind_name_for,
    prepare,
    register_trial_kind,
)
from nasq_ray.trials.trained import TrainedTrial

README = Path(__file__).resolve().parents[2] / "README.md"

# sgd at lr 1e12 diverges at once: the failing config of the training kinds
TINY = {
    "name": "tiny", "input": "image",
    "stages": [{"channels": [4, 8], "ops": ["conv3x3", "dwsep3x3"], "connections": ["sequential", "residual"]}],
    "head": {"pool": "flatten", "hidden_layers": 0},
    "quant": {"w_bits": [4, 8], "a_bits": [4, 8], "logit_bits": [8, 32]},
    "train": {"lr": [0.02, 1.0e12], "optimizer": "sgd", "momentum": 0.0, "batch_size": 32},
}


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _cfg(**raw):
    return from_dict({"data": {"max_train": 200}, **raw})


def test_trained_kind_conforms(tiny_yaml):
    kind, prep = prepare(_cfg(space=str(tiny_yaml), search={"max_epochs": 2}))
    assert kind.name == "trained" and prep.test is not None
    config = {**prep.space.sample(0), "train.lr": 0.02}
    check_trial_kind(kind, prep, config, {**config, "train.lr": 1.0e12})


def test_dnas_kind_conforms(tiny_yaml):
    kind, prep = prepare(_cfg(space=str(tiny_yaml), search={"max_epochs": 2, "searcher": "dnas"}))
    assert kind.name == "dnas"
    suggested = make_searcher("dnas", prep.space, prep.objective, seed=0, search_epochs=1).suggest("t0")
    config = {**suggested, "train.lr": 0.02}
    check_trial_kind(kind, prep, config, {**config, "train.lr": 1.0e12})
    shown, extra = kind.record(config, {"derived_config": '{"s0.channels": 4}'})
    assert shown == {"s0.channels": 4} and set(extra) == {k for k in config if k.startswith("dnas.")}


def test_cost_models_give_the_cost_trials_report_before_they_run(tiny_yaml):
    kind, prep = prepare(_cfg(space=str(tiny_yaml), search={"max_epochs": 1}, objective={"cost": "bitops"}))
    cost = kind.cost_model(prep)
    for seed in range(3):
        config = {**prep.space.sample(seed), "train.lr": 0.02}
        reported = kind.run(config, prep.context, lambda metrics, state: None)
        assert cost(config) == reported["bitops"]
    kind, prep = prepare(_cfg(space="nb201"))
    config = next(c for c in (prep.space.sample(s) for s in range(50)) if prep.context.table.lookup(c))
    assert kind.cost_model(prep)(config) == prep.context.table.lookup(config)["macs"]
    assert kind.cost_model(prep)({**config, prep.space.names[0]: "not-an-op"}) is None
    dnas, dprep = prepare(_cfg(space=str(tiny_yaml), search={"searcher": "dnas"}))
    assert dnas.cost_model(dprep) is None  # a dnas trial derives its network while it runs


def test_the_latency_cost_model_gives_the_latency_trials_report(tiny_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv("NASQ_RAY_CACHE", str(tmp_path / "cache"))
    kind, prep = prepare(_cfg(space=str(tiny_yaml), search={"max_epochs": 1}, objective={"cost": "latency_ms"}))
    cost = kind.cost_model(prep)
    config = {**prep.space.sample(1), "train.lr": 0.02}
    before = cost(config)  # asked before the trial (what a searcher does): measured once, cached
    reported = kind.run(config, prep.context, lambda metrics, state: None)
    assert before > 0 and reported["latency_ms"] == before and reported["status"] == "complete"
    assert len(list((tmp_path / "cache" / "latency").glob("*/*.json"))) == 1


def test_latency_is_refused_where_no_network_is_measured(tiny_yaml):
    with pytest.raises(ConfigError, match="objective.cost: latency_ms is measured on a network nasq-ray builds"):
        prepare(_cfg(space="nb201", objective={"cost": "latency_ms"}))


def test_table_kind_conforms():
    kind, prep = prepare(_cfg(space="nb201"))
    assert kind.name == "table" and prep.objective.cost == "macs"
    config = next(c for c in (prep.space.sample(s) for s in range(50)) if prep.context.table.lookup(c))
    first = prep.space.names[0]
    check_trial_kind(kind, prep, config, {**config, first: "not-an-op"})


def _readme_block(start: str) -> str:
    match = re.search(r"```python\n(" + re.escape(start) + r".*?)```", README.read_text(), re.S)
    assert match, f"README has no python block starting with {start!r}"
    return match.group(1)


def test_the_readme_trial_kind_plugin_conforms_in_under_40_lines(tmp_path, monkeypatch):
    code = _readme_block("# my_nas/my_nas/kind.py")
    assert len(code.strip().splitlines()) < 40
    (tmp_path / "readme_kind.py").write_text(code)  # importable, as an installed plug-in is
    monkeypatch.syspath_prepend(str(tmp_path))
    kind = importlib.import_module("readme_kind").FunctionTrial()
    cfg = _cfg(space="nb201", trial="function", objective={"cost": "macs"})
    prep = kind.prepare(cfg, *_nb201_raw(), cfg.objective)
    config = prep.space.sample(0)
    check_trial_kind(kind, prep, config, {**config, prep.space.names[0]: "not-an-op"})


def _nb201_raw():
    from nasq_ray.space import read_space_yaml, resolve_space_path

    path = resolve_space_path("nb201")
    return read_space_yaml(path), path


def test_kind_chosen_by_what_the_run_holds_or_by_name(tiny_yaml):
    raw = yaml.safe_load(tiny_yaml.read_text())
    assert kind_name_for(_cfg(space=str(tiny_yaml)), raw) == "trained"
    assert kind_name_for(_cfg(space=str(tiny_yaml), search={"searcher": "dnas"}), raw) == "dnas"
    assert kind_name_for(_cfg(space="nb201"), _nb201_raw()[0]) == "table"
    assert kind_name_for(_cfg(space=str(tiny_yaml), table={"path": "t.csv"}), raw) == "table"
    assert kind_name_for(_cfg(space=str(tiny_yaml), trial="mine"), raw) == "mine"
    assert kind_name_for(_cfg(space=str(tiny_yaml), model={"factory": "mynet:Net"}), raw) == "own_model"
    assert set(TRIAL_KINDS) == {"trained", "table", "dnas", "own_model", "supernet", "subnet", "finetune"}


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(UnknownNameError, match="trial.*trained"):
        get_trial_kind("nope")


def test_dnas_kind_refuses_another_searcher(tiny_yaml):
    with pytest.raises(ConfigError, match="use --searcher dnas"):
        prepare(_cfg(space=str(tiny_yaml), trial="dnas", search={"searcher": "tpe"}))


def test_registering_a_kind_twice_is_an_error():
    class Twice(BaseTrialKind):
        name = "trained"

    with pytest.raises(ValueError, match="already|not yet registered"):
        register_trial_kind(Twice)


class _Raising(TrainedTrial):
    name = "raising"

    def run(self, config, context, report, state=None):
        if config["train.lr"] > 1:
            raise RuntimeError("diverged")
        return super().run(config, context, report, state)


def test_check_trial_kind_fails_a_kind_that_raises_instead_of_reporting_failed(tiny_yaml):
    kind, prep = prepare(_cfg(space=str(tiny_yaml), search={"max_epochs": 1}))
    config = {**prep.space.sample(0), "train.lr": 0.02}
    with pytest.raises(RuntimeError, match="diverged"):
        check_trial_kind(_Raising(), prep, config, {**config, "train.lr": 1.0e12})


class _Forgetful(TrainedTrial):
    name = "forgetful"

    def run(self, config, context, report, state=None):
        return super().run(config, context, report, None)  # ignores its saved state


def test_check_trial_kind_fails_a_kind_that_does_not_resume(tiny_yaml):
    kind, prep = prepare(_cfg(space=str(tiny_yaml), search={"max_epochs": 2}))
    config = {**prep.space.sample(0), "train.lr": 0.02}
    with pytest.raises(AssertionError, match="went on with epoch 1"):
        check_trial_kind(_Forgetful(), prep, config, {**config, "train.lr": 1.0e12})
