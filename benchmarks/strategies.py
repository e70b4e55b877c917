"""Strategies compared on NAS-Bench-201 (tabular) and on real training (digits).

Tabular part: on the mini NAS-Bench-201 table with objectives (accuracy max, macs min; accuracy
columns ``--acc``, several separated by commas, default cifar10 and cifar100), every built-in
strategy that can run on a table (all but ``dnas``, which trains a super-network) at budgets 50, 100
and 200 trials, ``--seeds`` seeds each, in multi-objective mode. Score: hypervolume of the found
front / hypervolume of the true front, reference point = the true front's nadir plus 10% of each
objective's range (Optuna's hypervolume routine). Trials run in process, one at a time (the
strategy loop without Ray); strategies get the table's cost column as their cost model, as a run
through the CLI does. Peers: plain Optuna ``RandomSampler``, ``TPESampler(multivariate=True)``,
``NSGAIISampler`` and ``GPSampler`` in their own ``study.optimize`` loop. A runner whose suggestions
do not depend on the budget (the Optuna peers; nasq-ray's ``tpe``, ``gp``, ``nsga2``, ``random``)
runs once per seed at the largest budget and is scored on its first 50, 100, ... trials: the same
numbers as separate runs, in a third of the time.

Real part (``--real-seconds S``): each strategy runs the default search (digits_small, training)
through Ray for S seconds of wall time; reported: trials finished and the hypervolume of the
(val_acc, size_kb) front, with a reference point shared by all runs.

``--acc COLUMNS`` picks the table's accuracy columns (``cifar10_val_acc``, ``cifar100_val_acc``,
``imagenet16_val_acc``); ``--in-flight N`` keeps N nasq-ray trials outstanding at once, as Ray does
on N slots (the oldest ends first; the Optuna peers run one at a time); ``--only a,b`` limits the
nasq-ray strategies; ``--cli`` also runs them (100 trials per seed) through ``python -m nasq_ray.run``
and Ray, as a user does.

    python benchmarks/strategies.py [--seeds 10] [--budgets 50,100,200] [--acc COL,COL] [--in-flight 1]
                                    [--only NAMES] [--peers random,tpe,nsga2,gp] [--real-seconds 0]
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time
import warnings

import numpy as np
import optuna

from nasq_ray.objective import ObjectiveConfig, hypervolume, pareto_mask
from nasq_ray.space import load_space
from nasq_ray.search.strategies import SEARCHERS, get_searcher, make_searcher
from nasq_ray.search.strategies._optuna import one_torch_thread
from nasq_ray.testing import run_in_process
from nasq_ray.trials.table import Table, TableCost

MODES = ("max", "min")
TABULAR = [n for n in sorted(SEARCHERS) if n != "dnas"]


def load_nb201(acc: str | None = None):
    space = load_space("nb201")
    t = space.table
    table = Table(t["path"], space, acc or t["acc"], t["cost"])
    points = np.array([(r[table.acc], r[t["cost"]]) for r in table.rows.values()])
    front = points[pareto_mask(points, MODES)]
    nadir = np.array([front[:, 0].min(), front[:, 1].max()])
    ideal = np.array([front[:, 0].max(), front[:, 1].min()])
    ref = np.array([nadir[0] - 0.1 * (ideal[0] - nadir[0]), nadir[1] + 0.1 * (nadir[1] - ideal[1])])
    return space, table, ref, hypervolume(front, ref, MODES)


def run_nasq(name, space, table, budget, seed, in_flight=1):
    obj = ObjectiveConfig(cost=table.cost, multi=True)
    strategy = make_searcher(name, space, obj, seed=seed, budget=budget, cost_model=TableCost(table))

    def evaluate(cfg):
        row = table.lookup(cfg)
        return {"val_acc": row[table.acc], table.cost: row[table.cost], "epoch": 1, "status": "complete",
                "score": row[table.acc]}

    return [(r["val_acc"], r[table.cost]) for _, r in run_in_process(strategy, evaluate, budget, in_flight)]


def run_optuna(kind, space, table, budget, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = {"random": lambda: optuna.samplers.RandomSampler(seed=seed),
                   "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
                   "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
                   "gp": lambda: optuna.samplers.GPSampler(seed=seed)}[kind]()
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    found = []

    def objective(trial):
        cfg = {p.name: trial.suggest_categorical(p.name, list(p.domain.values)) for p in space.params}
        row = table.lookup(cfg)
        found.append((row[table.acc], row[table.cost]))
        return row[table.acc], row[table.cost]

    with one_torch_thread():  # as nasq-ray's gp runs its GP
        study.optimize(objective, n_trials=budget)
    return found


def budget_free(name: str) -> bool:
    """Whether a nasq-ray strategy's suggestions do not depend on the run's budget (it takes none)."""
    return "budget" not in inspect.signature(get_searcher(name)).parameters


def tabular(seeds: int, budgets: list[int], acc: str | None = None, in_flight: int = 1,
            only: list[str] | None = None, peers: tuple[str, ...] = ("random", "tpe", "nsga2", "gp")) -> None:
    space, table, ref, hv_true = load_nb201(acc)
    print(f"NB201 tabular: {len(table)} cells, objectives ({table.acc} max, {table.cost} min), reference point "
          f"({ref[0]:.3f}, {ref[1]:.4g}), true front hypervolume {hv_true:.6g}; {seeds} seeds; nasq-ray trials "
          f"in flight: {in_flight}; mean +- std of HV(found) / HV(true)")
    runners = [(f"nasq-ray {n}", lambda b, s, n=n: run_nasq(n, space, table, b, s, in_flight),
                budget_free(n) and in_flight == 1) for n in TABULAR if not only or n in only]
    runners += [(f"optuna {k} (peer)", lambda b, s, k=k: run_optuna(k, space, table, b, s), True) for k in peers]
    print(f"{'strategy':<28}" + "".join(f"{f'{b} trials':>18}" for b in budgets) + f"{'s/seed':>8}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for label, fn, prefixes in runners:
        t0 = time.time()
        ratios: dict[int, list[float]] = {b: [] for b in budgets}
        for seed in range(seeds):
            if prefixes:  # one run at the largest budget, scored on its first b trials
                found = fn(max(budgets), seed)
                for b in budgets:
                    ratios[b].append(hypervolume(found[:b], ref, MODES) / hv_true)
            else:
                for b in budgets:
                    ratios[b].append(hypervolume(fn(b, seed), ref, MODES) / hv_true)
        cells = [f"{statistics.mean(r):.3f} +- {statistics.stdev(r) if len(r) > 1 else 0:.3f}" for r in ratios.values()]
        per_seed = (time.time() - t0) / seeds
        print(f"{label:<28}" + "".join(f"{c:>18}" for c in cells) + f"{per_seed:>8.2f}", flush=True)


def through_cli(names: list[str], seeds: int, budget: int, acc: str | None) -> None:
    """The tabular comparison as a user runs it: ``python -m nasq_ray.run --space nb201`` through Ray
    (two trial slots), one run per strategy and seed; HV ratio of the complete trials' front."""
    import csv
    import subprocess
    import sys
    import tempfile

    space, table, ref, hv_true = load_nb201(acc)
    print(f"\nThrough the CLI and Ray: nb201, {table.acc} vs macs, {budget} trials, {seeds} seeds; HV(found) / HV(true)")
    with tempfile.TemporaryDirectory() as out:
        for name in names:
            ratios = []
            for seed in range(seeds):
                p = subprocess.run([sys.executable, "-m", "nasq_ray.run", "--space", "nb201", "--table-acc", table.acc,
                                    "--searcher", name, "--objective", "multi", "--num-samples", str(budget),
                                    "--seed", str(seed), "--out", out, "--name", f"{name}{seed}", "--quiet"],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"{name} seed {seed} failed: {p.stderr[-800:]}")
                with open(f"{out}/{name}{seed}/trials.csv") as f:
                    pts = [(float(r["val_acc"]), float(r["macs"])) for r in csv.DictReader(f) if r["status"] == "complete"]
                ratios.append(hypervolume(pts, ref, MODES) / hv_true)
            print(f"{name:<12} {statistics.mean(ratios):.3f} +- {statistics.stdev(ratios) if seeds > 1 else 0:.3f}  "
                  + " ".join(f"{r:.3f}" for r in ratios), flush=True)


def real(seconds: float, seed: int) -> None:
    import tempfile

    import ray

    from nasq_ray.config import from_dict
    from nasq_ray.search.driver import run_search

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    print(f"\nReal training (digits_small, TPE/ASHA defaults otherwise), {seconds:.0f} s of wall time per strategy, "
          f"seed {seed}; hypervolume of the (val_acc, size_kb) front of complete trials, reference (0.5, 40 kB)")
    print(f"{'strategy':<14} {'trials':>6} {'complete':>8} {'front':>5} {'HV':>8} {'best val_acc':>12}")
    ref = (0.5, 40.0)
    with tempfile.TemporaryDirectory() as out:
        for name in sorted(SEARCHERS):
            cfg = from_dict({"name": name, "out": out, "quiet": True,
                             "search": {"searcher": name, "num_samples": 1000, "seed": seed,
                                        "time_budget_s": seconds}})
            res = run_search(cfg)
            ray.shutdown()
            done = [r for r in res.records if r.status == "complete"]
            pts = [(r.metrics["val_acc"], r.metrics["size_kb"]) for r in done]
            hv = hypervolume(pts, ref, MODES) if pts else 0.0
            best = max((p[0] for p in pts), default=float("nan"))
            print(f"{name:<14} {len(res.records):>6} {len(done):>8} {len(res.front):>5} {hv:>8.3f} {best:>12.4f}",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budgets", default="50,100,200")
    ap.add_argument("--acc", default="cifar10_val_acc,cifar100_val_acc", help="the table's accuracy columns, comma-separated")
    ap.add_argument("--in-flight", type=int, default=1, help="nasq-ray trials outstanding at once (1)")
    ap.add_argument("--only", default="", help="comma-separated nasq-ray strategies (default: all; none: only the peers)")
    ap.add_argument("--peers", default="random,tpe,nsga2,gp", help="plain Optuna peers (comma-separated; '' for none)")
    ap.add_argument("--cli", action="store_true", help="also run the --only strategies through the CLI and Ray")
    ap.add_argument("--real-seconds", type=float, default=0.0)
    ap.add_argument("--real-seed", type=int, default=0)
    args = ap.parse_args()
    columns = [c for c in args.acc.split(",") if c]
    for k, acc in enumerate(columns):
        if k:
            print()
        tabular(args.seeds, [int(b) for b in args.budgets.split(",")], acc, args.in_flight,
                [n for n in args.only.split(",") if n], tuple(p for p in args.peers.split(",") if p))
    if args.cli:
        for acc in columns:
            through_cli([n for n in args.only.split(",") if n] or TABULAR, args.seeds, 100, acc)
    if args.real_seconds > 0:
        real(args.real_seconds, args.real_seed)


if __name__ == "__main__":
    main()
