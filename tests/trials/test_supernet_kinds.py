"""The one-shot kinds in process: phase 1 trains a super-network and resumes from its own state;
recalibration restores a shrunk sub-network; the subnet kind conforms."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from conftest import ONESHOT_SPACE
from nasq_ray.config import from_dict
from nasq_ray.testing import check_trial_kind
from nasq_ray.trials import prepare
from nasq_ray.data.batches import first_batches, first_labelled_batches
from nasq_ray.trials.supernet import SUPERNET_FILE, _refit_head_, load_supernet, phase1_training
from nasq_ray.trials.training import recalibrate_bn_
from nasq_ray.trials.training import accuracy_f1, predict_batches


@pytest.fixture(scope="module")
def phase1(tmp_path_factory):
    d = tmp_path_factory.mktemp("shot")
    (d / "space.yaml").write_text(ONESHOT_SPACE)
    cfg = from_dict({"space": str(d / "space.yaml"), "trial": "supernet", "out": str(d), "name": "supernet",
                     "data": {"max_train": 500}, "search": {"max_epochs": 6}})
    kind, prep = prepare(cfg)
    states = []  # payloads hold live tensors: a copy is what a checkpoint keeps
    metrics = kind.run({}, prep.context, lambda m, p: states.append((m, copy.deepcopy(p))))
    torch.save(states[-1][1]["supernet"], d / SUPERNET_FILE)
    return d, kind, prep, states, metrics


def test_phase_1_trains_the_super_network_and_resumes_from_its_own_state(phase1):
    d, kind, prep, states, metrics = phase1
    assert [m["epoch"] for m, _ in states] == list(range(1, 7))
    assert metrics["val_acc"] > 0.3 and metrics["status"] == "complete"  # chance: 0.1
    again = []
    kind.run({}, prep.context, lambda m, p: again.append(m), state=states[2][1])  # stopped after epoch 3
    assert [m["epoch"] for m in again] == [4, 5, 6] and again[-1]["val_acc"] == pytest.approx(metrics["val_acc"])


def test_recalibration_sets_the_statistics_of_a_shrunk_sub_network_and_restores_its_accuracy(phase1):
    d, kind, prep, _, _ = phase1
    space, ctx = prep.space, prep.context
    net = load_supernet(space, str(d / SUPERNET_FILE))
    worst = None
    for seed in range(6):  # the narrowest sub-networks: their statistics differ most from the shared ones
        cfg = {**space.sample(seed), "s0.channels": 8, "s1.channels": 16}
        sub = net.subnet(space.decode(cfg))
        before = accuracy_f1(*predict_batches(sub, ctx.val.eval()), space.num_classes)[0]
        stats = [m.running_mean.clone() for m in sub.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        recalibrate_bn_(sub, first_batches(ctx.train, 20, 32, 0))
        after = accuracy_f1(*predict_batches(sub, ctx.val.eval()), space.num_classes)[0]
        changed = [not torch.equal(a, m.running_mean) for a, m in
                   zip(stats, (m for m in sub.modules() if isinstance(m, torch.nn.BatchNorm2d)))]
        assert all(changed)
        worst = min(worst if worst is not None else 1.0, after - before)
        assert after >= before - 0.02
    assert max(0.0, -worst) < 0.05


def test_the_head_refit_trains_only_the_head_and_fits_the_batches(phase1):
    d, kind, prep, _, _ = phase1
    space, ctx = prep.space, prep.context
    net = load_supernet(space, str(d / SUPERNET_FILE))
    sub = net.subnet(space.decode(space.sample(3)))
    batches = first_labelled_batches(ctx.train, 8, 32, 0)
    recalibrate_bn_(sub, [xb for xb, _ in batches])
    with torch.no_grad():  # a head that has learned nothing
        for p in sub.head.parameters():
            p.normal_(0.0, 0.01)
    before = {k: v.clone() for k, v in sub.state_dict().items()}

    def fit_acc():
        with torch.no_grad():
            return float(np.mean([(sub(xb).argmax(1) == yb).float().mean() for xb, yb in batches]))

    acc_before = fit_acc()
    _refit_head_(sub, batches, steps=60)
    after = sub.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("head.") for k in moved), moved
    assert any(k.endswith("weight") for k in moved)
    assert not sub.training and fit_acc() > acc_before + 0.2
    _refit_head_(sub, batches, steps=0)  # 0: the head as it is
    assert all(torch.equal(after[k], v) for k, v in sub.state_dict().items())


def test_phase_2_holds_searched_training_hyperparameters_at_phase_1s(phase1):
    d = phase1[0]
    searched = ONESHOT_SPACE.replace("train: {lr: 0.005, batch_size: 32}", "train: {lr: {low: 0.002, high: 0.02, "
                                     "log: true}, batch_size: [16, 32, 64], weight_decay: [0.0, 0.0001]}")
    assert searched != ONESHOT_SPACE
    (d / "searched.yaml").write_text(searched)
    data = {"max_train": 200}
    _, full = prepare(from_dict({"space": str(d / "searched.yaml"), "data": data}))
    _, sub = prepare(from_dict({"space": str(d / "searched.yaml"), "trial": "subnet", "out": str(d.parent),
                                "name": d.name, "data": data}))
    fixed = phase1_training(full.space)
    assert fixed == {"train.lr": pytest.approx(math.sqrt(0.002 * 0.02)), "train.batch_size": 32, "train.weight_decay": 0.0}
    assert [n for n in full.space.names if n.startswith("train.")] and not [
        n for n in sub.space.names if n.startswith("train.")]
    train = sub.space.decode(sub.space.sample(0)).train
    assert (train.lr, train.batch_size, train.weight_decay) == (fixed["train.lr"], 32, 0.0)


def test_the_subnet_kind_conforms_and_scores_in_one_report(phase1):
    d, _, _, _, _ = phase1
    cfg = from_dict({"space": str(d / "space.yaml"), "trial": "subnet", "out": str(d.parent), "name": d.name,
                     "data": {"max_train": 500}, "search": {"max_epochs": 1}})
    kind, prep = prepare(cfg)
    config = prep.space.sample(np.random.default_rng(1))
    check_trial_kind(kind, prep, config, {**config, "s0.channels": 12})
    cost = kind.cost_model(prep)(config)
    reports = []
    kind.run(config, prep.context, lambda m, p: reports.append(m))
    assert len(reports) == 1 and reports[0]["size_kb"] == cost


def test_the_subnet_kind_scores_on_search_subnet_val_samples_of_the_validation_split(phase1):
    d = phase1[0]
    made = {}
    for n in (None, 40):
        _, made[n] = prepare(from_dict({"space": str(d / "space.yaml"), "trial": "subnet", "out": str(d.parent),
                                        "name": d.name, "data": {"max_train": 500},
                                        "search": {"max_epochs": 1, "subnet_val_samples": n}}))
    whole, part = made[None].context.val, made[40].context.val
    assert len(part) == 40 < len(whole)
    _, trained = prepare(from_dict({"space": str(d / "space.yaml"), "data": {"max_train": 500}}))
    assert len(trained.context.val) == len(whole)  # per-trial training scores on all of it
