"""Which sharing the super-network's training suffers from (a diagnostic for issue 12).

On ``digits_small``: one config (the largest, ops drawn once with seed 5) is evaluated, after
``--epochs`` of super-network training in which each step trains, with the labels only:

* ``fixed`` - that config alone (the shared forward and backward against the stand-alone network);
* ``ops`` / ``conns`` / ``ops+conns`` - that config with the block ops, the connections (and merges),
  or both drawn at random per step (every other choice kept);
* ``sandwich`` - the sandwich rule as phase 1 runs it (largest, smallest, 2 random; distillation).

The config's validation accuracy after recalibration (20 batches) is printed for each, beside the
stand-alone network trained for as many epochs.

    python benchmarks/oneshot_sharing.py [--epochs 30] [--modes fixed,ops,conns,ops+conns,sandwich]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--modes", default="fixed,ops,conns,ops+conns,sandwich")
    args = p.parse_args()
    from nasq_ray.config import from_dict
    from nasq_ray.models.supernet import sandwich
    from nasq_ray.space.domains import Ordinal
    from nasq_ray.trials import prepare
    from nasq_ray.data.batches import first_batches
    from nasq_ray.trials.supernet import Phase1, _bn_recalibrate_, sandwich_step, train_epoch
    from nasq_ray.trials.training import accuracy_f1, predict_batches

    torch.set_num_threads(1)
    print(f"# python benchmarks/oneshot_sharing.py --epochs {args.epochs} --modes {args.modes}", flush=True)
    _, prep = prepare(from_dict({"space": "digits_small", "trial": "supernet", "out": "/tmp/nasq_sharing",
                                 "name": "x", "search": {"max_epochs": args.epochs}, "quiet": True}))
    ctx, space = prep.context, prep.context.space
    fixed = sandwich(space, np.random.default_rng(5), n_random=0)[0]
    cal = first_batches(ctx.train, 20, ctx.batch_size, 0)
    drawn = {"ops": (".op", ".op_b"), "conns": (".conn", ".merge"), "ops+conns": (".op", ".op_b", ".conn", ".merge")}

    def step_configs(mode, rng):
        if mode == "fixed":
            return [fixed]

        def ask(prm, view):
            if prm.name.endswith(drawn[mode]):
                return prm.domain.sample(rng)
            if prm.name in fixed:
                return fixed[prm.name]
            return max(prm.domain.values) if isinstance(prm.domain, Ordinal) else prm.domain.sample(rng)
        return [space.walk(ask)]

    for mode in args.modes.split(","):
        run, rng, t0 = Phase1(ctx), np.random.default_rng(3), time.perf_counter()
        for _ in range(args.epochs):
            if mode == "sandwich":
                train_epoch(run.net, run.optimizer, space, replace(ctx, n_random=2), run.gen, run.rng)
            else:
                run.net.train()
                for xb, yb, _ in ctx.train.epoch(ctx.batch_size, run.gen):
                    run.optimizer.zero_grad(set_to_none=True)
                    sandwich_step(run.net, space, xb, yb, step_configs(mode, rng))
                    run.optimizer.step()
            run.sched.step()
        sub = run.net.subnet(space.decode(fixed))
        _bn_recalibrate_(sub, cal)
        acc = accuracy_f1(*predict_batches(sub, ctx.val.eval()), space.num_classes)[0]
        print(f"{mode:<10} val_acc {acc:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    kind, tp = prepare(from_dict({"space": "digits_small", "quiet": True, "search": {"max_epochs": args.epochs}}))
    cfg = {**fixed, "train.lr": ctx.lr, "train.batch_size": ctx.batch_size}
    print(f"{'alone':<10} val_acc {kind.run(cfg, tp.context, lambda m, p: None)['val_acc']:.3f} "
          f"(the stand-alone network, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
