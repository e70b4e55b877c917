"""Your own model on real data (issue 11): Fashion-MNIST (the Debian package ``dataset-fashion-mnist``),
the example models of ``examples/own_model`` (``ResNet8``: residual; ``DepthwiseNet``: depthwise-separable
blocks and a concatenation).

Parts (``--parts``, default all):

* ``search`` - per model: its float model trained first (``--float-epochs``, timed on its own, weights
  saved), then ``python -m nasq_ray.run``'s search as a user runs it (``--model ... --weights ...
  --data fashion_mnist --objective multi --cost bitops``: ehvi on (val_acc, BitOPs), ``--warm-start``
  configs first (HAWQ-V3's and, since the space prunes, up to half of them pruned to 1/2, 1/4, ... of
  the float MACs), moasha) for ``--search-s`` seconds of wall-clock on this machine's cores
  (``--cost size_kb``: the front on (val_acc, size_kb) instead). Printed: the front
  with test accuracy, the float model and PTQ 4/4 beside it, and the goals: (a) a front model whose
  weights average <= 4 bits within 1.0 point of float test accuracy, (b) a pruned front model with <= 0.5x
  the float MACs within 1.5 points.
* ``hawq`` - ResNet8: budgets = the size of uniform W3, W4 and W6 models (every layer at that width,
  activations at the narrowest allowed width >= the weights'); the HAWQ-V3 config at each budget
  and the uniform config, each fine-tuned with QAT for ``--qat-epochs`` epochs, 3 seeds (data order):
  each budget met within 1% (cost <= budget, >= 0.99 budget), mean test accuracy of HAWQ against uniform.
* ``distill`` - ResNet8 at uniform W4A4 and W2A4, QAT with distillation (alpha 0.5, T 4) against without
  (alpha 0), 3 seeds: the difference in test accuracy, whatever it is.

    python benchmarks/own_model.py [--data-dir /usr/share/datasets/fashion-mnist] [--parts search,hawq,distill]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FASHION = "/usr/share/datasets/fashion-mnist"
MODELS = {"resnet8": "examples.own_model.model:ResNet8", "depthwise": "examples.own_model.model:DepthwiseNet"}
SPACE = """
name: own_model_bench
quant:
  w_bits: [2, 3, 4, 6, 8]
  a_bits: [4, 6, 8]               # no layer pinned: the first and last layers' widths are searched too
prune:
  keep: [1.0, 0.75, 0.5, 0.25]
distill:
  alpha: 0.5
  temperature: 4
train:
  lr: {low: 0.0001, high: 0.003, log: true}
  batch_size: 128
"""


def _cfg(args, model: str, weights: str | None, name: str, **over):
    from nasq_ray.config import from_dict

    raw = {"name": name, "out": str(args.out), "space": str(args.out / "space.yaml"), "quiet": True,
           "model": {"factory": MODELS[model], "weights": weights},
           "data": {"name": "fashion_mnist", "dir": args.data_dir, "max_train": args.qat_train},
           "search": {"max_epochs": args.qat_epochs}}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(raw)


def float_model(args, model: str) -> tuple[str, dict]:
    """Train the float model on Fashion-MNIST (its own timing), save its weights; its accuracies."""
    from nasq_ray.data import load_data
    from nasq_ray.models.user import make_model
    from nasq_ray.trials.own_prepare import train_float_
    from nasq_ray.trials.training import accuracy_f1, predict_batches
    from nasq_ray.user_code import UserCallable

    path = args.out / f"{model}.float.pt"
    info_path = args.out / f"{model}.float.json"
    if path.is_file() and info_path.is_file():
        return str(path), json.loads(info_path.read_text())
    torch.set_num_threads(args.cpus)
    cfg = _cfg(args, model, None, "float")
    data = load_data(replace(cfg.data, augment=True, max_train=None))  # the float model sees all training data
    net = make_model(UserCallable.of(MODELS[model], {}, "model.factory"))
    t0 = time.perf_counter()
    made = train_float_(net, data.train, data.val, 10, args.float_epochs, 0)
    train_s = time.perf_counter() - t0
    info = {"val_acc": made.val_acc, "test_acc": accuracy_f1(*predict_batches(net, data.test.eval()), 10)[0],
            "epochs": args.float_epochs, "train_s": train_s}
    torch.save(net.state_dict(), path)
    info_path.write_text(json.dumps(info))
    return str(path), info


def _front_goals(front, float_macs):
    low_bit = [r for r in front if r.metrics["avg_w_bits"] <= 4.0 and r.test_acc is not None]
    pruned = [r for r in front if r.metrics["macs"] <= 0.5 * float_macs and r.test_acc is not None]
    best = lambda rs: max(rs, key=lambda r: r.test_acc) if rs else None  # noqa: E731
    return best(low_bit), best(pruned)


def search(args) -> None:
    from nasq_ray.search.driver import run_search

    for model in args.models:
        weights, info = float_model(args, model)
        print(f"\n## {model}: float model {info['epochs']} epochs in {info['train_s']:.0f} s (2 threads, random crop "
              f"+ flip): val_acc {info['val_acc']:.4f}, test_acc {info['test_acc']:.4f}", flush=True)
        name = f"search-{model}" + ("" if args.cost == "bitops" else f"-{args.cost}")
        cfg = _cfg(args, model, weights, name,
                   objective={"multi": True, "cost": args.cost},
                   search={"num_samples": 500, "time_budget_s": args.search_s, "warm_start": args.warm_start,
                           "seed": 0})
        t0 = time.perf_counter()
        result = run_search(cfg)
        wall = time.perf_counter() - t0
        ref = {r["name"]: r for r in result.reference}
        float_macs, float_test = ref["float"]["macs"], ref["float"]["test_acc"]
        counts = {s: sum(r.status == s for r in result.records) for s in ("complete", "pruned", "failed")}
        print(f"search: {len(result.records)} trials in {wall:.0f} s wall ({counts}); front of {len(result.front)} "
              f"on (val_acc, {args.cost}); float test_acc {float_test:.4f}, float MACs {float_macs:,}")
        print(f"{'model':<12} {'val_acc':>8} {'test_acc':>8} {'d_test_pp':>9} {'avg_w_bits':>10} {'macs_x':>7} "
              f"{'size_kb':>8} {'bitops':>14}  bits")
        rows = [(r.trial_id, r.metrics["val_acc"], r.test_acc, r.metrics["avg_w_bits"], r.metrics["macs"],
                 r.metrics["size_kb"], r.metrics["bitops"], r.bits) for r in result.front]
        rows += [(k, v["val_acc"], v["test_acc"], v["avg_w_bits"], v["macs"], v["size_kb"], v["bitops"], v["bits"])
                 for k, v in ref.items()]
        for name_, val, test, bits_avg, macs, size, bitops, bits in rows:
            d = "" if test is None else f"{100 * (test - float_test):+.2f}"
            print(f"{name_:<12} {val:>8.4f} {'-' if test is None else f'{test:.4f}':>8} {d:>9} {bits_avg:>10.2f} "
                  f"{macs / float_macs:>7.2f} {size:>8.2f} {bitops:>14,.0f}  {bits}")
        low, pruned = _front_goals(result.front, float_macs)
        for label, r, limit in (("(a) avg weight bits <= 4", low, 1.0), ("(b) pruned, MACs <= 0.5x", pruned, 1.5)):
            if r is None:
                print(f"goal {label}: no such model on the front: NOT met")
                continue
            gap = 100 * (float_test - r.test_acc)
            print(f"goal {label}: trial {r.trial_id}, test_acc {r.test_acc:.4f} ({gap:.2f} pp below float; "
                  f"goal <= {limit}): {'met' if gap <= limit else 'NOT met'}")
        print(f"PTQ 4/4 beside them: test_acc {ref['ptq 4/4']['test_acc']:.4f} "
              f"({100 * (ref['ptq 4/4']['test_acc'] - float_test):+.2f} pp), size {ref['ptq 4/4']['size_kb']:.2f} kB",
              flush=True)


_PREPARED: dict = {}  # name -> a prepared own-model run; the pool's forked processes inherit it


def _train_one(job):
    """One QAT fine-tuning in its own process (one torch thread): test accuracy and cost."""
    name, config, seed = job
    from nasq_ray.trials.own_model import OwnModelTrial, load_student

    torch.set_num_threads(1)
    prep = _PREPARED[name]
    ctx = replace(prep.context, seed=seed)
    kind = OwnModelTrial()
    states = []
    metrics = kind.run(config, ctx, lambda m, p: states.append(p))
    model = load_student(ctx, config, states[-1])
    test_acc = kind._evaluate(model, prep.test, prep.space.num_classes)[0]
    return {"val_acc": metrics["val_acc"], "test_acc": test_acc, "size_kb": metrics["size_kb"],
            "bitops": metrics["bitops"], "bits": metrics["w_bits_str"]}


def _prepared(args, model: str, name: str, **over):
    from nasq_ray.trials import prepare

    weights, _ = float_model(args, model)
    kind, prep = prepare(_cfg(args, model, weights, name, **over))
    _PREPARED[name] = prep
    return kind, prep, name


def _pool_run(jobs):
    with mp.get_context("fork").Pool(2) as pool:
        return pool.map(_train_one, jobs)


def hawq(args) -> None:
    from nasq_ray.hawq import solve_widths
    from nasq_ray.trials.own_sensitivity import paired_a_width

    kind, prep, path = _prepared(args, "resnet8", "hawq", objective={"cost": "size_kb"})
    space = prep.space
    sens = kind.sensitivity(prep)
    cost = kind.cost_model(prep)
    seeds = range(args.seeds)
    plans = []
    a_of = {w: paired_a_width(w, space.bits_candidates("a_bits")) for w in (3, 4, 6)}
    for w in (3, 4, 6):
        uniform = space.uniform_config(w, a_of[w])
        budget = cost(uniform)
        choice = solve_widths(sens, budget)
        mixed = space.validate(sens.config(choice))
        plans.append((w, budget, uniform, mixed))
    jobs = [(path, cfg, s) for _, _, uniform, mixed in plans for cfg in (mixed, uniform) for s in seeds]
    t0 = time.perf_counter()
    out = _pool_run(jobs)
    print(f"\n## HAWQ-V3 against uniform widths (ResNet8, {args.qat_epochs} QAT epochs, {args.seeds} seeds, "
          f"{time.perf_counter() - t0:.0f} s)")
    print(f"{'budget (uniform W)':<20} {'budget_kB':>9} {'hawq_kB':>8} {'within':>7} {'hawq_test':>9} {'uniform_test':>12} "
          f"{'diff_pp':>8}  hawq bits")
    k = 0
    for w, budget, _, _ in plans:
        h, u = out[k:k + args.seeds], out[k + args.seeds:k + 2 * args.seeds]
        k += 2 * args.seeds
        ha, ua = statistics.mean(r["test_acc"] for r in h), statistics.mean(r["test_acc"] for r in u)
        size = h[0]["size_kb"]
        met = size <= budget + 1e-9 and size >= 0.99 * budget
        print(f"W{w} (A{a_of[w]}){'':<13} {budget:>9.3f} {size:>8.3f} {'yes' if met else 'NO':>7} {ha:>9.4f} "
              f"{ua:>12.4f} {100 * (ha - ua):>+8.2f}  {h[0]['bits']}")
        print(f"{'':<20} per seed hawq {[round(r['test_acc'], 4) for r in h]} uniform "
              f"{[round(r['test_acc'], 4) for r in u]}")


def distill(args) -> None:
    kind, prep, path = _prepared(args, "resnet8", "distill")
    space = prep.space
    seeds = range(args.seeds)
    configs = []
    for w, a in ((4, 4), (2, 4)):
        base = space.uniform_config(w, a)
        configs += [(w, a, alpha, {**base, **({"distill.alpha": alpha} if "distill.alpha" in base else {})})
                    for alpha in (0.5, 0.0)]
    # alpha is a constant of the space: a second prepared context without distillation
    _, _, path0 = _prepared(args, "resnet8", "nodistill", space=str(args.out / "space_nodistill.yaml"))
    jobs = []
    for w, a, alpha, cfg in configs:
        jobs += [(path if alpha > 0 else path0, cfg, s) for s in seeds]
    t0 = time.perf_counter()
    out = _pool_run(jobs)
    print(f"\n## Distillation from the float model (ResNet8, {args.qat_epochs} QAT epochs, {args.seeds} seeds, "
          f"{time.perf_counter() - t0:.0f} s)")
    print(f"{'bits':<6} {'alpha':>5} {'test_acc mean':>13}  per seed")
    k, means = 0, {}
    for w, a, alpha, _ in configs:
        rs = out[k:k + args.seeds]
        k += args.seeds
        means[(w, a, alpha)] = statistics.mean(r["test_acc"] for r in rs)
        print(f"W{w}A{a} {alpha:>6} {means[(w, a, alpha)]:>13.4f}  {[round(r['test_acc'], 4) for r in rs]}")
    for w, a in ((4, 4), (2, 4)):
        print(f"W{w}A{a}: distillation - none = {100 * (means[(w, a, 0.5)] - means[(w, a, 0.0)]):+.2f} pp")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=FASHION)
    p.add_argument("--out", type=Path, default=Path("/tmp/nasq_own_model_bench"))
    p.add_argument("--parts", default="search,hawq,distill")
    p.add_argument("--models", default="resnet8,depthwise")
    p.add_argument("--float-epochs", type=int, default=15)
    p.add_argument("--qat-epochs", type=int, default=3)
    p.add_argument("--search-s", type=float, default=1050,
                   help="start no new trial after this (trials in flight finish: about 20 minutes in all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--qat-train", type=int, default=None,
                   help="QAT fine-tuning sees this many training samples per epoch (default: all 48,000)")
    p.add_argument("--warm-start", type=int, default=4, help="HAWQ-V3 configs proposed first in the search part")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--cost", default="bitops", choices=("bitops", "size_kb"), help="the search part's cost axis")
    args = p.parse_args()
    args.models = args.models.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "space.yaml").write_text(SPACE)
    (args.out / "space_nodistill.yaml").write_text(SPACE.replace("alpha: 0.5", "alpha: 0.0"))
    print(f"# python benchmarks/own_model.py {' '.join(sys.argv[1:])}", flush=True)
    for part in args.parts.split(","):
        {"search": search, "hawq": hawq, "distill": distill}[part](args)


if __name__ == "__main__":
    main()
