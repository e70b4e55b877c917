"""The searchers Ray sees: a cost budget held before training (``BudgetSearcher``)."""

from __future__ import annotations

import pickle

from optuna.trial import TrialState

from nasq_ray.objective import ObjectiveConfig
from nasq_ray.search.searchers import BudgetSearcher, StrategySearcher, budget_refusal
from nasq_ray.search.strategies import CONSTRAINT_ATTR, make_searcher
from nasq_ray.space import load_space
from nasq_ray.trials.table import Table, TableCost

MAX_MACS = 4.0e7  # about a third of NB201's cells cost more


def _nb201():
    space = load_space("nb201")
    table = Table(space.table["path"], space, "cifar10_val_acc", "macs")
    return space, table


def _result(table, cfg):
    row = table.lookup(cfg)
    return {"val_acc": row["cifar10_val_acc"], "macs": row["macs"], "score": row["cifar10_val_acc"], "epoch": 1}


def _run(name, objective, n=20, seed=0):
    space, table = _nb201()
    cost = TableCost(table)
    strategy = make_searcher(name, space, objective, seed=seed, cost_model=cost)
    searcher = BudgetSearcher(StrategySearcher(strategy, max_epochs=1), cost, objective)
    costs = []
    for k in range(n):
        cfg = searcher.suggest(f"t{k}")
        costs.append(cost(cfg))
        searcher.on_trial_complete(f"t{k}", _result(table, cfg))
    return searcher, strategy, costs


def test_no_config_over_the_budget_is_run_and_optuna_learns_the_refused_ones_as_infeasible():
    objective = ObjectiveConfig(cost="macs", multi=True, max_cost=MAX_MACS)
    for name in ("gp", "tpe", "random"):
        searcher, strategy, costs = _run(name, objective, n=14)
        assert max(costs) <= MAX_MACS, name
        assert searcher.refused > 0, name  # the samplers did propose configs over it
        if name == "random":
            continue
        trials = strategy.study.get_trials(deepcopy=False)
        infeasible = [t for t in trials if t.user_attrs.get(CONSTRAINT_ATTR, 0) > 0]
        assert infeasible and all(t.state == TrialState.COMPLETE and t.values[0] == 0.0 for t in infeasible), name
        assert all(t.user_attrs[CONSTRAINT_ATTR] <= 0 for t in trials if t not in infeasible), name
        if hasattr(infeasible[0], "constraints"):  # Optuna 5: the samplers read the trial's constraints
            assert all(t.constraints["max_cost"] > 0 for t in infeasible), name


def test_a_budget_searcher_maps_rays_ids_and_survives_a_restore(tmp_path):
    objective = ObjectiveConfig(cost="macs", multi=True, max_cost=MAX_MACS)
    searcher, _, _ = _run("tpe", objective, n=12)
    cfg = searcher.suggest("last")
    inner_id = searcher.alias["last"]
    (tmp_path / "driver").mkdir()
    (tmp_path / "storage").mkdir()
    searcher.save(str(tmp_path / "driver" / "s.pkl"))
    assert [p.name for p in (tmp_path / "driver").iterdir()] == ["s.pkl"]  # one file: Ray syncs that one only
    (tmp_path / "storage" / "s.pkl").write_bytes((tmp_path / "driver" / "s.pkl").read_bytes())
    fresh, _, _ = _run("tpe", objective, n=0)
    fresh.restore(str(tmp_path / "storage" / "s.pkl"))
    assert fresh.alias["last"] == inner_id and fresh.inner.configs[inner_id] == cfg
    space, table = _nb201()
    fresh.on_trial_complete("last", _result(table, cfg))
    assert "last" not in fresh.alias and inner_id not in fresh.inner.strategy.live


def test_history_strategies_do_not_build_on_trials_over_the_budget():
    space, table = _nb201()
    objective = ObjectiveConfig(cost="macs", multi=True, max_cost=MAX_MACS)
    s = make_searcher("greedy", space, objective, seed=0)
    cheap = next(c for c in (space.sample(k) for k in range(50)) if table.lookup(c)["macs"] <= MAX_MACS)
    dear = next(c for c in (space.sample(k) for k in range(50)) if table.lookup(c)["macs"] > MAX_MACS)
    for k, cfg in enumerate((cheap, dear)):
        s.on_trial_complete(str(k), cfg, {**_result(table, cfg), "status": "complete"})
    assert [h[0] for h in s.history] == [cheap]
    assert pickle.loads(pickle.dumps(s.get_state()))["history"][0][0] == cheap


def test_a_budget_no_config_meets_finishes_the_searcher_and_says_the_cheapest_cost_it_saw():
    from ray.tune.search import Searcher

    from nasq_ray.search.searchers import WarmStartSearcher

    space, table = _nb201()
    objective, seen = ObjectiveConfig(cost="macs", multi=True, max_cost=1.0), []
    cost = TableCost(table)

    def recorded_cost(cfg):
        seen.append(cost(cfg))
        return seen[-1]

    strategy = StrategySearcher(make_searcher("random", space, objective, seed=0), max_epochs=1)
    searcher = BudgetSearcher(WarmStartSearcher(strategy, [], max_epochs=1), recorded_cost, objective)  # as build_searcher
    assert budget_refusal(searcher) is None and not searcher.finished
    assert searcher.suggest("t0") == Searcher.FINISHED
    assert searcher.finished and searcher.kept == 0 and len(seen) == 500  # a finished search, not an interrupted one
    assert searcher.cheapest == min(seen)
    assert f"(1 macs; the cheapest config it refused: {min(seen):g})" in budget_refusal(searcher)


# ------------------------------------------------------------- a resumed run writes where it is now

def test_a_restored_search_generator_puts_new_trials_where_the_run_is_now(tmp_path):
    """Ray restores the generator's saved experiment with the storage it had: a copied or moved results
    folder's new trials went to the old folder."""
    from ray.tune.experiment import Experiment
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    from nasq_ray.search.searchers import base_searcher, restored_search_algorithm

    searcher = StrategySearcher(make_searcher("random", load_space("digits_small"), ObjectiveConfig(), seed=0), 2)
    saved = SearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=1))
    saved.add_configurations(Experiment("run", run=lambda config: None, storage_path=str(tmp_path / "old")))
    saved.save_to_dir(str(tmp_path), session_str="s")

    restored = restored_search_algorithm(searcher, 1, str(tmp_path / "new"), "copy")
    restored.restore_from_dir(str(tmp_path))
    storage = restored._experiment.spec["storage"]
    assert (storage.storage_fs_path, storage.experiment_dir_name) == (str(tmp_path / "new"), "copy")
    assert restored._experiment.storage.storage_fs_path == str(tmp_path / "new")
    assert restored.searcher.max_concurrent == 1 and base_searcher(restored) is searcher
    trial = restored.create_trial_if_possible(restored._experiment.spec)
    assert trial.storage.experiment_fs_path == f"{tmp_path}/new/copy"
