"""Epoch time with fake-quant (4-bit weights and activations) over float, on the default space's models.

For each sampled architecture of a space (default ``digits_small``) the same network is built
twice, all layers at 32 bits (float) and all at W4/A4 (logits float in both), and one training
epoch is timed for each, alternating (float, quant, float, quant, ...) so that machine noise hits
both alike. Reported: per-model median ratio and the median over models.

The data is the digits training split for ``digits_small``; for other spaces (``--space
cifar_cnn``) random inputs of the space's input shape stand in (``--samples`` of them): only time
is measured.

    python benchmarks/fakequant_overhead.py [--models 10] [--repeats 7] [--space cifar_cnn --samples 512]
        [--torch-only]

``--torch-only`` bypasses the fused C kernels (``nasq_ray.quant.native``): torch operations alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nasq_ray.data import load_dataset
from nasq_ray.models import build_model
from nasq_ray.quant import LayerBits, QuantConfig, native
from nasq_ray.space import load_space
from nasq_ray.trials.training import make_optimizer, train_epoch


def uniform(quant: QuantConfig, bits: int) -> QuantConfig:
    return QuantConfig({k: LayerBits(bits, bits) for k in quant.layers}, logit_bits=32)


def epoch_time(spec, quant, x, y, seed) -> float:
    model = build_model(spec.arch, quant, seed=seed)
    opt = make_optimizer(model, spec.train)
    gen = torch.Generator().manual_seed(seed)
    train_epoch(model, opt, x[:128], y[:128], spec.train.batch_size, gen)  # warm-up, sets ranges
    t0 = time.perf_counter()
    train_epoch(model, opt, x, y, spec.train.batch_size, gen)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--space", default="digits_small")
    ap.add_argument("--samples", type=int, default=512, help="random inputs for spaces other than digits_small")
    ap.add_argument("--torch-only", action="store_true", help="bypass the fused C kernels")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    native.set_enabled(not args.torch_only)
    if args.space == "digits_small":
        data = load_dataset("digits")
        space = load_space("digits_small", data.input_shape, data.num_classes)
        x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    else:
        space = load_space(args.space)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((args.samples, *space.input_shape), generator=gen)
        y = torch.randint(0, space.num_classes, (args.samples,), generator=gen)
    kernels = "fused C kernels" if native.available() else "torch operations"
    print(f"{space.name}, {len(y)} training samples of shape {tuple(x.shape[1:])}, W{args.bits}/A{args.bits} vs float, "
          f"{args.repeats} interleaved epochs per model, {args.threads} thread(s), {kernels}")
    print(f"{'model':>5} {'params':>7} {'float_ms':>9} {'quant_ms':>9} {'ratio':>6}  ops")
    ratios = []
    for m in range(args.models):
        spec = space.decode(space.sample(1000 + m))
        f32, q = uniform(spec.quant, 32), uniform(spec.quant, args.bits)
        tf, tq = [], []
        for r in range(args.repeats):
            tf.append(epoch_time(spec, f32, x, y, r))
            tq.append(epoch_time(spec, q, x, y, r))
        ratio = statistics.median(b / a for a, b in zip(tf, tq))
        ratios.append(ratio)
        ops = " ".join(b.op + ("+" + b.op_b if b.op_b else "") for st in spec.arch.stages for b in st)
        n = sum(p.numel() for p in build_model(spec.arch).parameters())
        print(f"{m:>5} {n:>7} {statistics.median(tf) * 1e3:>9.1f} {statistics.median(tq) * 1e3:>9.1f} {ratio:>6.3f}  {ops}")
    print(f"median ratio over {len(ratios)} models: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
