"""The joint search space: shipped spaces, conditional parameters, validation and YAML errors."""

from __future__ import annotations

import copy
import re

import numpy as np
import optuna
import pytest
import yaml

from nasq_ray.errors import SearchSpaceError, UnknownNameError
from nasq_ray.models import build_model
from nasq_ray.objective import ObjectiveConfig
from nasq_ray.quant import LayerBits
from nasq_ray.space import SPACES_DIR, load_space, shipped_spaces
from nasq_ray.space import AutoBits, TrialSpec
from nasq_ray.space import Choice, Float, Int, Ordinal
from nasq_ray.space import SearchSpace
from nasq_ray.search.strategies import MULTI_OBJECTIVE_ONLY, SEARCHERS, define_by_run
from nasq_ray.testing import check_strategy

N_SAMPLES = 50
SHIPPED_SPACES = ("digits_small", "cifar_cnn", "fashion_cnn", "mlp")  # as in conftest.py
_BLOCK = re.compile(r"^s(\d+)\.b(\d+)\.")


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


@pytest.fixture(scope="module")
def spaces() -> dict[str, SearchSpace]:
    return {name: load_space(name) for name in shipped_spaces() if name != "own_model"}  # own_model: a user model's


@pytest.fixture(scope="module")
def samples(spaces) -> dict[str, list[dict]]:
    return {name: [sp.sample(k) for k in range(N_SAMPLES)] for name, sp in spaces.items()}


def raw_of(name: str) -> dict:
    return yaml.safe_load((SPACES_DIR / f"{name}.yaml").read_text())


def tiny_raw(**stage) -> dict:
    st = {"channels": 8, "ops": ["conv3x3"], **stage}
    return {"stages": [st], "quant": {"w_bits": [4, 8], "a_bits": [4, 8]}}


# ------------------------------------------------------------------------------------ shipped spaces


def test_shipped_names():
    assert set(SHIPPED_SPACES) <= set(shipped_spaces())


@pytest.mark.parametrize("name", SHIPPED_SPACES)
def test_shipped_space_samples_validate_and_decode(spaces, samples, name):
    sp = spaces[name]
    assert sp.name == name
    assert sp.params
    assert not sp.is_flat
    for cfg in samples[name]:
        assert sp.validate(cfg) == cfg
        assert sp.violation(cfg) == ""
        spec = sp.decode(cfg)
        assert isinstance(spec, TrialSpec)
        assert spec.arch.num_classes == sp.num_classes
        assert spec.arch.input_shape == sp.input_shape
        assert set(spec.quant.layers) == set(sp.layers(cfg))
        for L, bits in spec.quant.layers.items():
            assert bits.w_bits == cfg[f"{L}.w_bits"]
            assert bits.a_bits == cfg[f"{L}.a_bits"]
        assert spec.train.lr == cfg["train.lr"]
        assert len(spec.arch.head_widths) == cfg["head.layers"]
        if sp.input_kind == "image":
            assert len(spec.arch.stages) == sp.n_stages
            for i, stage in enumerate(spec.arch.stages):
                assert len(stage) == sp.view(cfg)[f"s{i}.repeats"]
                assert all(b.out_ch == sp.view(cfg)[f"s{i}.channels"] for b in stage)
            c, h, w = spec.arch.feature_shape()
            assert h >= 1 and w >= 1
        else:
            assert spec.arch.stages == ()


@pytest.mark.parametrize("name", SHIPPED_SPACES)
def test_samples_are_diverse(samples, name):
    cfgs = samples[name]
    assert len({tuple(sorted(c.items())) for c in cfgs}) == len(cfgs)
    lrs = [c["train.lr"] for c in cfgs]
    assert len(set(lrs)) == len(lrs)


@pytest.mark.parametrize("name", SHIPPED_SPACES)
def test_sampling_deterministic(spaces, name):
    sp = spaces[name]
    assert sp.sample(7) == sp.sample(7)
    assert sp.sample(np.random.default_rng(3)) == sp.sample(np.random.default_rng(3))
    assert sp.sample(7) != sp.sample(8)


# ------------------------------------------------------------------------------ conditional params


@pytest.mark.parametrize("name", ["digits_small", "cifar_cnn"])
def test_block_params_follow_repeats(spaces, samples, name):
    sp = spaces[name]
    view_counts = set()
    for cfg in samples[name]:
        view = sp.view(cfg)
        for key in cfg:
            m = _BLOCK.match(key)
            if m:
                i, j = int(m[1]), int(m[2])
                assert j < view[f"s{i}.repeats"], key
        for i in range(sp.n_stages):
            reps = view[f"s{i}.repeats"]
            view_counts.add((i, reps))
            for j in range(reps):
                assert f"s{i}.b{j}.op" in cfg and f"s{i}.b{j}.conn" in cfg
            assert f"s{i}.b{reps}.op" not in cfg
    # the samples did explore different repeat counts
    assert len({r for i, r in view_counts if i == 0}) > 1


@pytest.mark.parametrize("name", SHIPPED_SPACES)
def test_bits_params_iff_layer_exists(spaces, samples, name):
    sp = spaces[name]
    for cfg in samples[name]:
        layers = sp.layers(cfg)
        assert len(layers) == len(set(layers))
        assert layers[-1] == "head.out"
        w = {k[: -len(".w_bits")] for k in cfg if k.endswith(".w_bits")}
        a = {k[: -len(".a_bits")] for k in cfg if k.endswith(".a_bits")}
        assert w == set(layers)
        assert a == set(layers)


def test_layers_match_ops(spaces, samples):
    """A dwsep op holds dw and pw convs, a pooling op holds none (unless it must project)."""
    sp = spaces["digits_small"]
    seen = set()
    for cfg in samples["digits_small"]:
        layers = set(sp.layers(cfg))
        for key, op in cfg.items():
            if not key.endswith(".op") or key.count(".") != 2:
                continue
            b = key[: -len(".op")]
            seen.add(op)
            if op.startswith("dwsep"):
                assert {f"{b}.op.dw", f"{b}.op.pw"} <= layers
            elif op.startswith("conv"):
                assert f"{b}.op.conv" in layers
                assert f"{b}.op.dw" not in layers
            elif op in ("maxpool", "avgpool", "identity"):
                assert f"{b}.op.conv" not in layers and f"{b}.op.dw" not in layers
    assert {"dwsep3x3", "maxpool", "conv3x3"} <= seen


@pytest.mark.parametrize("name", ["digits_small", "cifar_cnn"])
def test_parallel_params_only_for_parallel(spaces, samples, name):
    n_par = 0
    for cfg in samples[name]:
        for key, conn in cfg.items():
            if key.endswith(".conn"):
                b = key[: -len(".conn")]
                par = conn == "parallel"
                n_par += par
                assert (f"{b}.op_b" in cfg) == par, key
                assert (f"{b}.merge" in cfg) == par, key
        for key in cfg:
            if key.endswith(".op_b") or key.endswith(".merge"):
                assert cfg[key.rsplit(".", 1)[0] + ".conn"] == "parallel"
    assert n_par > 0


def test_head_params_follow_layers(spaces, samples):
    sp = spaces["mlp"]
    depths = set()
    for cfg in samples["mlp"]:
        n = cfg["head.layers"]
        depths.add(n)
        for k in range(3):
            assert (f"head.fc{k}.width" in cfg) == (k < n)
            assert (f"head.fc{k}.w_bits" in cfg) == (k < n)
    assert depths == {1, 2, 3}
    assert sp.layers(samples["mlp"][0])[-1] == "head.out"


def test_momentum_only_with_sgd_shipped_mlp(spaces, samples):
    sp = spaces["mlp"]
    opts = {cfg["train.optimizer"] for cfg in samples["mlp"]}
    assert opts == {"adam", "sgd"}
    for cfg in samples["mlp"]:
        if cfg["train.optimizer"] != "sgd":
            assert "train.momentum" not in cfg
        assert sp.decode(cfg).train.momentum == pytest.approx(0.9)


def test_momentum_only_with_sgd_searched():
    raw = raw_of("mlp")
    raw["train"]["momentum"] = {"low": 0.5, "high": 0.99}
    sp = SearchSpace(raw, (64,), 10, source="test")
    prm = {p.name: p for p in sp.params}["train.momentum"]
    assert prm.when == ("sgd",)
    n_sgd = 0
    for k in range(40):
        cfg = sp.sample(k)
        sgd = cfg["train.optimizer"] == "sgd"
        n_sgd += sgd
        assert ("train.momentum" in cfg) == sgd
        if sgd:
            assert 0.5 <= cfg["train.momentum"] <= 0.99
            assert sp.decode(cfg).train.momentum == cfg["train.momentum"]
    assert 0 < n_sgd < 40
    # a single optimizer that is sgd: momentum is always there
    raw["train"]["optimizer"] = "sgd"
    sp2 = SearchSpace(raw, (64,), 10, source="test")
    assert "train.momentum" in sp2.sample(0)


# ---------------------------------------------------------------------------------------- validate


@pytest.fixture
def dcfg(spaces):
    sp = spaces["digits_small"]
    for k in range(100):
        cfg = sp.sample(k)
        if cfg["s0.repeats"] == 1:
            return sp, cfg
    raise AssertionError("no config with s0.repeats == 1")


def test_validate_missing_param(dcfg):
    sp, cfg = dcfg
    del cfg["train.lr"]
    with pytest.raises(SearchSpaceError) as e:
        sp.validate(cfg)
    msg = one_line(e)
    assert "missing" in msg and "'train.lr'" in msg


def test_validate_value_outside_domain(dcfg):
    sp, cfg = dcfg
    cfg["s0.channels"] = 12
    with pytest.raises(SearchSpaceError) as e:
        sp.validate(cfg)
    msg = one_line(e)
    assert "'s0.channels'" in msg and "12" in msg
    assert "8, 16, 24" in msg


@pytest.mark.parametrize("key,value", [
    ("s0.b0.op", "conv7x7"), ("train.lr", 0.5), ("train.batch_size", 48), ("s0.b0.conn", True),
    ("head.out.w_bits", 5), ("head.out.w_bits", "8"),
])
def test_validate_rejects_values(dcfg, key, value):
    sp, cfg = dcfg
    cfg[key] = value
    with pytest.raises(SearchSpaceError) as e:
        sp.validate(cfg)
    assert f"'{key}'" in one_line(e)


def test_validate_bool_is_not_a_bit_width():
    sp = SearchSpace(tiny_raw() | {"quant": {"w_bits": [1, 2], "a_bits": [1, 2]}}, (1, 8, 8), 10, "test")
    cfg = sp.sample(0)
    cfg["head.out.w_bits"] = True  # True == 1, but not a bit-width
    with pytest.raises(SearchSpaceError):
        sp.validate(cfg)


def test_validate_unknown_param_did_you_mean(dcfg):
    sp, cfg = dcfg
    cfg["s0.chanels"] = 8
    with pytest.raises(SearchSpaceError) as e:
        sp.validate(cfg)
    msg = one_line(e)
    assert "unknown" in msg and "'s0.chanels'" in msg and "did you mean 's0.channels'" in msg


def test_validate_inactive_param(dcfg):
    sp, cfg = dcfg
    cfg["s0.b1.op"] = "conv3x3"
    with pytest.raises(SearchSpaceError) as e:
        sp.validate(cfg)
    msg = one_line(e)
    assert "'s0.b1.op'" in msg and "inactive" in msg and "s0.repeats" in msg


def test_validate_inactive_parallel_param(spaces, samples):
    sp = spaces["digits_small"]
    cfg = next(c for c in samples["digits_small"] if c["s1.b0.conn"] != "parallel")
    cfg = dict(cfg, **{"s1.b0.op_b": "maxpool"})
    with pytest.raises(SearchSpaceError) as e:
        sp.validate(cfg)
    msg = one_line(e)
    assert "'s1.b0.op_b'" in msg and "parallel" in msg


def test_validate_returns_copy(dcfg):
    sp, cfg = dcfg
    out = sp.validate(cfg)
    assert out == cfg and out is not cfg


# ------------------------------------------------------------------------------------------ is_flat


def test_is_flat_tiny_space():
    sp = SearchSpace(tiny_raw(), (1, 8, 8), 10, source="test")
    assert sp.is_flat
    assert all(p.when is None for p in sp.params)
    names = set(sp.names)
    assert {"s0.b0.op.conv.w_bits", "s0.b0.op.conv.a_bits", "head.out.w_bits", "head.out.a_bits"} <= names
    cfg = sp.sample(0)
    assert set(cfg) == names
    assert sp.validate(cfg) == cfg


@pytest.mark.parametrize("change", [
    {"repeats": [1, 2]}, {"ops": ["conv3x3", "dwsep3x3"]}, {"connections": ["sequential", "parallel"]},
])
def test_conditional_choice_makes_space_not_flat(change):
    sp = SearchSpace(tiny_raw(**change), (1, 8, 8), 10, source="test")
    assert not sp.is_flat


def test_head_depth_choice_makes_space_not_flat():
    raw = tiny_raw()
    raw["head"] = {"hidden_layers": [0, 1], "hidden": 16}
    assert not SearchSpace(raw, (1, 8, 8), 10, source="test").is_flat
    raw["head"] = {"hidden_layers": 1, "hidden": [16, 32]}
    assert SearchSpace(raw, (1, 8, 8), 10, source="test").is_flat


# ---------------------------------------------------------------------------------- feasibility


def test_infeasible_downsampling_at_construction():
    raw = {"stages": [{"channels": 4, "stride": 2, "ops": ["conv3x3"]} for _ in range(4)]}
    with pytest.raises(SearchSpaceError) as e:
        SearchSpace(raw, (1, 8, 8), 10, source="test")
    msg = one_line(e)
    assert "no valid architecture" in msg and "1x8x8" in msg and "s3" in msg


def test_three_stride2_stages_fit_8x8():
    raw = {"stages": [{"channels": 4, "stride": 2, "ops": ["conv3x3"]} for _ in range(3)]}
    sp = SearchSpace(raw, (1, 8, 8), 10, source="test")
    cfg = sp.sample(0)
    assert sp.decode(cfg).arch.feature_shape() == (4, 1, 1)


def test_stride_choice_sampling_is_feasible():
    raw = {"stages": [{"channels": 4, "stride": [1, 2], "ops": ["conv3x3"]} for _ in range(4)]}
    sp = SearchSpace(raw, (1, 8, 8), 10, source="test")
    n_three = 0
    for k in range(60):
        cfg = sp.sample(k)
        assert sp.violation(cfg) == ""
        strides = [cfg[f"s{i}.stride"] for i in range(4)]
        assert sum(s == 2 for s in strides) <= 3
        n_three += sum(s == 2 for s in strides) == 3
        assert sp.validate(cfg) == cfg
    assert n_three > 0  # the boundary is reached, not avoided
    bad = dict(cfg, **{f"s{i}.stride": 2 for i in range(4)})
    assert sp.violation(bad) != ""
    with pytest.raises(SearchSpaceError) as e:
        sp.validate(bad)
    msg = one_line(e)
    assert "invalid architecture" in msg and "s3" in msg and "stride-2" in msg


# ------------------------------------------------------------------------------------ YAML errors


def write_space(tmp_path, raw) -> str:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def digits_mut(fn):
    raw = copy.deepcopy(raw_of("digits_small"))
    fn(raw)
    return raw


def _set(path, value):
    def fn(raw):
        node = raw
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return fn


def _rename(old, new):
    def fn(raw):
        raw[new] = raw.pop(old)
    return fn


YAML_CASES = [
    (_rename("stages", "stagez"), "stagez", ["unknown key", "did you mean 'stages'"]),
    (_set(["stages", 1, "repeatz"], 2), "stages[1].repeatz", ["unknown key", "did you mean 'repeats'"]),
    (_set(["stages", 1, "ops"], ["conv3x3", "conv4x4"]), "stages[1].ops",
     ["'conv4x4'", "conv3x3", "dwsep5x5", "maxpool", "identity"]),
    (_set(["stages", 0, "channels"], []), "stages[0].channels", ["empty"]),
    (_set(["quant", "w_bits"], [4, 0]), "quant.w_bits", ["bit-width 0"]),
    (_set(["quant", "a_bits"], [33]), "quant.a_bits", ["bit-width 33"]),
    (_set(["quant", "w_bits"], 20), "quant.w_bits", ["bit-width 20"]),
    (_set(["quant", "logit_bits"], [8, 4.5]), "quant.logit_bits", ["4.5"]),
    (_set(["stages", 0, "channels"], [8, "wide"]), "stages[0].channels", ["'wide'"]),
    (_set(["stages", 1, "merge"], ["sum", 3]), "stages[1].merge", ["3"]),
    (_set(["train", "lr"], {"low": 0.1, "high": 0.01}), "train.lr", ["low", "high"]),
    (_set(["train", "weight_decay"], {"low": 0.0, "high": 0.01, "log": True}), "train.weight_decay",
     ["log", "low > 0"]),
    (_set(["train", "lr"], {"low": 0.0, "high": 0.01, "log": True}), "train.lr", ["0.0"]),
    (_set(["train", "lr"], {"low": 0.01}), "train.lr", ["high"]),
    (_set(["train", "optimizer"], ["adam", "sgdd"]), "train.optimizer", ["did you mean 'sgd'", "adamw"]),
    (_set(["train", "batch_size"], [32, 0]), "train.batch_size", ["0"]),
    (_set(["head", "pool"], "max"), "head.pool", ["'max'", "avg", "flatten"]),
    (_set(["head", "widths"], 3), "head.widths", ["unknown key", "hidden"]),
    (_set(["stages", 0, "connections"], ["serial"]), "stages[0].connections", ["'serial'", "residual"]),
    (_set(["input"], "volume"), "input", ["'volume'", "image", "flat"]),
    (_set(["stages", 1], ["conv3x3"]), "stages[1]", ["mapping"]),
    (lambda r: r["stages"][0].pop("ops"), "stages[0].ops", ["missing"]),
    (_set(["num_classes"], 1), "num_classes", ["1"]),
    (_set(["input"], "flat"), "stages", ["flat"]),
    (_set(["quant", "policy"], ["layer", "block"]), "quant.policy", ["one policy name", "layer, block, uniform, auto"]),
    (_set(["quant", "policy"], "foo"), "quant.policy", ["'foo'", "auto", "block", "layer", "uniform"]),
    (_set(["quant", "policy"], "blok"), "quant.policy", ["did you mean 'block'"]),
    (_set(["quant", "pin_first_last"], 7.5), "quant.pin_first_last", ["7.5", "1..16"]),
    (_set(["quant", "pin_first_last"], 0), "quant.pin_first_last", ["bit-width 0"]),
    (_set(["quant", "pin_first_last"], [4, 8]), "quant.pin_first_last", ["one bit-width"]),
    (_set(["quant", "pin_first_last"], True), "quant.pin_first_last", ["True"]),
    (lambda r: r["quant"].update(policy="auto", auto_sqnr_db=-1), "quant.auto_sqnr_db", ["-1", "> 0"]),
    (lambda r: r["quant"].update(policy="auto", auto_sqnr_db="high"), "quant.auto_sqnr_db", ["'high'"]),
    (lambda r: r["quant"].update(policy="auto", auto_sqnr_db=[20, 30]), "quant.auto_sqnr_db", ["[20, 30]"]),
    (_set(["quant", "polcy"], "block"), "quant.polcy", ["unknown key", "did you mean 'policy'"]),
    # every number of a domain is finite, in the key's natural range; a range's log is true or false
    (_set(["train", "lr"], float("nan")), "train.lr", ["nan is not allowed", "finite numbers > 0"]),
    (_set(["train", "lr"], [0.01, float("nan")]), "train.lr", ["nan is not allowed"]),
    (_set(["train", "lr"], {"low": float("nan"), "high": 0.03}), "train.lr", ["nan is not allowed"]),
    (_set(["train", "lr"], {"low": 0.003, "high": float("inf")}), "train.lr", ["inf is not allowed"]),
    (_set(["train", "lr"], {"low": 0.003, "high": 0.03, "log": "maybe"}), "train.lr.log",
     ["'maybe' is not allowed", "true, false"]),
    (_set(["train", "momentum"], float("nan")), "train.momentum", ["nan is not allowed", "[0, 1)"]),
    (_set(["train", "momentum"], 5), "train.momentum", ["5 is not allowed", "[0, 1)"]),
    (_set(["train", "momentum"], [0.9, 1.0]), "train.momentum", ["1.0 is not allowed", "[0, 1)"]),
    (_set(["train", "weight_decay"], [float("nan")]), "train.weight_decay", ["nan is not allowed", ">= 0"]),
    (_set(["train", "weight_decay"], {"low": 0.0, "high": float("inf")}), "train.weight_decay",
     ["inf is not allowed"]),
    (_set(["train", "batch_size"], [32, 64.5]), "train.batch_size", ["64.5", "integers >= 1"]),
]


@pytest.mark.parametrize("mut,field,needles", YAML_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(YAML_CASES)])
def test_yaml_errors(tmp_path, mut, field, needles):
    raw = digits_mut(mut)
    path = write_space(tmp_path, raw)
    with pytest.raises(SearchSpaceError) as e:
        load_space(path)
    msg = one_line(e)
    assert path in msg
    assert f": {field}:" in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_yaml_malformed_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nstages:\n  - channels: [8, 16\n    ops: [conv3x3]\n")
    with pytest.raises(SearchSpaceError) as e:
        load_space(p)
    msg = one_line(e)
    assert str(p) in msg and re.search(r"line \d+", msg) and "YAML" in msg


def test_yaml_top_level_not_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(SearchSpaceError) as e:
        load_space(p)
    assert "mapping" in one_line(e)


def test_yaml_missing_file(tmp_path):
    with pytest.raises(SearchSpaceError) as e:
        load_space(tmp_path / "absent.yaml")
    assert "absent.yaml" in one_line(e)


def test_yaml_a_folder_is_not_a_space_file(tmp_path):
    with pytest.raises(SearchSpaceError) as e:
        load_space(tmp_path)
    msg = one_line(e)
    assert f"'{tmp_path}' is a folder" in msg and "space YAML file" in msg and "digits_small" in msg


def test_abstract_space_numbers_are_finite_and_its_ranges_not_too_wide():
    with pytest.raises(SearchSpaceError) as e:
        SearchSpace({"params": {"x": [1.0, float("inf")]}})
    assert "params.x: inf is not allowed; allowed: finite numbers" in one_line(e)
    with pytest.raises(SearchSpaceError) as e:
        SearchSpace({"params": {"x": {"low": -1e308, "high": 1e308}}})
    assert "params.x: range low=-1e+308 high=1e+308 is too wide" in one_line(e)
    sp = SearchSpace({"params": {"x": {"low": 0.5, "high": 2.0, "log": False}, "y": [0.0, 0.9]}})
    assert 0.5 <= sp.sample(0)["x"] <= 2.0


def test_image_space_on_flat_input():
    with pytest.raises(SearchSpaceError) as e:
        load_space("digits_small", input_shape=(64,))
    msg = one_line(e)
    assert "image" in msg and "(64,)" in msg


def test_image_space_takes_dataset_shape():
    sp = load_space("digits_small", input_shape=(3, 16, 16), num_classes=4)
    assert sp.input_shape == (3, 16, 16) and sp.num_classes == 4
    spec = sp.decode(sp.sample(0))
    assert spec.arch.stages[0][0].in_ch == 3


def test_unknown_shipped_name():
    with pytest.raises(UnknownNameError) as e:
        load_space("digits_smal")
    msg = one_line(e)
    for name in SHIPPED_SPACES:
        assert name in msg
    assert "did you mean 'digits_small'" in msg


def test_valid_yaml_loads(tmp_path):
    raw = digits_mut(_set(["quant", "w_bits"], [1, 16, 32]))
    sp = load_space(write_space(tmp_path, raw))
    assert {p.name: p for p in sp.params}["head.out.w_bits"].domain == Ordinal((1, 16, 32))


def test_domains_from_yaml(spaces):
    by = {p.name: p.domain for p in spaces["cifar_cnn"].params}
    assert by["train.lr"] == Float(0.001, 0.1, True)
    assert isinstance(by["s0.b0.op"], Choice)
    assert by["s0.channels"] == Ordinal((16, 24, 32))
    assert "train.momentum" not in by  # fixed value: a constant, not a parameter
    assert spaces["cifar_cnn"].constants["train.momentum"] == 0.9


# ------------------------------------------------------------------------------------------ Optuna


@pytest.mark.parametrize("name", ["digits_small", "cifar_cnn", "mlp"])
def test_define_by_run_ask(spaces, name):
    sp = spaces[name]
    fn = define_by_run(sp)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ordinal = {p.name: p.domain for p in sp.params if isinstance(p.domain, Ordinal)}
    checked = 0
    for _ in range(15):
        trial = study.ask()
        cfg = fn(trial)
        assert sp.validate(cfg) == cfg
        assert set(trial.params) == set(cfg)
        for k, v in cfg.items():
            if k in ordinal:
                idx = trial.params[k]
                assert isinstance(idx, int) and 0 <= idx < len(ordinal[k].values)
                assert v == ordinal[k].values[idx]
                checked += 1
            else:
                assert trial.params[k] == v
        study.tell(trial, 0.0)
    assert checked > 0


def test_define_by_run_optimize(spaces):
    sp = spaces["digits_small"]
    fn = define_by_run(sp)
    cfgs = []

    def objective(trial):
        cfg = fn(trial)
        cfgs.append(cfg)
        return float(cfg["s0.channels"])

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(objective, n_trials=10)
    assert len(cfgs) == 10
    for cfg in cfgs:
        assert sp.validate(cfg) == cfg
        assert cfg["s0.channels"] in (8, 16, 24)
    assert study.best_value == max(c["s0.channels"] for c in cfgs)


# ---------------------------------------------------------------------------- complete / neighbours


def test_complete_with_more_repeats(dcfg):
    sp, cfg = dcfg
    changed = dict(cfg, **{"s0.repeats": 2})
    out = sp.complete(changed, np.random.default_rng(0))
    assert out["s0.repeats"] == 2
    for k, v in cfg.items():
        if k != "s0.repeats":
            assert out[k] == v, k
    new = set(out) - set(cfg)
    assert "s0.b1.op" in new and "s0.b1.conn" in new
    assert all(k.startswith("s0.b1.") for k in new)
    assert sp.validate(out) == out


def test_complete_with_fewer_repeats(spaces, samples):
    sp = spaces["digits_small"]
    cfg = next(c for c in samples["digits_small"] if c["s0.repeats"] == 2)
    out = sp.complete(dict(cfg, **{"s0.repeats": 1}), 0)
    assert not any(k.startswith("s0.b1.") for k in out)
    assert all(out[k] == cfg[k] for k in out if k != "s0.repeats")
    assert sp.validate(out) == out


def test_complete_replaces_invalid_values(dcfg):
    sp, cfg = dcfg
    out = sp.complete(dict(cfg, **{"s0.channels": 999}), 0)
    assert out["s0.channels"] in (8, 16, 24)
    assert sp.validate(out) == out


def test_complete_changed_op_gets_layer_bits(spaces, samples):
    sp = spaces["digits_small"]
    cfg = next(c for c in samples["digits_small"] if c["s0.b0.op"].startswith("conv"))
    out = sp.complete(dict(cfg, **{"s0.b0.op": "dwsep3x3"}), 0)
    assert "s0.b0.op.conv.w_bits" not in out
    assert "s0.b0.op.dw.w_bits" in out and "s0.b0.op.pw.a_bits" in out
    assert sp.validate(out) == out


def test_ordinal_neighbors():
    d = Ordinal((2, 3, 4, 6, 8, 32))
    assert d.neighbors(4) == [3, 6]
    assert d.neighbors(2) == [3]
    assert d.neighbors(32) == [8]
    assert Ordinal((5,)).neighbors(5) == []


def test_other_neighbors():
    assert sorted(Choice(("a", "b", "c")).neighbors("b")) == ["a", "c"]
    assert Int(1, 5).neighbors(1) == [2]
    assert Int(1, 5).neighbors(3) == [2, 4]
    nb = Float(0.0, 1.0).neighbors(0.5)
    assert len(nb) == 2 and all(0.0 <= x <= 1.0 for x in nb) and 0.5 not in nb
    assert all(0.001 <= x <= 0.1 for x in Float(0.001, 0.1, True).neighbors(0.08))


def test_domain_contains():
    assert Ordinal((4, 8)).contains(8) and not Ordinal((4, 8)).contains(6)
    assert not Int(0, 3).contains(True)
    assert not Int(0, 3).contains(1.5) and Int(0, 3).contains(np.int64(2))
    assert Float(0.1, 1.0).contains(0.5) and not Float(0.1, 1.0).contains(1.5)
    assert not Float(0.0, 1.0).contains(False)


def test_int_log_sampling_in_range():
    d = Int(1, 1000, True)
    rng = np.random.default_rng(0)
    xs = [d.sample(rng) for _ in range(300)]
    assert all(isinstance(x, int) and 1 <= x <= 1000 for x in xs)
    assert np.median(xs) < 200  # log-uniform, not uniform


# ------------------------------------------------------------------------------ bit-width policies

POLICIES = ("layer", "block", "uniform", "auto")


def policy_space(name: str = "digits_small", **quant) -> SearchSpace:
    raw = copy.deepcopy(raw_of(name))
    raw["quant"].update(quant)
    return SearchSpace(raw, source=f"{name}-test")


def bits_names(sp: SearchSpace) -> list[str]:
    return [n for n in sp.names if n.endswith((".w_bits", ".a_bits"))]


@pytest.mark.parametrize("name", SHIPPED_SPACES)
def test_policy_param_names_and_counts(name):
    by = {pol: policy_space(name, policy=pol) for pol in POLICIES}
    assert by["layer"].names == policy_space(name).names  # layer is the default
    assert all(sp.policy == pol for pol, sp in by.items())
    # the policies change the bit parameters only
    others = [n for n in by["layer"].names if n not in bits_names(by["layer"])]
    for sp in by.values():
        assert [n for n in sp.names if n not in bits_names(sp)] == others
    assert bits_names(by["uniform"]) == ["quant.w_bits", "quant.a_bits"]
    assert bits_names(by["auto"]) == []
    for n in bits_names(by["block"]):
        assert re.match(r"^(s\d+\.b\d+|head\.fc\d+|head\.out)\.[wa]_bits$", n), n
    n = {pol: len(sp.params) for pol, sp in by.items()}
    assert n["auto"] < n["uniform"] <= n["block"] <= n["layer"]
    if name != "mlp":  # blocks of several layers share one pair
        assert n["block"] < n["layer"]
    else:  # an MLP has only head layers: block is layer
        assert by["block"].names == by["layer"].names


@pytest.mark.parametrize("policy", POLICIES)
def test_pin_removes_first_and_last_layers_params(policy):
    free, pinned = policy_space(policy=policy), policy_space(policy=policy, pin_first_last=8)
    assert pinned.pin_bits == 8 and free.pin_bits is None
    assert set(pinned.names) <= set(free.names)
    if policy == "layer":
        gone = {f"{L}.{k}" for L in ("s0.b0.op.conv", "s0.b0.op.dw", "s0.b0.skip", "head.out")
                for k in ("w_bits", "a_bits")}
        assert set(free.names) - set(pinned.names) == gone
        assert "s0.b0.op.pw.w_bits" in pinned.names  # a pointwise conv after a depthwise reads no input
    elif policy == "block":
        assert set(free.names) - set(pinned.names) == {"head.out.w_bits", "head.out.a_bits"}
        assert pinned.param("s0.b0.w_bits").when == ("bits", 0, 0)  # only when s0.b0 holds the pw conv
    else:
        assert pinned.names == free.names  # one pair (or none) either way
    for k in range(30):
        cfg = pinned.sample(k)
        spec = pinned.decode(cfg)
        for L, bits in spec.quant.layers.items():
            if pinned.pinned(L):
                assert bits.w_bits == bits.a_bits == 8
                assert f"{L}.w_bits" not in cfg
        assert pinned.pinned("head.out")
        assert not pinned.pinned("s0.b0.op.pw") and not pinned.pinned("s0.b1.op.conv")
        assert not pinned.pinned("head.fc0")  # an image space's first layer is in s0.b0
        if policy == "block":
            assert ("s0.b0.w_bits" in cfg) == (cfg["s0.b0.op"] == "dwsep3x3")


def test_pin_in_flat_space():
    sp = policy_space("mlp", pin_first_last=4)
    free = policy_space("mlp")
    gone = {f"{L}.{k}" for L in ("head.fc0", "head.out") for k in ("w_bits", "a_bits")}
    assert set(free.names) - set(sp.names) == gone
    assert sp.pinned("head.fc0") and sp.pinned("head.out") and not sp.pinned("head.fc1")
    for k in range(20):
        cfg = sp.sample(k)
        q = sp.decode(cfg).quant.layers
        assert q["head.fc0"].w_bits == q["head.out"].a_bits == 4
        for L in q:
            if L not in ("head.fc0", "head.out"):
                assert q[L].w_bits == cfg[f"{L}.w_bits"]


def test_block_policy_shares_the_blocks_width():
    sp = policy_space(policy="block")
    seen_multi = 0
    for k in range(40):
        cfg = sp.sample(k)
        layers = sp.layers(cfg)
        q = sp.decode(cfg).quant.layers
        for L in layers:
            m = re.match(r"^(s\d+\.b\d+)\.", L)
            key = m[1] if m else L
            assert q[L].w_bits == cfg[f"{key}.w_bits"] and q[L].a_bits == cfg[f"{key}.a_bits"], L
        blocks = {re.match(r"^(s\d+\.b\d+)\.", L)[1] for L in layers if L.startswith("s")}
        # a block's pair exists iff the block holds a quantized layer
        assert {n[: -len(".w_bits")] for n in cfg if re.match(r"^s\d+\.b\d+\.w_bits$", n)} == blocks
        seen_multi += any(sum(L.startswith(b + ".") for L in layers) > 1 for b in blocks)
    assert seen_multi  # blocks of several layers were sampled


def test_uniform_policy_one_width():
    sp = policy_space(policy="uniform", pin_first_last=8)
    for k in range(20):
        cfg = sp.sample(k)
        q = sp.decode(cfg).quant.layers
        free = {(b.w_bits, b.a_bits) for L, b in q.items() if not sp.pinned(L)}
        assert free == {(cfg["quant.w_bits"], cfg["quant.a_bits"])}


def test_uniform_pair_follows_unpinned_layers():
    """With every layer pinned the uniform pair disappears; when only some configs have a free layer
    it is conditional."""
    sp = SearchSpace(tiny_raw() | {"quant": {"w_bits": [4, 8], "a_bits": [4, 8], "policy": "uniform",
                                             "pin_first_last": 6}}, (1, 8, 8), 10, "test")
    assert bits_names(sp) == []
    assert set(sp.decode(sp.sample(0)).quant.layers.values()) == {LayerBits(6, 6)}
    sp = SearchSpace(tiny_raw(ops=["conv3x3", "dwsep3x3"]) | {"quant": {
        "w_bits": [4, 8], "a_bits": [4, 8], "policy": "uniform", "pin_first_last": 6}}, (1, 8, 8), 10, "test")
    assert sp.param("quant.w_bits").when == ("uniform",)
    for k in range(10):
        cfg = sp.sample(k)
        assert ("quant.w_bits" in cfg) == (cfg["s0.b0.op"] == "dwsep3x3")
        assert sp.validate(cfg) == cfg
    assert "pinned" in sp.describe_when(sp.param("quant.w_bits"))


def test_auto_policy_decodes_placeholders_and_candidates():
    sp = policy_space(policy="auto", pin_first_last=8, auto_sqnr_db=24)
    assert sp.auto_sqnr_db == 24.0
    assert policy_space(policy="auto").auto_sqnr_db == 30.0  # the default
    for k in range(10):
        cfg = sp.sample(k)
        spec = sp.decode(cfg)
        auto = spec.auto_bits
        assert isinstance(auto, AutoBits)
        assert auto.sqnr_db == 24.0
        assert auto.w_candidates == (2, 3, 4, 6, 8, 32) and auto.a_candidates == (3, 4, 6, 8, 32)
        assert auto.layers == tuple(L for L in sp.layers(cfg) if not sp.pinned(L))
        assert list(spec.quant.layers) == sp.layers(cfg)
        for L, bits in spec.quant.layers.items():
            assert bits == (LayerBits(8, 8) if sp.pinned(L) else LayerBits(32, 32))
    assert policy_space().decode(policy_space().sample(0)).auto_bits is None


@pytest.mark.parametrize("name", ["digits_small", "mlp"])
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("pin", [None, 8])
def test_policies_sample_validate_mutate_build(name, policy, pin):
    sp = policy_space(name, policy=policy, **({"pin_first_last": pin} if pin else {}))
    rng = np.random.default_rng(0)
    for k in range(20):
        cfg = sp.sample(k)
        assert sp.validate(cfg) == cfg
        spec = sp.decode(cfg)
        assert list(spec.quant.layers) == sp.layers(cfg)
        model = build_model(spec.arch, spec.quant, seed=0)
        modules = dict(model.named_modules())
        for L, bits in spec.quant.layers.items():
            assert getattr(modules[L], "w_bits", 32) == bits.w_bits, L
        mutated = sp.mutate(cfg, rng)
        assert sp.validate(mutated) == mutated
    for nb in sp.neighbors(cfg, rng):
        assert sp.validate(nb) == nb
    fn = define_by_run(sp)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        cfg = fn(trial)
        assert sp.validate(cfg) == cfg
        study.tell(trial, 0.0)


def test_policy_bits_are_bits_moves():
    assert SearchSpace.param_kind("s0.b1.w_bits") == "bits"
    assert SearchSpace.param_kind("quant.a_bits") == "bits"


@pytest.mark.parametrize("policy", ["block", "uniform", "auto"])
@pytest.mark.parametrize("searcher", sorted(set(SEARCHERS) - {"hawq"}))  # hawq: a user model's sensitivities
def test_searchers_conform_on_policy_spaces(policy, searcher):
    check_strategy(SEARCHERS[searcher], policy_space(policy=policy, pin_first_last=8),
                   ObjectiveConfig(multi=searcher in MULTI_OBJECTIVE_ONLY))


def test_shipped_policies_example():
    sp = load_space("digits_policies")
    assert sp.policy == "block" and sp.pin_bits == 8
    assert len(sp.params) < len(load_space("digits_small").params)


def test_a_user_model_space_without_a_model_says_to_give_one():
    with pytest.raises(SearchSpaceError, match="describes a user's own model.*--model"):
        load_space("own_model")


# ------------------------------------------------------------------------------ the Python API's arguments

@pytest.mark.parametrize("name, shape, classes, needle", [
    (42, (1, 8, 8), 10, "space: expected a shipped space's name"),
    ("digits_small", ("a", "b", "c"), 10, "input_shape: ('a', 'b', 'c') is not allowed; allowed: a tuple of positive"),
    ("digits_small", "188", 10, "input_shape: '188' is not allowed"),  # int() read it as (1, 8, 8)
    ("digits_small", (1, 8.7, 8), 10, "input_shape: (1, 8.7, 8) is not allowed"),  # was rounded down
    ("digits_small", (0, 8, 8), 10, "input_shape: (0, 8, 8) is not allowed"),  # failed inside torch
    ("mlp", (-5,), 10, "input_shape: (-5,) is not allowed"),
    ("mlp", (), 10, "input_shape: () is not allowed"),
    ("digits_small", (1, 8, 8), 2.7, "num_classes: 2.7 is not allowed; allowed: integers >= 2"),  # was 2
    ("digits_small", (1, 8, 8), "ten", "num_classes: 'ten' is not allowed"),
])
def test_load_space_refuses_shapes_and_class_counts_it_would_round_or_fail_on_later(name, shape, classes, needle):
    with pytest.raises(SearchSpaceError) as e:
        load_space(name, input_shape=shape, num_classes=classes)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_numpy_shapes_seeds_and_the_configs_of_the_api_are_taken_and_bad_ones_named():
    from nasq_ray.errors import ConfigError

    space = load_space("digits_small", input_shape=np.array([1, 8, 8]), num_classes=np.int64(10))
    assert space.input_shape == (1, 8, 8) and space.num_classes == 10
    assert space.sample(np.int64(3)) == space.sample(3)
    for seed in ("0", -1, 1.5):
        with pytest.raises(ConfigError, match=re.escape(f"rng: {seed!r} is not allowed; allowed: an integer >= 0")):
            space.sample(seed)
    for bad in (None, [1, 2]):
        with pytest.raises(SearchSpaceError, match="config: expected a mapping of parameter names to values"):
            space.validate(bad)
    cfg = space.sample(0)
    # 24.0 == 24 in Python; a float channel count passed validation and failed inside torch
    with pytest.raises(SearchSpaceError, match=r"'s0.channels' = 24.0 is not allowed|'s0.channels' = \d+\.0 is not"):
        space.validate({**cfg, "s0.channels": float(cfg["s0.channels"])})
    assert Ordinal((2, 4, 8)).contains(np.int64(4)) and not Ordinal((2, 4, 8)).contains(4.0)
    assert Choice((0, 1)).contains(1) and not Choice((0, 1)).contains(True) and Choice((True, False)).contains(True)
    assert Ordinal((0.5, 1.0)).contains(1)  # an int for a float choice is the same number


def test_the_tune_and_optuna_adapters_want_a_space_not_its_name():
    from nasq_ray.errors import ConfigError
    from nasq_ray.search.domains import to_param_space

    for adapter in (to_param_space, define_by_run):
        with pytest.raises(ConfigError, match=r"space: expected a SearchSpace \(nasq_ray.load_space\(...\)\), got str"):
            adapter("digits_small")
