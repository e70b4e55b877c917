"""Trials per minute: the default search through Ray Tune against a plain in-process Optuna loop.

The peer is what a user would write without nasq-ray: ``study.optimize`` in one process, calling
the same trial function (``nasq_ray.trials.trained.run_trial``: same space, data, epochs and objective) for
the same number of trials, with torch's default thread count. Three pairings:

* ``default``: nasq-ray's default search (TPE + ASHA, one trial per core) against that plain loop
  (TPE, every trial trained to the end): the comparison the issue asks for;
* ``fifo``: both sides train every trial to the end: Ray's parallelism minus its overhead;
* ``asha``: both sides stop early by the same rule: ASHA against Optuna's asynchronous
  successive-halving pruner with the same rungs.

Ray's own overhead per trial = (wall time x concurrent trials - summed trial time) / trials, that
is, the slot time not spent inside a trial (start-up, scheduling, checkpoints, idle slots).

Each pairing runs ``--repeats`` times, Ray and the loop alternating, and reports the median ratio:
a single run varies by +-20% (machine noise, and which trials ASHA stops depends on the order their
results arrive).

    python benchmarks/throughput.py [--num-samples 24] [--pairs default,fifo,asha] [--repeats 3]
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

from nasq_ray.config import from_dict
from nasq_ray.data import load_dataset
from nasq_ray.objective import ObjectiveConfig
from nasq_ray.space import load_space
from nasq_ray.search.strategies._optuna import suggest_param
from nasq_ray.trials.trained import TrialContext, run_trial


class _Pruned(Exception):
    pass


def optuna_loop(n_trials: int, max_epochs: int, prune: bool, seed: int) -> tuple[float, float]:
    """Wall seconds and summed trial seconds of a plain Optuna loop over ``run_trial``."""
    t0 = time.time()
    data = load_dataset("digits")
    space = load_space("digits_small", data.input_shape, data.num_classes)
    ctx = TrialContext(space, data.train, data.val, max_epochs, ObjectiveConfig(), seed=seed,
                       threads=torch.get_num_threads())
    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, max_epochs // 5), reduction_factor=3)
              if prune else optuna.pruners.NopPruner())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    busy = [0.0]

    def objective(trial):
        cfg = space.walk(lambda prm, view: suggest_param(trial, prm))
        last = {}
        start = time.time()

        def report(metrics, state):
            last.update(metrics)
            trial.report(metrics["score"], metrics["epoch"])
            if trial.should_prune():
                raise _Pruned

        try:
            run_trial(cfg, ctx, report)
        except _Pruned:
            busy[0] += time.time() - start
            raise optuna.TrialPruned() from None
        busy[0] += time.time() - start
        return last["score"]

    study.optimize(objective, n_trials=n_trials)
    return time.time() - t0, busy[0]


def ray_search(n_trials: int, max_epochs: int, scheduler: str, seed: int, out: str) -> tuple[float, float, int]:
    """Wall seconds (including Ray's start), summed trial seconds and concurrency of a nasq-ray search."""
    import ray

    from nasq_ray.search.driver import run_search

    t0 = time.time()
    cfg = from_dict({"name": f"tp-{scheduler}-{seed}", "out": out, "quiet": True,
                     "search": {"num_samples": n_trials, "max_epochs": max_epochs, "scheduler": scheduler,
                                "seed": seed}})
    result = run_search(cfg)
    wall = time.time() - t0
    slots = int(ray.cluster_resources().get("CPU", 1))
    ray.shutdown()
    return wall, sum(r.time_s for r in result.records), slots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-samples", type=int, default=24)
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--pairs", default="default,fifo,asha")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = args.num_samples
    print(f"digits_small, {n} trials x up to {args.max_epochs} epochs, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, optuna {optuna.__version__}")
    print(f"{'pairing':<8} {'runner':<28} {'wall_s':>7} {'trials/min':>10} {'trial_s':>8}")
    loops: dict[tuple[bool, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as out:
        for pair in args.pairs.split(","):
            scheduler = "fifo" if pair == "fifo" else "asha"
            prune = pair == "asha"
            ratios = []
            for rep in range(args.repeats):
                wall_r, busy_r, slots = ray_search(n, args.max_epochs, scheduler, args.seed, f"{out}/{pair}{rep}")
                if (prune, rep) not in loops:
                    loops[prune, rep] = optuna_loop(n, args.max_epochs, prune, args.seed)
                wall_o, busy_o = loops[prune, rep]
                tpm_r, tpm_o = n / wall_r * 60, n / wall_o * 60
                ratios.append(tpm_r / tpm_o)
                overhead = (wall_r * slots - busy_r) / n
                peer = "plain Optuna loop" + (" + SHA pruner" if prune else "")
                print(f"{pair:<8} {'nasq-ray, Ray Tune + ' + scheduler:<28} {wall_r:>7.1f} {tpm_r:>10.1f} {busy_r:>8.1f}")
                print(f"{pair:<8} {peer:<28} {wall_o:>7.1f} {tpm_o:>10.1f} {busy_o:>8.1f}")
                print(f"{pair:<8} ratio (Ray / Optuna) = {tpm_r / tpm_o:.2f}; Ray overhead per trial = "
                      f"{overhead:.2f} s of slot time ({slots} slots)", flush=True)
            if args.repeats > 1:
                print(f"{pair:<8} median ratio over {args.repeats} runs = {statistics.median(ratios):.2f} "
                      f"(min {min(ratios):.2f}, max {max(ratios):.2f})", flush=True)


if __name__ == "__main__":
    main()
