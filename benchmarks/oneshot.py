"""Train once, score thousands (issue 12): how well the super-network ranks sub-networks, and how
fast the one-shot pipeline reaches the fronts of per-trial searches.

Parts (``--parts``):

* ``tau`` - per space: the super-network trained in process (``--supernet-epochs``, timed), then
  ``--configs`` random configs scored two ways: one-shot (inherited weights, recalibrated: the
  ``subnet`` kind) and stand-alone (trained from scratch with fake-quant for ``--alone-epochs``: the
  ``trained`` kind); Kendall tau between the two validation accuracies. Goal: tau >= 0.6. Printed
  twice: stand-alone with the config's own training hyperparameters (``train.*`` as drawn), and with
  them fixed at the values phase 1 trains with (``phase1_training``: the one-shot score does not
  depend on them, and phases 2 and 3 do not search them; this tau is the one-shot pipeline's).
* ``hv`` - per space and seed: the one-shot pipeline (``--oneshot``: phase 1, ``--subnets`` subnet
  trials, the front fine-tuned), the per-trial default search (TPE + ASHA) and the plain in-process
  Optuna loop with successive halving over the same trial function (``benchmarks/wallclock.py``'s
  peer), each of the last two for ``--budget`` seconds of wall-clock; the hypervolume of the
  (val_acc, size_kb) front of fully trained (fine-tuned) models, and when each runner's front first
  reaches the best final hypervolume of the two per-trial runners. Goal: the one-shot pipeline gets
  there in <= 1/5 of their wall-clock.

Spaces: ``digits_small`` on the embedded digits, ``fashion_cnn`` on Fashion-MNIST (``--data-dir``; the
training split capped at ``--fashion-train`` samples for every runner alike).

    python benchmarks/oneshot.py [--spaces digits_small,fashion_cnn] [--parts tau,hv] [--seeds 3]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

FASHION = "/usr/share/datasets/fashion-mnist"


def data_section(args, space: str) -> dict:
    if space == "digits_small":
        return {}
    return {"name": "fashion_mnist", "dir": args.data_dir, "max_train": args.fashion_train}


def hv_reference(space_name: str, data: dict) -> tuple[float, float]:
    """(accuracy 0.5, the size of the space's largest network): the same reference for every runner."""
    from nasq_ray.config import from_dict
    from nasq_ray.models.supernet import sandwich
    from nasq_ray.trials import prepare

    kind, prep = prepare(from_dict({"space": space_name, "data": data, "quiet": True}))
    largest = sandwich(prep.space, np.random.default_rng(0), n_random=0)[0]
    return 0.5, float(kind.cost_model(prep)(largest))


def tau(args, space_name: str) -> None:
    from scipy.stats import kendalltau

    from nasq_ray.config import from_dict
    from nasq_ray.trials import prepare
    from nasq_ray.trials.supernet import SUPERNET_FILE, phase1_training

    torch.set_num_threads(1)
    data = data_section(args, space_name)
    with tempfile.TemporaryDirectory() as out:
        out = Path(out)
        kind, prep = prepare(from_dict({"space": space_name, "trial": "supernet", "data": data, "out": str(out),
                                        "name": "supernet", "search": {"max_epochs": args.supernet_epochs},
                                        "quiet": True}))
        t0 = time.perf_counter()
        last = {}
        metrics = kind.run({}, prep.context, lambda m, p: last.update(p=copy.deepcopy(p)) if p else None)
        train_s = time.perf_counter() - t0
        torch.save(last["p"]["supernet"], out / SUPERNET_FILE)
        sk, sp = prepare(from_dict({"space": space_name, "trial": "subnet", "data": data, "out": str(out.parent),
                                    "name": out.name, "search": {"max_epochs": 1}, "quiet": True}))
        tk, tp = prepare(from_dict({"space": space_name, "data": data, "quiet": True,
                                    "search": {"max_epochs": args.alone_epochs}}))
        fixed = phase1_training(tp.space)  # the subnet kind's space holds them fixed: it does not search them
        rng = np.random.default_rng(0)
        one, alone, alone_fixed, t_one, t_alone = [], [], [], 0.0, 0.0
        for _ in range(args.configs):
            cfg = tp.space.sample(rng)
            t = time.perf_counter()
            one.append(sk.run({k: v for k, v in cfg.items() if k not in fixed}, sp.context, lambda m, p: None)["val_acc"])
            t_one += time.perf_counter() - t
            t = time.perf_counter()
            alone_fixed.append(tk.run({**cfg, **fixed}, tp.context, lambda m, p: None)["val_acc"])
            t_alone += time.perf_counter() - t
            if not args.fixed_only:
                alone.append(tk.run(cfg, tp.context, lambda m, p: None)["val_acc"])
    print(f"\n## {space_name}: ranking by the super-network")
    print(f"super-network: {args.supernet_epochs} epochs in {train_s:.0f} s (1 thread); largest sub-network val_acc "
          f"{metrics['val_acc']:.4f}, smallest {metrics['val_acc_smallest']:.4f}")
    print(f"{args.configs} random configs: one-shot {t_one / args.configs:.2f} s each (val_acc mean "
          f"{statistics.mean(one):.4f}), stand-alone {args.alone_epochs} epochs {t_alone / args.configs:.1f} s each "
          f"at phase 1's hyperparameters (mean {statistics.mean(alone_fixed):.4f})")
    rows = [(f"training hyperparameters fixed at phase 1's ({fixed})", alone_fixed)]
    rows += [("training hyperparameters as drawn", alone)] if alone else []
    for label, acc in rows:
        r = kendalltau(one, acc)
        print(f"Kendall tau {r.statistic:.3f} (p {r.pvalue:.2g}), stand-alone with {label}, mean "
              f"{statistics.mean(acc):.4f}; goal >= 0.6: {'met' if r.statistic >= 0.6 else 'NOT met'}", flush=True)


def _front_over_time(points, ref):
    """(time, HV of the front of the points finished by then) at each point's finishing time."""
    from nasq_ray.objective import hypervolume

    out, seen = [], []
    for acc, size, t in sorted(points, key=lambda p: p[2]):
        seen.append((acc, size))
        out.append((t, hypervolume(seen, ref, ("max", "min"))))
    return out


def _reach(curve, target):
    return next((t for t, hv in curve if hv >= target - 1e-12), None)


def oneshot_runner(args, space_name: str, seed: int, out: str) -> dict:
    import ray

    from nasq_ray.config import from_dict
    from nasq_ray.search.driver import run_search
    from wallclock import front_points

    t0 = time.time()
    cfg = from_dict({"name": f"shot-{space_name}-{seed}", "out": out, "space": space_name, "quiet": True,
                     "data": data_section(args, space_name),
                     "search": {"mode": "oneshot", "seed": seed, "num_samples": args.subnets,
                                "supernet_epochs": args.supernet_epochs, "finetune_epochs": args.finetune_epochs,
                                "finetune_top": args.finetune_top},
                     "objective": {"multi": args.oneshot_multi}})
    res = run_search(cfg)
    wall = time.time() - t0
    ray.shutdown()
    tuned = [r for r in res.records if r.extra.get("phase") == "finetune" and r.status == "complete"]
    return {"points": front_points(tuned, t0), "wall_s": wall, "started": len(res.records), "complete": len(tuned)}


def hv(args, space_name: str) -> None:
    from wallclock import nasq, optuna_loop

    data = data_section(args, space_name)
    ref = hv_reference(space_name, data)
    print(f"\n## {space_name}: fronts against wall-clock (HV of (val_acc, size_kb), reference {ref[0]}, "
          f"{ref[1]:.1f} kB; per-trial runners {args.budget:.0f} s)")
    print(f"{'seed':>4} {'runner':<28} {'wall_s':>7} {'trials':>6} {'full':>5} {'HV':>7} {'reaches target at s':>19}")
    finals = {}
    with tempfile.TemporaryDirectory() as out:
        for seed in range(args.seeds):
            runners = {"default": lambda: nasq(args.budget, seed, {"space": space_name, "data": data}, out),
                       "optuna": lambda: optuna_loop(args.budget, seed, space_name, data),
                       "oneshot": lambda: oneshot_runner(args, space_name, seed, out)}
            runs = {k: fn() for k, fn in runners.items() if k in args.runners.split(",")}
            curves = {k: _front_over_time(r["points"], ref) for k, r in runs.items()}
            final = {k: (c[-1][1] if c else 0.0) for k, c in curves.items()}
            target = max([final[k] for k in ("default", "optuna") if k in final], default=math.inf)
            for k, r in runs.items():
                hit = _reach(curves[k], target)
                finals.setdefault(k, []).append((final[k], hit, r["wall_s"]))
                label = {"default": "nasq-ray default (TPE+ASHA)", "optuna": "optuna loop + SHA",
                         "oneshot": "one-shot pipeline"}[k]
                print(f"{seed:>4} {label:<28} {r['wall_s']:>7.0f} {r['started']:>6} {r['complete']:>5} "
                      f"{final[k]:>7.4f} {'-' if hit is None else f'{hit:.0f}':>19}", flush=True)
            if "oneshot" not in curves or not math.isfinite(target):
                continue
            shot_hit = _reach(curves["oneshot"], target)
            print(f"     seed {seed}: target HV {target:.4f}; one-shot reaches it "
                  + ("never" if shot_hit is None else f"at {shot_hit:.0f} s = {shot_hit / args.budget:.2f} x the "
                                                       f"per-trial wall-clock (goal <= 0.2)"), flush=True)
    print("mean final HV: " + ", ".join(f"{k} {statistics.mean(v[0] for v in vs):.4f}" for k, vs in finals.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spaces", default="digits_small,fashion_cnn")
    p.add_argument("--parts", default="tau,hv")
    p.add_argument("--data-dir", default=FASHION)
    p.add_argument("--fashion-train", type=int, default=12000)
    p.add_argument("--supernet-epochs", type=int, default=60)
    p.add_argument("--configs", type=int, default=30)
    p.add_argument("--alone-epochs", type=int, default=15)
    p.add_argument("--fixed-only", action="store_true",
                   help="tau part: stand-alone training at phase 1's hyperparameters only (not also as drawn)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=float, default=300)
    p.add_argument("--subnets", type=int, default=300)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--finetune-top", type=int, default=8)
    p.add_argument("--runners", default="default,optuna,oneshot", help="hv part: which runners (comma-separated)")
    p.add_argument("--oneshot-multi", action="store_true",
                   help="hv part: the one-shot pipeline with --objective multi (phase 2 searched by ehvi: a GP "
                        "fitted on the sub-networks evaluated so far screens the candidates, APQ's predictor)")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"# python benchmarks/oneshot.py {' '.join(sys.argv[1:])}", flush=True)
    for space in args.spaces.split(","):
        for part in args.parts.split(","):
            {"tau": tau, "hv": hv}[part](args, space)


if __name__ == "__main__":
    main()
