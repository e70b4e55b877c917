"""Scheduler construction and MOASHA's Pareto promotion rule (no Ray cluster needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from nasq_ray.errors import ConfigError, UnknownNameError
from nasq_ray.objective import ObjectiveConfig
from nasq_ray.search.schedulers import SCHEDULERS, MOASHAScheduler, build_scheduler
from nasq_ray.space import load_space

OBJ = ObjectiveConfig(cost="size_kb")


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_builtin_scheduler_builds(name):
    sched = build_scheduler(name, {}, metric="score", mode="max", max_t=15, seed=0, objective=OBJ,
                            space=load_space("digits_small"))
    assert isinstance(sched, TrialScheduler)


def test_unknown_scheduler_and_arguments():
    with pytest.raises(UnknownNameError, match="scheduler: unknown name 'ashaa'.*allowed: asha"):
        build_scheduler("ashaa", {}, metric="score", mode="max", max_t=9, seed=0, objective=OBJ)
    with pytest.raises(ConfigError, match="scheduler_args: scheduler 'asha' does not accept \\['brackets'\\]"):
        build_scheduler("asha", {"brackets": 2}, metric="score", mode="max", max_t=9, seed=0, objective=OBJ)


@pytest.mark.parametrize("name, args, needle", [
    ("asha", {"grace_period": "abc"}, "scheduler_args.grace_period: 'abc' is not allowed; allowed: integers from 1 to max_epochs (9)"),
    ("asha", {"grace_period": 10}, "scheduler_args.grace_period: 10"),
    ("moasha", {"reduction_factor": 1}, "scheduler_args.reduction_factor: 1 is not allowed; allowed: numbers > 1"),
    ("hyperband", {"reduction_factor": -2}, "scheduler_args.reduction_factor: -2"),
    ("median", {"min_samples_required": 0}, "scheduler_args.min_samples_required: 0"),
    ("pbt", {"quantile_fraction": 0.9}, "allowed: numbers from 0 to 0.5"),
    ("pbt", {"resample_probability": True}, "scheduler_args.resample_probability: True"),
])
def test_values_ray_would_refuse_later_are_refused_by_name(name, args, needle):
    with pytest.raises(ConfigError) as e:
        build_scheduler(name, args, metric="score", mode="max", max_t=9, seed=0, objective=OBJ,
                        space=load_space("digits_small"))
    assert needle in str(e.value)


def test_hyperband_stops_a_trial_paused_at_the_last_milestone_when_the_other_trial_ends_on_its_own():
    """The order that hung a test run: in a bracket going straight to max_t, trial a reports its last
    epoch and is paused (b is behind); b's function then returns, and Ray gives b's last result to
    on_trial_complete. Ray's HyperBand left a paused, with nothing to run: the search never ended."""
    from ray.tune.experiment import Trial

    class FakeTrial:
        def __init__(self, i):
            self.trial_id, self.status, self.is_saving = str(i), Trial.RUNNING, False

    class FakeController:
        def __init__(self):
            self.stopped = []

        def stop_trial(self, t):
            self.stopped.append(t)
            t.status = Trial.TERMINATED

    sched, ctl = build_scheduler("hyperband", {}, metric="score", mode="max", max_t=3, seed=0, objective=OBJ), FakeController()
    trials = [FakeTrial(i) for i in range(3)]
    for t in trials:
        sched.on_trial_add(ctl, t)
    a, b = trials[0], trials[1]  # max_t 3, reduction factor 3: the first bracket runs its 2 trials to 3 epochs
    for epoch in (1, 2):
        for t in (a, b):
            assert sched.on_trial_result(ctl, t, {"training_iteration": epoch, "score": 0.5}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(ctl, a, {"training_iteration": 3, "score": 0.5}) == TrialScheduler.PAUSE
    a.status, b.status = Trial.PAUSED, Trial.TERMINATED
    sched.on_trial_complete(ctl, b, {"training_iteration": 3, "score": 0.6})
    assert ctl.stopped == [a] and a.status == Trial.TERMINATED


def test_pbt_needs_training_hyperparameters_to_perturb():
    from nasq_ray.space import SearchSpace

    fixed = SearchSpace({"stages": [{"channels": 4, "ops": "conv3x3"}], "quant": {"w_bits": [4, 8]}},
                        (1, 8, 8), 10, source="fixed-train")
    with pytest.raises(ConfigError, match="pbt perturbs training hyperparameters"):
        build_scheduler("pbt", {}, metric="score", mode="max", max_t=9, seed=0, objective=OBJ, space=fixed)


def _result(t, acc, cost):
    return {"training_iteration": t, "val_acc": acc, "size_kb": cost, "score": acc}


def test_moasha_rungs_follow_grace_period_and_reduction_factor():
    s = MOASHAScheduler(OBJ, max_t=27, grace_period=1, reduction_factor=3)
    assert s.rungs == [1, 3, 9]


def test_moasha_keeps_a_cheap_trial_that_a_scalar_rule_would_stop():
    s = MOASHAScheduler(OBJ, max_t=10, grace_period=2, reduction_factor=3)
    trials = [SimpleNamespace(trial_id=f"t{k}") for k in range(6)]
    # five accurate, expensive trials, then a cheap one that is far less accurate
    points = [(0.95, 10.0), (0.94, 11.0), (0.93, 12.0), (0.92, 13.0), (0.91, 14.0), (0.60, 1.0)]
    decisions = [s.on_trial_result(None, t, _result(2, *p)) for t, p in zip(trials, points)]
    assert decisions[-1] == TrialScheduler.CONTINUE  # non-dominated: the cheapest
    # dominated by the first trial (less accurate and more expensive) -> stopped at this rung
    late = SimpleNamespace(trial_id="late")
    assert s.on_trial_result(None, late, _result(2, 0.90, 15.0)) == TrialScheduler.STOP
    # off-rung epochs continue; the last epoch stops
    assert s.on_trial_result(None, late, _result(3, 0.90, 15.0)) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, late, _result(10, 0.90, 15.0)) == TrialScheduler.STOP


def test_moasha_promotes_the_top_fraction_by_rank_then_crowding():
    s = MOASHAScheduler(OBJ, max_t=10, grace_period=2, reduction_factor=2)
    rung = {"a": (0.9, 5.0), "b": (0.8, 2.0), "c": (0.85, 3.0), "d": (0.7, 6.0)}
    # front: a, b, c (d is dominated by all); keep 4 / 2 = 2: the extremes a and b (infinite crowding)
    assert [t for t in rung if s.promotable(rung, t)] == ["a", "b"]


def test_pbt_perturbations_stay_inside_the_space():
    # Ray multiplies a continuous value by 0.8 or 1.2 and does not clip; a trial then refused the lr
    from nasq_ray.search.schedulers import ClipToSpace

    space = load_space("digits_small")
    sched = build_scheduler("pbt", {}, metric="score", mode="max", max_t=9, seed=0, objective=OBJ, space=space)
    clip = sched._custom_explore_fn
    lr = space.param("train.lr").domain
    assert isinstance(clip, ClipToSpace)
    assert clip({"train.lr": lr.low * 0.8})["train.lr"] == lr.low
    assert clip({"train.lr": lr.high * 1.2})["train.lr"] == lr.high
    assert clip({"train.lr": 0.01, "train.batch_size": 64}) == {"train.lr": 0.01, "train.batch_size": 64}


def test_optuna_store_leaves_out_a_value_outside_the_space():
    from nasq_ray.results.optuna_store import frozen_trial

    space = load_space("digits_small")
    config = {"train.lr": 0.0026, "train.batch_size": 32}
    t = frozen_trial("t1", "failed", config, {}, {}, space, OBJ)
    assert t.params == {"train.batch_size": 32}


def test_pbt_perturbs_a_log_scale_integer_on_its_log_scale():
    # pbt_mutations used to turn every Int into a linear randint, dropping Int.log
    from ray.tune.search.sample import Integer

    from nasq_ray.search.domains import pbt_mutations, to_param_space
    from nasq_ray.space import SearchSpace

    raw = {"name": "p", "params": {"train.batch_size": {"low": 16, "high": 1024, "log": True},
                                   "train.lr": {"low": 1e-4, "high": 1e-1, "log": True}}}
    space = SearchSpace(raw, source="p")
    for domains in (pbt_mutations(space), to_param_space(space)):
        bs = domains["train.batch_size"]
        assert isinstance(bs, Integer) and type(bs.get_sampler()).__name__ == "_LogUniform", bs
        assert type(domains["train.lr"].get_sampler()).__name__ == "_LogUniform"


def test_the_default_scheduler_follows_the_objective():
    from nasq_ray.search.schedulers import resolve_scheduler

    assert resolve_scheduler(None, ObjectiveConfig()) == "asha"
    assert resolve_scheduler(None, ObjectiveConfig(multi=True)) == "moasha"  # Pareto rank, not the scalar score
    assert resolve_scheduler("fifo", ObjectiveConfig(multi=True)) == "fifo"


@pytest.mark.parametrize("name", ["asha", "moasha"])
def test_the_warm_start_configs_are_not_stopped_at_a_rung(name):
    warm = {"x": 1, "train.lr": 0.01}
    sched = build_scheduler(name, {"grace_period": 1, "reduction_factor": 3}, metric="score", mode="max", max_t=9,
                            seed=0, objective=OBJ, protected=[warm])
    trials = [SimpleNamespace(trial_id=f"t{k}", config={"x": 10 + k, "train.lr": 0.01}, evaluated_params={})
              for k in range(6)]
    for t, acc in zip(trials, (0.95, 0.94, 0.93, 0.92, 0.91, 0.90)):
        sched.on_trial_add(None, t)
        sched.on_trial_result(None, t, _result(1, acc, 10.0))
    # the same result at the rung: a searcher's config is stopped, the warm start's goes on
    late = SimpleNamespace(trial_id="late", config={"x": 99, "train.lr": 0.01}, evaluated_params={})
    warm_trial = SimpleNamespace(trial_id="warm", config=dict(warm), evaluated_params={})
    for t in (late, warm_trial):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, late, _result(1, 0.5, 20.0)) == TrialScheduler.STOP
    assert sched.on_trial_result(None, warm_trial, _result(1, 0.5, 20.0)) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, warm_trial, _result(9, 0.5, 20.0)) == TrialScheduler.STOP  # at max_t


def test_pbt_starting_configs_are_plain_values_a_resume_keeps():
    """Tune keeps a ``sample_from`` function as a placeholder in each trial's unresolved config and calls
    it again on resume: every restored PBT trial got a new random network and failed on its checkpoint."""
    import copy

    from ray.tune.impl.placeholder import create_resolvers_map, inject_placeholders

    from nasq_ray.search.schedulers import PBT_ARCH_KEY, pbt_param_space

    space = load_space("digits_small")
    param_space = pbt_param_space(space, seed=3, num_samples=5)
    resolvers = create_resolvers_map()
    inject_placeholders(copy.deepcopy(param_space), resolvers)
    assert not resolvers  # nothing Tune would resolve (call) again
    configs = param_space[PBT_ARCH_KEY]["grid_search"]
    assert len(configs) == 5 and all(space.validate(c) == c for c in configs)
    assert configs == pbt_param_space(space, seed=3, num_samples=5)[PBT_ARCH_KEY]["grid_search"]  # the seed's
    assert len({str(sorted(c.items())) for c in configs}) > 1
