"""The trial function without Ray: training, reporting, resuming, divergence, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nasq_ray.data import Split
from nasq_ray.errors import NasqError
from nasq_ray.objective import ObjectiveConfig
from nasq_ray.space import SearchSpace
from nasq_ray.trials.training import accuracy_f1
from nasq_ray.trials.trained import TrialContext, evaluate_state, load_trained, run_trial

TINY = {
    "name": "tiny", "input": "image",
    "stages": [{"channels": [4, 8], "ops": ["conv3x3", "dwsep3x3"], "connections": ["sequential", "residual"]}],
    "head": {"pool": "flatten", "hidden_layers": 0},
    "quant": {"w_bits": [4, 8], "a_bits": [4, 8], "logit_bits": [8, 32]},
    "train": {"lr": 0.01, "batch_size": 32},
}


def _ctx(digits, raw=TINY, epochs=3, n=300):
    space = SearchSpace(raw, digits.input_shape, digits.num_classes, source="tiny")
    train = Split(digits.train.x[:n], digits.train.y[:n])
    return TrialContext(space, train, digits.val, epochs, ObjectiveConfig(target=1.0))


def _run(ctx, cfg, state=None, stop_after=None):
    reports = []

    def report(metrics, payload):
        reports.append((dict(metrics), payload))
        if stop_after is not None and metrics["epoch"] >= stop_after:
            raise StopIteration

    try:
        run_trial(cfg, ctx, report, state)
    except StopIteration:
        pass
    return reports


def test_reports_every_epoch_with_metrics_and_cost(digits):
    ctx = _ctx(digits)
    cfg = ctx.space.sample(0)
    reports = _run(ctx, cfg)
    assert [m["epoch"] for m, _ in reports] == [1, 2, 3]
    last = reports[-1][0]
    for key in ("val_acc", "val_f1", "macs", "bitops", "size_bits", "size_kb", "score", "avg_w_bits"):
        assert key in last
    assert last["status"] == "complete" and reports[0][0]["status"] == "running"
    assert 0.0 <= last["val_acc"] <= 1.0
    assert last["val_acc"] > 0.5  # three epochs on digits learn something
    assert all(p is not None and p["epoch"] == m["epoch"] for m, p in reports)


def test_resume_from_state_matches_uninterrupted_run(digits):
    ctx = _ctx(digits)
    cfg = ctx.space.sample(1)
    straight = _run(ctx, cfg)
    first = _run(ctx, cfg, stop_after=1)
    resumed = _run(ctx, cfg, state=first[-1][1])
    assert [m["epoch"] for m, _ in resumed] == [2, 3]
    assert resumed[-1][0]["val_acc"] == straight[-1][0]["val_acc"]
    assert resumed[-1][0]["train_loss"] == straight[-1][0]["train_loss"]


def test_diverging_trial_ends_cleanly_as_failed(digits):
    raw = {**TINY, "train": {"lr": 1.0e12, "optimizer": "sgd", "momentum": 0.0, "batch_size": 32}}
    ctx = _ctx(digits, raw, epochs=5)
    reports = _run(ctx, ctx.space.sample(0))
    last, payload = reports[-1]
    assert last["status"] == "failed"
    assert "non-finite" in last["fail_reason"] and f"epoch {last['epoch']}" in last["fail_reason"]
    assert last["score"] == -math.inf and payload is None
    assert len(reports) < 5


def test_uses_one_torch_thread_by_default(digits):
    ctx = _ctx(digits, epochs=1)
    torch.set_num_threads(2)
    _run(ctx, ctx.space.sample(0))
    assert torch.get_num_threads() == 1


def test_accuracy_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 6, 200)
        pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 6, 200))
        acc, f1 = accuracy_f1(torch.from_numpy(pred), torch.from_numpy(y), 7)  # class 6 never appears
        assert acc == pytest.approx((pred == y).mean())
        assert f1 == pytest.approx(f1_score(y, pred, average="macro"))


def test_evaluate_state_reproduces_validation_accuracy(digits):
    ctx = _ctx(digits, epochs=2)
    cfg = ctx.space.sample(2)
    reports = _run(ctx, cfg)
    acc, _ = evaluate_state(ctx.space, cfg, reports[-1][1]["model"], digits.val)
    assert acc == reports[-1][0]["val_acc"]


# ------------------------------------------------------------------------------- policy auto


AUTO = {**TINY, "quant": {"policy": "auto", "w_bits": [2, 4, 8], "a_bits": [4, 8], "logit_bits": 32}}


def test_auto_bits_resume_reuses_saved_bits(digits):
    ctx = _ctx(digits, AUTO)
    cfg = ctx.space.sample(0)
    straight = _run(ctx, cfg)
    first = _run(ctx, cfg, stop_after=1)
    table = first[-1][1]["model"]["auto_bits"]
    assert torch.equal(table, straight[-1][1]["model"]["auto_bits"])  # calibration is deterministic
    resumed = _run(ctx, cfg, state=first[-1][1])
    assert [m["epoch"] for m, _ in resumed] == [2, 3]
    assert resumed[-1][0]["val_acc"] == straight[-1][0]["val_acc"]
    assert resumed[-1][0]["w_bits_str"] == straight[-1][0]["w_bits_str"]
    # the saved bits are read back, not chosen again
    other = torch.where(table == 32, table, 8)  # the same layers quantized, at other widths
    assert not torch.equal(other, table)
    state = {**first[-1][1], "model": {**first[-1][1]["model"], "auto_bits": other}}
    resumed = _run(ctx, cfg, state=state, stop_after=2)
    assert resumed[-1][0]["w_bits_str"] == " ".join(f"{w}/{a}" for w, a in other.tolist()).replace("32", "f")


def test_auto_bits_evaluate_state(digits):
    ctx = _ctx(digits, AUTO, epochs=1)
    cfg = ctx.space.sample(1)
    reports = _run(ctx, cfg)
    model_state = reports[-1][1]["model"]
    acc, _ = evaluate_state(ctx.space, cfg, model_state, digits.val)
    assert acc == reports[-1][0]["val_acc"]
    model = load_trained(ctx.space, cfg, model_state)
    bits = [f"{m.w_bits}/{m.a_bits}" for n, m in model.named_modules() if n in ctx.space.layers(cfg)]
    assert " ".join(bits).replace("32", "f") == reports[-1][0]["w_bits_str"]
    without = {k: v for k, v in model_state.items() if k != "auto_bits"}
    with pytest.raises(NasqError) as e:
        evaluate_state(ctx.space, cfg, without, digits.val)
    assert "'auto_bits'" in str(e.value) and "\n" not in str(e.value)
