"""Quantizers compared at equal bits: min/max, LSQ and PACT against the float network.

One fixed architecture from ``cifar_cnn.yaml`` (the config sampled with ``--arch-seed``, decoded for
the dataset's input) is trained from the same initialization with every layer at W/A bits 8/8,
4/4, 3/3 and 2/2 (logits float) for each quantizer, and once in float. Quantizers:

* ``minmax``: max-abs per-channel weights, EMA min/max activations (the default);
* ``lsq``: LSQ weights (learned per-channel step) and LSQ activations (learned step);
* ``pact``: max-abs weights, PACT activations (learned clipping level);
* ``dynamic``: max-abs weights, activation ranges computed per input sample (``a_mode: dynamic``),
  to compare with ``minmax`` (static ranges) at equal bits;
* ``tensor``: like ``minmax`` with one weight scale per layer (``w_granularity: tensor``);
* ``symmetric``: like ``minmax`` with symmetric activations (``a_scheme: symmetric``, zero point 0).

Data: scikit-learn's digits (embedded), or CIFAR-10 with ``--data cifar10 --data-dir DIR``. Adam,
cosine schedule, ``--epochs`` epochs; reported: test accuracy, mean over ``--seeds`` seeds.

    python benchmarks/quantizers.py [--epochs 30] [--seeds 3] [--quantizers minmax,lsq,pact]
                                    [--data cifar10 --data-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from nasq_ray.data import load_dataset
from nasq_ray.models import build_model
from nasq_ray.quant import LayerBits
from nasq_ray.space import load_space
from nasq_ray.trials.training import accuracy_f1, cosine_lr, make_optimizer, predict, train_epoch

QUANTIZERS = {
    "minmax": {}, "lsq": {"w_quantizer": "lsq", "a_quantizer": "lsq"}, "pact": {"a_quantizer": "pact"},
    "dynamic": {"a_mode": "dynamic"}, "tensor": {"w_granularity": "tensor"}, "symmetric": {"a_scheme": "symmetric"},
}


def train_and_test(spec, quant, data, epochs: int, seed: int) -> float:
    model = build_model(spec.arch, quant, seed=seed)
    opt = make_optimizer(model, spec.train)
    sched = cosine_lr(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    for _ in range(epochs):
        train_epoch(model, opt, x, y, spec.train.batch_size, gen)
        sched.step()
    xt, yt = torch.from_numpy(data.test.x), torch.from_numpy(data.test.y)
    return accuracy_f1(predict(model, xt), yt, data.num_classes)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arch-seed", type=int, default=0)
    ap.add_argument("--bits", default="8,4,3,2")
    ap.add_argument("--quantizers", default="minmax,lsq,pact", help=f"of {', '.join(QUANTIZERS)}")
    ap.add_argument("--no-float", action="store_true", help="skip the float baseline")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_dataset(args.data, args.data_dir)
    space = load_space("cifar_cnn", data.input_shape, data.num_classes)
    spec = space.decode(space.sample(args.arch_seed))
    spec = replace(spec, train=replace(spec.train, lr=0.003, optimizer="adam", weight_decay=0.0, batch_size=64))
    layers = list(spec.quant.layers)
    print(f"cifar_cnn architecture (sample {args.arch_seed}) on {args.data}: {len(layers)} quantized layers; "
          f"Adam lr 0.003, {args.epochs} epochs, batch 64; test accuracy, mean +- std over {args.seeds} seeds")
    t0 = time.time()

    def run(quant) -> str:
        accs = [train_and_test(spec, quant, data, args.epochs, s) for s in range(args.seeds)]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        return f"{statistics.fmean(accs):.4f} +- {sd:.4f}"

    float_quant = replace(spec.quant, layers={k: LayerBits(32, 32) for k in layers}, logit_bits=32)
    names = args.quantizers.split(",")
    unknown = set(names) - set(QUANTIZERS)
    if unknown:
        raise SystemExit(f"--quantizers: {sorted(unknown)} not allowed; allowed: {', '.join(QUANTIZERS)}")
    if not args.no_float:
        print(f"{'float':<9} {'32/32':>6}  {run(float_quant)}")
    for bits in (int(b) for b in args.bits.split(",")):
        for name in names:
            base = replace(spec.quant, w_quantizer="minmax", a_quantizer="ema", w_granularity="channel",
                           a_scheme="affine", a_mode="static")
            quant = replace(base, layers={k: LayerBits(bits, bits) for k in layers}, logit_bits=32, **QUANTIZERS[name])
            print(f"{name:<9} {f'{bits}/{bits}':>6}  {run(quant)}", flush=True)
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
