"""The own_model trial kind, in process: conformance, the float model's cache, the reference rows,
sensitivities and HAWQ configs within their budgets, export of a pruned model, a user's Datasets."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from nasq_ray.config import from_dict
from nasq_ray.errors import ConfigError, NasqError
from nasq_ray.testing import check_trial_kind
from nasq_ray.trials import prepare
from nasq_ray.trials.own_model import OwnModelTrial
from user_model_code import write_user_module

SPACE = """
quant: {w_bits: [2, 4, 8], a_bits: [4, 8], pin_first_last: 8}
prune: {keep: [1.0, 0.5]}
distill: {alpha: 0.5, temperature: 4}
train: {lr: [0.002, 1000000000.0], batch_size: 64}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("own")
    write_user_module(d)
    (d / "space.yaml").write_text(SPACE)
    old = os.getcwd()
    os.chdir(d)
    sys.path.insert(0, str(d))
    yield d
    os.chdir(old)
    sys.path.remove(str(d))


def _cfg(workdir, **over):
    raw = {"model": {"factory": "mynet:Net", "float_epochs": 4}, "space": str(workdir / "space.yaml"),
           "data": {"max_train": 400}, "search": {"max_epochs": 2}, "out": str(workdir / "out"), "name": "run",
           "quiet": True}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(raw)


@pytest.fixture(scope="module")
def own(workdir):
    torch.manual_seed(0)  # the float model's initial weights: the same whichever tests ran before
    return prepare(_cfg(workdir))


def _config(prep, **values):
    cfg = prep.space.sample(0)
    cfg.update({"train.lr": 0.002, **values})
    return cfg


def test_own_model_trials_conform(own):
    kind, prep = own
    assert kind.name == "own_model" and prep.context.teacher_logits is not None  # in memory: teacher cached
    cfg = _config(prep, **{"b1.keep": 0.5, "stem.0.keep": 0.5})
    check_trial_kind(kind, prep, cfg, {**cfg, "train.lr": 1e9})


def test_the_float_model_is_cached_in_the_results_folder(own, workdir, capsys):
    _, prep = own
    assert (workdir / "out" / "run" / "float_model.pt").is_file()
    again = prepare(_cfg(workdir, quiet=False))[1]
    assert "float model" not in capsys.readouterr().out  # read back, not trained again
    assert all(torch.equal(a, b) for a, b in zip(again.context.float_state.values(), prep.context.float_state.values()))


def test_reference_rows_are_the_float_model_and_uniform_post_training_quantization(own):
    kind, prep = own
    rows = {r["name"]: r for r in kind.reference_rows(prep)}
    assert set(rows) == {"float", "ptq 8/8", "ptq 4/4"}
    assert rows["float"]["avg_w_bits"] == 32 and rows["ptq 8/8"]["avg_w_bits"] == 8
    assert rows["ptq 4/4"]["bits"].split() == ["8/8", *["4/4"] * 5, "8/8"]  # first and last pinned
    assert abs(rows["ptq 8/8"]["val_acc"] - rows["float"]["val_acc"]) < 0.05
    assert all(r["test_acc"] is not None for r in rows.values())


def test_hawq_configs_meet_their_budgets_and_sensitivities_are_saved(own, workdir):
    from nasq_ray.hawq import hawq_configs, spread_budgets

    kind, prep = own
    sens = kind.sensitivity(prep)
    saved = json.loads((workdir / "out" / "run" / "sensitivity.json").read_text())
    assert set(saved["layers"]) == {"a", "dw", "pw", "b1", "b2"}
    assert all(v["omega"]["2"] >= v["omega"]["8"] for v in saved["layers"].values())
    # the space searches activation widths: every (w, a) pair is a choice, the activations' loss measured
    assert all(set(v["act_loss"]) == {"4", "8"} for v in saved["layers"].values())
    assert set(sens.choices) == {(w, a) for w in (2, 4, 8) for a in (4, 8)}
    layer = next(iter(saved["layers"]))
    assert sens.omega[layer][(2, 4)] - sens.omega[layer][(2, 8)] == pytest.approx(
        2 * max(0.0, saved["layers"][layer]["act_loss"]["4"]) - 2 * max(0.0, saved["layers"][layer]["act_loss"]["8"]))
    cost = kind.cost_model(prep)
    configs = hawq_configs(sens, spread_budgets(sens, 4))
    assert len(configs) >= 3
    for budget, cfg in configs:
        assert cost(cfg) <= budget + 1e-9 and cost(cfg) >= 0.9 * budget
    assert kind.warm_start_configs(prep, 3, 0)[0] == configs[0][1]  # 2 of HAWQ-V3, 1 pruned


def test_the_float_models_initial_weights_follow_the_runs_seed_not_torchs_global_state(workdir):
    from nasq_ray.space.files import read_space_yaml
    from nasq_ray.trials import get_trial_kind

    raw, kind = read_space_yaml(workdir / "space.yaml"), get_trial_kind("own_model")
    states = []
    for seed, global_seed in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(global_seed)
        model = kind.derive_space(_cfg(workdir, search={"seed": seed}), raw, workdir / "space.yaml")[1]
        states.append(model.state_dict())
    same = all(torch.equal(a, b) for a, b in zip(states[0].values(), states[1].values()))
    assert same and not all(torch.equal(a, b) for a, b in zip(states[0].values(), states[2].values()))


def test_sensitivity_bits_with_every_layer_excluded_name_the_exclusion(workdir):
    (workdir / "all_float.yaml").write_text(SPACE.replace("pin_first_last: 8}", "pin_first_last: 8, exclude: ['*']}"))
    kind, prep = prepare(_cfg(workdir, space=str(workdir / "all_float.yaml"), name="all_float"))
    with pytest.raises(ConfigError, match="quant.exclude: quant.include and quant.exclude leave no layer quantized"):
        kind.sensitivity(prep)


def test_pruned_warm_starts_halve_the_macs_from_measured_pruning_losses(own, workdir):
    kind, prep = own
    sens = kind.sensitivity(prep)
    summary = kind.cost_model(prep).summary
    float_macs = summary(prep.space.default_config()).macs
    pruned = kind.pruned_starts(prep, sens, 2)
    saved = json.loads((workdir / "out" / "run" / "prune_sensitivity.json").read_text())
    assert set(saved) == {g.name for g in prep.space.groups} and all(set(v) == {"0.5"} for v in saved.values())
    lowest = {f"{g.name}.keep": 0.5 for g in prep.space.groups}
    assert len(pruned) == (2 if summary({**prep.space.default_config(), **lowest}).macs <= float_macs / 4 else 1)
    for k, cfg in enumerate(pruned, start=1):
        assert summary(cfg).macs <= float_macs / 2 ** k
        assert any(cfg[f"{g.name}.keep"] < 1 for g in prep.space.groups)
        assert len({cfg[key] for key in cfg if key.endswith(".w_bits")}) >= 1
    starts = kind.warm_start_configs(prep, 4, 0)  # up to half of them pruned, after HAWQ-V3's
    assert len(starts) == 4 and starts[4 - len(pruned):] == pruned
    assert all(c[f"{g.name}.keep"] == 1.0 for c in starts[:4 - len(pruned)] for g in prep.space.groups)


def test_a_pruned_trained_model_exports_to_onnx_computing_the_fake_quant_model(own):
    from nasq_ray.deploy.onnx import run_onnx, to_onnx

    kind, prep = own
    cfg = _config(prep, **{"pw.keep": 0.5, "b2.keep": 0.5})
    states = []
    kind.run(cfg, prep.context, lambda m, p: states.append(p))
    model = kind.trained_model(cfg, states[-1], prep).eval()
    assert model.net.pw.out_channels == 8 and model.net.b2.out_channels == 4
    x, _ = next(iter(prep.test.eval(200)))
    with torch.no_grad():
        fq = model(x).numpy()
    ort = run_onnx(to_onnx(model, prep.space.input_shape), x.numpy(), optimize=False)
    # the same integers in float arithmetic: equal up to rounding, except where a value sits on a
    # quantization boundary and one step moves (rare)
    assert np.isclose(ort, fq, atol=1e-4).mean() >= 0.995 and (ort.argmax(1) == fq.argmax(1)).sum() >= len(x) - 1


def test_a_user_data_factory_is_read_through_dataloaders(workdir):
    kind, prep = prepare(_cfg(workdir, data={"name": "mynet:data", "max_train": None}, name="factory"))
    assert type(prep.context.train).__name__ == "DatasetBatches" and prep.context.teacher_logits is None
    metrics = kind.run(_config(prep), prep.context, lambda m, p: None)
    assert metrics["status"] == "complete" and 0 <= metrics["val_acc"] <= 1


@pytest.mark.parametrize("data, message", [
    ("mynet:bad_items", "is a tuple of 3 items; expected (input, label)"),
    ("mynet:rgb", "fails on the data's input of shape (2, 3, 8, 8)"),
    # found as the batches are read (the float model trains on them in the driver)
    ("mynet:label_past_the_classes", "data: mynet:label_past_the_classes()['train']: a label is 12; allowed: 0 to 9 "
                                     "(10 classes: the model's outputs)"),
    ("mynet:negative_label_in_val", "['val']: a label is -1; allowed: 0 to 9"),
    ("mynet:column_labels", "a batch's labels are a torch.int64 tensor of shape (2, 1); expected one integer"),
    ("mynet:nan_input", "a batch's inputs hold NaN or infinite values"),
    ("mynet:one_class", "data: every training label is 0; a classifier needs at least 2 classes"),
    ("mynet:unreadable", "['train']: reading a batch failed (OSError: cannot read image 30)"),
    ("mynet:num_classes_text", "['num_classes'] is 'ten'; allowed: an integer >= 2"),
])
def test_bad_user_data_is_refused_in_one_line(workdir, data, message):
    with pytest.raises(NasqError) as e:
        prepare(_cfg(workdir, data={"name": data, "max_train": None}, model={"float_epochs": 1}, name="bad"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_data_factory_refuses_the_built_in_caps(workdir):
    with pytest.raises(ConfigError) as e:
        prepare(_cfg(workdir, data={"name": "mynet:data", "max_train": None, "max_val": 50}, name="cap"))
    assert str(e.value).startswith("data.max_val: not available with a data factory") and "\n" not in str(e.value)


@pytest.mark.parametrize("prune, params", [
    ("{keep: {low: 0.25, high: 1.0}}", True),  # a range: searched (it had been read as no pruning at all)
    ("{keep: 0.5}", False),  # one ratio: a constant; the unpruned reference config had named it as a parameter
])
def test_keep_ratios_as_a_range_or_one_value(workdir, prune, params):
    (workdir / "keep.yaml").write_text(f"quant: {{w_bits: [4, 8], a_bits: [8]}}\nprune: {prune}\n")
    space = OwnModelTrial().space(_cfg(workdir, space=str(workdir / "keep.yaml")), *_raw(workdir / "keep.yaml"))
    keeps = [n for n in space.names if n.endswith(".keep")]
    assert bool(keeps) == params and space.groups
    space.uniform_config(8, 8)


def test_a_prune_section_that_is_not_a_mapping_is_named(workdir):
    (workdir / "plist.yaml").write_text("prune: [0.5]\n")
    with pytest.raises(NasqError, match="prune: expected a mapping with keys keep, importance, exclude, got list"):
        OwnModelTrial().space(_cfg(workdir, space=str(workdir / "plist.yaml")), *_raw(workdir / "plist.yaml"))


def test_a_grouped_conv_is_left_unpruned_and_layers_kept_float_are_named(workdir, capsys):
    (workdir / "prunes.yaml").write_text("prune: {keep: [1.0, 0.5]}\n")
    raw = _raw(workdir / "prunes.yaml")
    space = OwnModelTrial().space(_cfg(workdir, model={"factory": "mynet:Grouped"}, space=str(raw[1])), *raw)
    assert all("g" not in (*g.outputs, *g.inputs) for g in space.groups)  # pruning c by one channel broke g's groups
    assert capsys.readouterr().err == ""
    OwnModelTrial().space(_cfg(workdir, model={"factory": "mynet:WithLstm"}, space=str(raw[1])), *raw)
    err = capsys.readouterr().err
    assert err.startswith("warning: model: 1 layer(s) stay float and outside the cost") and "rnn (LSTM, 160 weights)" in err


def _raw(path):
    from nasq_ray.space.files import read_space_yaml

    return read_space_yaml(path), path


def test_the_float_model_cache_key_tells_a_capped_validation_split_apart(workdir):
    from nasq_ray.trials.own_prepare import _cache_key

    plain, capped = _cache_key(_cfg(workdir), (1, 8, 8)), _cache_key(_cfg(workdir, data={"max_val": 50}), (1, 8, 8))
    assert plain != capped != _cache_key(_cfg(workdir, data={"max_val": 60}), (1, 8, 8))
    assert plain == _cache_key(_cfg(workdir, data={"max_val": None}), (1, 8, 8))


def test_run_search_takes_the_model_callable_itself(workdir):
    import mynet

    kind, prep = prepare(_cfg(workdir, model={"factory": mynet.Net}, name="callable"))
    assert prep.context.factory.target == "mynet:Net"  # an importable class travels by name to Ray's workers
    assert _cfg(workdir, model={"factory": mynet.Net}).to_dict()["model"]["factory"] == "mynet:Net"


def test_a_bad_label_met_inside_a_trial_fails_it_with_the_reason_in_one_line(workdir):
    # a generated space on a data factory whose validation split holds a -1 past the first item: only
    # the trial reads that batch; it is recorded failed with the reason (Ray had printed a traceback)
    kind, prep = prepare(_cfg(workdir, model={"factory": None}, space="digits_small", name="gen",
                              data={"name": "mynet:negative_label_in_val", "max_train": None}))
    reports = []
    metrics = kind.run(prep.space.sample(0), prep.context, lambda m, p: reports.append(m))
    assert metrics["status"] == "failed" and reports == [metrics]
    assert metrics["fail_reason"].startswith("DataError: data: mynet:negative_label_in_val()['val']: a label is -1")


def test_a_long_float_epoch_says_how_far_it_is(own, capsys, monkeypatch):
    import mynet

    from nasq_ray.trials import own_prepare

    monkeypatch.setattr(own_prepare, "PROGRESS_EVERY_S", 0.0)  # a line after every batch
    _, prep = own
    own_prepare.train_float_(mynet.Net(), prep.context.train, prep.context.val, 10, 1, 0)
    lines = capsys.readouterr().err.splitlines()
    n = -(-len(prep.context.train) // own_prepare.FLOAT_BATCH)
    assert [x.split("  ")[1] for x in lines[:-1]] == [f"batch {i}/{n}" for i in range(1, n + 1)]
    assert lines[-1].startswith("float model: epoch 1/1  train_loss")
