"""Fronts at a fixed wall-clock budget: nasq-ray's default search and ``gp`` against the plain Optuna loop.

The user's comparison on the default space (digits_small, embedded digits data): each runner gets
``S`` seconds of wall time from the moment it is called (nasq-ray: Ray's start included), then the
hypervolume of the (val_acc max, size_kb min) front of the trials that trained for the full epochs
is measured (each runner also gives its points' finishing times, for fronts over time), reference point (0.5, 40 kB) as in ``benchmarks/strategies.py``.

* ``nasq-ray default``: ``run_search`` with no search settings (TPE + ASHA, one trial per core,
  the mnas score), ``search.time_budget_s`` set so that Ray's start counts against the budget;
* ``nasq-ray gp``: the same with ``--searcher gp --objective multi`` (the GP on (val_acc, size_kb));
* ``optuna loop + SHA``: what a user writes without nasq-ray (the peer of ``throughput.py``):
  ``study.optimize`` in one process over the same trial function (``run_trial``: same space, data,
  epochs and score), TPE and Optuna's successive-halving pruner with ASHA's rungs, torch's default
  thread count; a trial still running at the deadline is cut, as Ray's time budget cuts its trials.

Besides the hypervolume it prints how each runner spent its time: trials started, trained to the end
(complete), and stopped early (pruned, or cut at the deadline); and, per budget, each nasq-ray runner
against the peer seed by seed (mean difference, its standard error, seeds ahead).

    python benchmarks/wallclock.py [--budgets 120,300] [--seeds 3] [--first-seed 0] [--runners default,gp,optuna]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import optuna
import torch

from nasq_ray.objective import ObjectiveConfig, hypervolume

REF = (0.5, 40.0)
MODES = ("max", "min")
MAX_EPOCHS = 15  # the default


class _Stop(Exception):
    pass


def optuna_loop(seconds: float, seed: int, space_name: str = "digits_small", data: dict | None = None,
                max_epochs: int = MAX_EPOCHS) -> dict:
    """The plain Optuna loop (TPE + successive halving) over ``run_trial`` for ``seconds``; ``data``:
    the experiment's data section (default: the embedded digits)."""
    from nasq_ray.config import from_dict
    from nasq_ray.data import load_data
    from nasq_ray.space import load_space
    from nasq_ray.search.strategies._optuna import suggest_param
    from nasq_ray.trials.trained import TrialContext, run_trial

    t0 = time.time()
    deadline = t0 + seconds
    bundle = load_data(from_dict({"data": data or {}}).data)
    space = load_space(space_name, bundle.input_shape, bundle.num_classes)
    ctx = TrialContext(space, bundle.train, bundle.val, max_epochs, ObjectiveConfig(), seed=seed,
                       threads=torch.get_num_threads())
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, max_epochs // 5), reduction_factor=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    points, counts = [], {"started": 0, "complete": 0, "stopped": 0}

    def objective(trial):
        cfg = space.walk(lambda prm, view: suggest_param(trial, prm))
        counts["started"] += 1
        last = {}

        def report(metrics, state):
            if time.time() > deadline:
                raise _Stop
            last.update(metrics)
            trial.report(metrics["score"], metrics["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned

        try:
            run_trial(cfg, ctx, report)
        except _Stop:
            counts["stopped"] += 1
            study.stop()
            raise optuna.TrialPruned from None
        except optuna.TrialPruned:
            counts["stopped"] += 1
            raise
        if last.get("epoch") == max_epochs and last.get("status") == "complete":
            counts["complete"] += 1
            points.append((last["val_acc"], last["size_kb"], time.time() - t0))
        return last["score"]

    study.optimize(objective, timeout=seconds)
    return {**counts, "points": points, "wall_s": time.time() - t0}


def nasq(seconds: float, seed: int, extra: dict, out: str) -> dict:
    import ray

    from nasq_ray.config import from_dict
    from nasq_ray.search.driver import run_search
    from nasq_ray.search.session import init_ray

    t0 = time.time()
    raw = {"name": f"w{seed}-{int(seconds)}-{extra.get('search', {}).get('searcher', 'default')}", "out": out,
           "quiet": True, **extra}
    cfg = from_dict(raw)
    init_ray(cfg)  # Ray's start counts against the budget
    raw.setdefault("search", {})
    raw["search"] = {**raw["search"], "seed": seed, "num_samples": 100000,
                     "time_budget_s": max(1.0, seconds - (time.time() - t0))}
    res = run_search(from_dict(raw))
    wall = time.time() - t0
    ray.shutdown()
    done = [r for r in res.records if r.status == "complete"]
    return {"started": len(res.records), "complete": len(done), "stopped": len(res.records) - len(done),
            "points": front_points(done, t0), "wall_s": wall}


def front_points(records, t0: float) -> list[tuple[float, float, float]]:
    """(val_acc, size_kb, seconds from ``t0`` to the trial's last report) of each record."""
    return [(r.metrics["val_acc"], r.metrics["size_kb"], r.metrics.get("timestamp", 0) - t0) for r in records]


RUNNERS = {
    "default": lambda s, seed, out: nasq(s, seed, {}, out),
    "gp": lambda s, seed, out: nasq(s, seed, {"search": {"searcher": "gp"}, "objective": {"multi": True}}, out),
    "optuna": lambda s, seed, out: optuna_loop(s, seed),
}
LABELS = {"default": "nasq-ray default (TPE+ASHA)", "gp": "nasq-ray gp (multi)", "optuna": "optuna loop + SHA"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="120,300")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed .. first-seed + seeds - 1")
    ap.add_argument("--runners", default="default,gp,optuna")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runners = args.runners.split(",")
    print(f"digits_small, {MAX_EPOCHS} epochs per trial, {os.cpu_count()} CPUs; HV of the (val_acc, size_kb) front of "
          f"complete trials, reference {REF}")
    print(f"{'budget':>6} {'seed':>4} {'runner':<28} {'wall_s':>7} {'started':>7} {'complete':>8} {'stopped':>7} {'HV':>8}")
    table: dict[tuple[str, float], list[float]] = {}
    with tempfile.TemporaryDirectory() as out:
        for seconds in (float(b) for b in args.budgets.split(",")):
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for name in runners:  # interleaved, so that the machine's drift hits every runner alike
                    r = RUNNERS[name](seconds, seed, out)
                    hv = hypervolume([p[:2] for p in r["points"]], REF, MODES) if r["points"] else 0.0
                    table.setdefault((name, seconds), []).append(hv)
                    print(f"{seconds:>6.0f} {seed:>4} {LABELS[name]:<28} {r['wall_s']:>7.1f} {r['started']:>7} "
                          f"{r['complete']:>8} {r['stopped']:>7} {hv:>8.3f}", flush=True)
    print("\nmean +- std of HV over seeds")
    for (name, seconds), hvs in table.items():
        sd = statistics.stdev(hvs) if len(hvs) > 1 else 0.0
        print(f"{seconds:>6.0f} {LABELS[name]:<28} {statistics.mean(hvs):.3f} +- {sd:.3f}  "
              + " ".join(f"{h:.3f}" for h in hvs))
    for (name, seconds), hvs in table.items():  # each nasq-ray runner against the peer, seed by seed
        peer = table.get(("optuna", seconds))
        if name != "optuna" and peer and len(peer) == len(hvs):
            print(paired_line(f"{seconds:>6.0f} {LABELS[name]} - {LABELS['optuna']}", hvs, peer))


def paired_line(label: str, ours: list[float], peer: list[float]) -> str:
    """The per-seed difference ``ours - peer``: mean, its standard error, and the seeds ``ours`` leads on."""
    d = [a - b for a, b in zip(ours, peer)]
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
    return f"{label}: paired {statistics.mean(d):+.3f} +- {se:.3f} (SE), ahead on {sum(x > 0 for x in d)} of {len(d)} seeds"


if __name__ == "__main__":
    main()
