"""Every registered strategy passes the same conformance checks, and finds better configs than its
first suggestions on a tiny space; strategy-specific behaviour."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from optuna.trial import TrialState

from nasq_ray.errors import ConfigError, UnknownNameError
from nasq_ray.objective import ObjectiveConfig, hypervolume
from nasq_ray.space import SearchSpace
from nasq_ray.space import load_space
from nasq_ray.search.strategies import FINISHED, SEARCHERS, make_searcher
from nasq_ray.testing import check_strategy, run_in_process, synthetic_result

FLAT = {
    "name": "flat", "input": "image",
    "stages": [{"channels": [4, 8, 16], "ops": "conv3x3"}],
    "quant": {"w_bits": [2, 4, 8], "a_bits": [4, 8]},
    "train": {"lr": {"low": 0.001, "high": 0.1, "log": True}},
}
# hawq needs a trained model's layer sensitivities: it has its own conformance test below
GENERIC = sorted(set(SEARCHERS) - {"hawq"})
TABLE_LIKE = [n for n in GENERIC if n not in ("dnas", "given")]  # dnas trains, given proposes nothing: own tests
# a GP fit per suggestion makes gp ~50x slower than the others here: it gets its own shorter checks
QUICK = [n for n in TABLE_LIKE if n != "gp"]


def _flat_space():
    return SearchSpace(FLAT, (1, 8, 8), 10, source="flat")


@pytest.mark.parametrize("name", GENERIC)
@pytest.mark.parametrize("multi", [False, True])
def test_conformance_on_default_space(name, multi):
    check_strategy(SEARCHERS[name], load_space("digits_small"), ObjectiveConfig(multi=multi))


@pytest.mark.parametrize("name", GENERIC)
def test_conformance_on_flat_space(name):
    space = _flat_space()
    assert space.is_flat
    check_strategy(SEARCHERS[name], space, ObjectiveConfig(multi=name == "nsga2"))


def _model_space_and_sensitivity():
    from nasq_ray.hawq import BitSensitivity
    from nasq_ray.models.pruning import PruneGroup
    from nasq_ray.models.user import LayerInfo
    from nasq_ray.space.model_space import ModelSpace

    layers = [LayerInfo(f"c{i}", "conv", f"c{i}", i == 0, i == 3, 4, 4, 1) for i in range(4)]
    space = ModelSpace({"quant": {"w_bits": [2, 4, 8], "a_bits": [4, 8]}, "prune": {"keep": [1.0, 0.5]}},
                       layers, [PruneGroup("c1", "c1", 4, ("c1",), ("c2",))], (1, 8, 8), 10, source="model")
    units = tuple(f"c{i}" for i in range(4))
    choices = ((2, 4), (4, 4), (8, 8))
    omega = {u: {c: (i + 1) * 4.0 ** -c[0] for c in choices} for i, u in enumerate(units)}
    cost = {u: {c: 100.0 * c[0] for c in choices} for u in units}
    sens = BitSensitivity("size_bits", units, choices, omega, cost, 0.0, space.default_config())
    return space, sens


def test_given_proposes_only_the_warm_start_configs():
    assert make_searcher("given", load_space("digits_small"), ObjectiveConfig()).suggest("0") == FINISHED


def test_hawq_conforms_and_proposes_one_config_per_budget_then_finishes():
    space, sens = _model_space_and_sensitivity()
    check_strategy(SEARCHERS["hawq"], space, ObjectiveConfig(cost="size_bits"), sensitivity=sens, budget=4)
    s = make_searcher("hawq", space, ObjectiveConfig(cost="size_bits"), budget=4, sensitivity=sens)
    configs = [s.suggest(str(k)) for k in range(4)]
    assert s.suggest("4") == FINISHED and len({str(c) for c in configs}) == 4
    costs = [sens.total_cost({u: (c[f"{u}.w_bits"], c[f"{u}.a_bits"]) for u in sens.units}) for c in configs]
    assert costs[0] == 800 and costs[-1] == 3200 and costs == sorted(costs)  # all at 2 bits ... all at 8
    from nasq_ray.hawq import spread_budgets

    assert all(c <= b + 1e-9 for c, b in zip(costs, spread_budgets(sens, 4)))  # each within its budget
    with pytest.raises(ConfigError, match="only a user-model run gives"):
        make_searcher("hawq", load_space("digits_small"), ObjectiveConfig())
    with pytest.raises(ConfigError, match="below the cheapest choice"):
        make_searcher("hawq", space, ObjectiveConfig(), sensitivity=sens, budgets=[10])


# --------------------------------------------------------------- finds better than its first suggestions

TOY = {"name": "toy", "params": {f"x{i}": ["a", "b", "c", "d"] for i in range(5)}}
_WEIGHTS = np.random.default_rng(7).normal(size=(5, 4))


def toy_metrics(cfg: dict) -> tuple[float, float]:
    """A fixed landscape over 4^5 configs: accuracy additive plus one interaction; cost additive."""
    idx = [("abcd").index(cfg[f"x{i}"]) for i in range(5)]
    acc = sum(_WEIGHTS[i, v] for i, v in enumerate(idx)) + (1.0 if idx[0] == idx[1] else 0.0)
    cost = 1.0 + sum(idx) + 0.5 * idx[2]
    return float(acc), float(cost)


def _run(name: str, multi: bool, budget: int, seed: int) -> list[tuple[float, float]]:
    space = SearchSpace(TOY, source="toy")
    obj = ObjectiveConfig(form="acc", cost="cost", multi=multi)
    s = make_searcher(name, space, obj, seed=seed, budget=budget)

    def evaluate(cfg):
        acc, cost = toy_metrics(cfg)
        return {"val_acc": acc, "cost": cost, "score": acc, "epoch": 1, "status": "complete"}

    return [(r["val_acc"], r["cost"]) for _, r in run_in_process(s, evaluate, budget)]


@pytest.mark.parametrize("name", QUICK)
def test_single_objective_beats_its_first_suggestions(name):
    # in most seeds the best of 55 later suggestions beats the best of the first 5 (random's first 5
    # are sometimes lucky: 4 of 6 is what it reaches; every strategy that learns reaches 5 or 6)
    wins = 0
    for seed in range(6):
        found = _run(name, multi=False, budget=60, seed=seed)
        wins += max(a for a, _ in found[5:]) > max(a for a, _ in found[:5])
    assert wins >= 4, f"{name}: {wins}/6"


@pytest.mark.parametrize("name", QUICK)
def test_multi_objective_front_beats_its_first_suggestions(name):
    ref = (-6.0, 20.0)
    for seed in range(6):
        found = _run(name, multi=True, budget=60, seed=seed)
        assert hypervolume(found, ref, ("max", "min")) > hypervolume(found[:5], ref, ("max", "min")), f"{name} {seed}"


def test_gp_beats_its_first_suggestions_single_and_multi_objective():
    # 10 random start-up trials, then the GP: its 20 suggestions beat the random start
    for seed in range(2):
        found = _run("gp", multi=False, budget=30, seed=seed)
        assert max(a for a, _ in found[10:]) > max(a for a, _ in found[:10]), seed
        found = _run("gp", multi=True, budget=30, seed=seed)
        ref = (-6.0, 20.0)
        assert hypervolume(found, ref, ("max", "min")) > hypervolume(found[:10], ref, ("max", "min")), seed


def test_gp_asks_every_parameter_so_its_space_keeps_one_shape():
    space = load_space("digits_small")  # conditional: a stage's third block exists only at depth 3
    s = make_searcher("gp", space, ObjectiveConfig(), seed=0)
    cfgs = [s.suggest(str(k)) for k in range(4)]
    assert len({len(c) for c in cfgs}) > 1  # the configs differ in which parameters are active
    trials = s.study.get_trials(deepcopy=False)
    assert all(set(t.params) == set(space.names) for t in trials)


def test_optuna_strategies_leave_a_sampler_stuck_on_finished_configs():
    # a space of 3 configs: once all are done, a sampler proposing them again gets unseen configs
    # tried (none left: FINISHED) after a few repeats, not MAX_REJECTIONS GP fits
    space = SearchSpace({"name": "three", "params": {"x": ["a", "b", "c"]}}, source="three")
    obj = ObjectiveConfig(form="acc", cost="cost")
    for name in ("gp", "tpe"):
        s = make_searcher(name, space, obj, seed=0)
        for k in range(3):
            cfg = s.suggest(str(k))
            assert isinstance(cfg, dict), (name, k)
            s.on_trial_complete(str(k), cfg, {"status": "complete", "score": 0.1 * k, "val_acc": 0.1 * k, "cost": 1.0})
        assert s.suggest("3") == FINISHED, name
        assert len(s.study.get_trials(deepcopy=False)) < 20, name


def test_ehvi_matches_a_brute_force_expected_hypervolume_improvement():
    from nasq_ray.search.strategies._ehvi import ehvi_2d

    rng = np.random.default_rng(0)
    front, ref = np.array([[0.9, -5.0], [0.8, -3.0], [0.6, -1.0]]), np.array([0.0, -10.0])
    mu, sd, cost = np.array([0.85, 0.7, 0.95]), np.array([0.05, 0.2, 0.01]), np.array([-4.0, -0.5, -8.0])
    exact = ehvi_2d(front, ref, mu, sd, cost)
    base = hypervolume(front, ref, ("max", "max"))
    for k in range(3):
        draws = rng.normal(mu[k], sd[k], 20000)
        mc = np.mean([hypervolume(np.vstack([front, [a, cost[k]]]), ref, ("max", "max")) - base for a in draws[:4000]])
        assert exact[k] == pytest.approx(mc, rel=0.05, abs=1e-4), k
    assert ehvi_2d(front, ref, [0.5], [1e-9], [-6.0])[0] == pytest.approx(0.0, abs=1e-12)  # dominated for sure


def test_ehvi_uses_the_exact_cost_and_keeps_to_the_budget():
    # the cost model, not a regression, decides the cost of a candidate; none over max_cost is proposed
    space = SearchSpace(TOY, source="toy")
    calls = []

    def cost_model(cfg):
        calls.append(cfg)
        return toy_metrics(cfg)[1]

    obj = ObjectiveConfig(form="acc", cost="cost", multi=True, max_cost=7.0)
    s = make_searcher("ehvi", space, obj, seed=0, budget=30, cost_model=cost_model)
    found = run_in_process(s, lambda cfg: {"val_acc": toy_metrics(cfg)[0], "cost": toy_metrics(cfg)[1],
                                           "score": 0.0, "epoch": 1, "status": "complete"}, 30)
    assert calls and all(r["cost"] <= 7.0 for _, r in found)
    assert "cost_model" not in s.get_state()


def test_model_guided_strategies_beat_random_on_average():
    def hv(name):
        return np.mean([hypervolume(_run(name, True, 30, s), (-6.0, 20.0), ("max", "min")) for s in range(8)])

    base = hv("random")
    for name in ("greedy", "tpe", "ehvi"):
        assert hv(name) > base, name


# ------------------------------------------------------------------------------ strategy specifics

def test_no_strategy_of_ours_suggests_a_config_twice():
    for name in ("random", "grid", "evolution", "greedy", "anneal", "tpe", "nsga2", "ehvi"):
        space = SearchSpace(TOY, source="toy")
        s = make_searcher(name, space, ObjectiveConfig(form="acc", cost="cost", multi=True), seed=1, budget=60)
        seen = set()
        for k in range(60):
            cfg = s.suggest(str(k))
            key = tuple(sorted(cfg.items()))
            if name != "random":
                assert key not in seen, name
            seen.add(key)
            acc, cost = toy_metrics(cfg)
            s.on_trial_complete(str(k), cfg, {"val_acc": acc, "cost": cost, "score": acc, "status": "complete"})


def test_grid_enumerates_a_small_space_exactly_once_then_finishes():
    space = SearchSpace({"params": {"a": [1, 2, 3], "b": ["x", "y"]}}, source="g")
    for order in ("maximin", "random", "lexicographic"):
        s = make_searcher("grid", space, ObjectiveConfig(), order=order)
        got = [s.suggest(str(k)) for k in range(7)]
        assert got[-1] == FINISHED
        assert sorted((c["a"], c["b"]) for c in got[:-1]) == sorted((a, b) for a in (1, 2, 3) for b in "xy")
    lex = make_searcher("grid", space, ObjectiveConfig(), order="lexicographic")
    assert [lex.suggest("k") for _ in range(2)] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}]


def test_grid_maximin_spreads_its_first_points():
    space = SearchSpace(TOY, source="toy")
    s = make_searcher("grid", space, ObjectiveConfig(), seed=0)
    first = [s.suggest(str(k)) for k in range(4)]
    dist = [sum(a[k] != b[k] for k in a) for i, a in enumerate(first) for b in first[i + 1:]]
    assert min(dist) >= 3  # random pairs of 5 4-valued params differ in 3.75 places on average


def test_evolution_mutates_one_decision_of_a_tournament_winner():
    space = load_space("digits_small")
    s = make_searcher("evolution", space, ObjectiveConfig(), seed=0, population_size=4, sample_size=2)
    pop = []
    for k in range(4):
        cfg = s.suggest(str(k))
        pop.append(cfg)
        s.on_trial_complete(str(k), cfg, synthetic_result(cfg, ObjectiveConfig()))
    child = s.suggest("child")
    parents = [p for p in pop if sum(p.get(k) != child.get(k) for k in set(p) | set(child)) <= 40]
    # the child differs from some population member in one decision (plus parameters that a
    # structural change switched on or off)
    changed = min(sum(1 for k in p if k in child and p[k] != child[k]) for p in pop)
    assert changed == 1 and parents


def test_anneal_temperature_falls_over_the_budget():
    s = make_searcher("anneal", _flat_space(), ObjectiveConfig(), seed=0, budget=11, t_start=1.0, t_end=0.01)
    temps = []
    for k in range(11):
        cfg = s.suggest(str(k))
        temps.append(s.temperature())
        s.on_trial_complete(str(k), cfg, synthetic_result(cfg, ObjectiveConfig()))
    assert temps[0] == pytest.approx(1.0) and temps[-1] == pytest.approx(0.01)
    assert temps[5] == pytest.approx(0.1)  # geometric: halfway in steps, halfway in log-temperature
    assert all(a > b for a, b in zip(temps, temps[1:]))


def test_greedy_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="model"):
        make_searcher("greedy", _flat_space(), ObjectiveConfig(), model="forest")
    with pytest.raises(ConfigError, match="reference"):
        make_searcher("greedy", _flat_space(), ObjectiveConfig(multi=True), reference=[1.0])


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


def test_dnas_refuses_tables_and_bad_ranges():
    with pytest.raises(ConfigError, match="super-network"):
        make_searcher("dnas", load_space("nb201"), ObjectiveConfig())
    with pytest.raises(ConfigError, match="cost_weight"):
        make_searcher("dnas", load_space("digits_small"), ObjectiveConfig(), cost_weight=[0.0, 1.0])


def test_unknown_searcher_and_bad_arguments():
    space = _flat_space()
    with pytest.raises(UnknownNameError, match="allowed: .*random.*tpe"):
        make_searcher("tpee", space, ObjectiveConfig())
    with pytest.raises(ConfigError, match="searcher_args"):
        make_searcher("random", space, ObjectiveConfig(), bogus=1)
    with pytest.raises(ConfigError, match="searcher_args: searcher 'tpe'.*does not accept \\['n_startup_trialz'\\]; "
                                          "allowed: .*n_startup_trials"):
        make_searcher("tpe", space, ObjectiveConfig(), n_startup_trialz=3)
    # a value of the wrong kind (Optuna would fail on it at the first suggestion, inside Ray)
    for name, args in (("tpe", {"n_startup_trials": "abc"}), ("nsga2", {"population_size": "8"}),
                       ("ehvi", {"n_random": [1]}), ("gp", {"deterministic_objective": 1})):
        with pytest.raises(ConfigError, match=f"searcher_args: {next(iter(args))}=.* is not allowed; allowed: "):
            make_searcher(name, space, ObjectiveConfig(multi=name == "ehvi"), **args)
    assert make_searcher("tpe", space, ObjectiveConfig(), n_startup_trials=4) is not None  # right kind: taken


def test_nsga2_asks_a_new_generation_only_when_the_last_one_has_ended():
    # Optuna assigns a trial's generation at ask time from the completed trials: trials asked while
    # a generation ran all joined it (generations overflowed; below random with 4 trials in flight)
    from nasq_ray.search.strategies._optuna import NSGA2Strategy

    space = load_space("nb201")
    objective = ObjectiveConfig(cost="macs", multi=True)
    s = NSGA2Strategy(space, objective, seed=0, population_size=4)
    first = [s.suggest(f"t{k}") for k in range(4)]
    assert all(isinstance(c, dict) for c in first) and s.suggest("t4") is None
    numbers = {tid: s.live[tid].number for tid in s.live}

    def generation(tid):
        numbers.update({k: v.number for k, v in s.live.items()})
        trial = s.study.get_trials(deepcopy=False)[numbers[tid]]
        return trial.system_attrs.get(s.study.sampler._get_generation_key())

    assert {generation(f"t{k}") for k in range(4)} == {0}
    for k, cfg in enumerate(first[:3]):
        s.on_trial_complete(f"t{k}", cfg, {"status": "complete", "val_acc": 0.5 + k / 10, "macs": 1e6 * (k + 1)})
    assert s.suggest("t4") is None  # t3 still runs
    s.on_trial_complete("t3", first[3], {"status": "complete", "val_acc": 0.6, "macs": 2e6})
    assert isinstance(s.suggest("t4"), dict) and generation("t4") == 1
    restored = NSGA2Strategy(space, objective, seed=0, population_size=4)
    restored.set_state(pickle.loads(pickle.dumps(s.get_state())))
    assert restored.asked_in_generation == 1


def test_run_in_process_keeps_trials_in_flight_and_waits_on_none():
    from nasq_ray.search.strategies import BaseStrategy

    class Probe(BaseStrategy):
        def __init__(self, space, objective, seed=0):
            super().__init__(space, objective, seed)
            self.outstanding, self.most, self.k = set(), 0, 0

        def suggest(self, trial_id):
            if len(self.outstanding) >= 2:
                return None  # waits for a trial to end, as NSGA-II does between generations
            self.outstanding.add(trial_id)
            self.most = max(self.most, len(self.outstanding))
            self.k += 1
            return {"train.lr": 0.01 * self.k}

        def on_trial_complete(self, trial_id, config, result):
            self.outstanding.discard(trial_id)

    probe = Probe(load_space("digits_small"), ObjectiveConfig())
    done = run_in_process(probe, lambda cfg: {"status": "complete", "score": 1.0}, budget=7, in_flight=3)
    assert len(done) == 7 and probe.most == 2 and not probe.outstanding
