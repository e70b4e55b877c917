"""W8A8 models exported for onnxruntime's integer kernels: how many layers run as integers, how fast
the export runs against the float ONNX model of the same network, and whether it predicts what the
fake-quant model predicts (issue 13).

Per space, ``--models`` configs are sampled from the space with every bit-width set to 8 (weights,
activations, logits, and ``merge_bits``: the inputs of merges and of average pooling), each trained with fake-quant for ``--epochs`` epochs on Fashion-MNIST (the
Debian package ``dataset-fashion-mnist``; for ``cifar_cnn``, whose input is 3x32x32, the same images
padded to 32x32 and repeated over 3 channels: this machine has no CIFAR-10), then exported
(``to_onnx``: integer-kernel form) beside its float version (``dequantize_`` + ``to_onnx``), and as
``python -m nasq_ray.export`` writes it by default (``--kernels measured``: a qualifying layer kept on a
float kernel where the whole model measured faster so, ``latency.faster_float_layers``). Per model:
Conv/Gemm layers onnxruntime runs on integer kernels after graph optimization, latency (1 thread,
batch 1 and 64, least of 3 sessions' medians) of the float model, the all-integer export and the
measured export, test accuracy of fake-quant and of the export (measured) in onnxruntime. Goals: >= 90% of Conv/Gemm on integer kernels, export latency at batch 64 <= 0.6x
float (median over models), ONNX test accuracy within 0.5 points of fake-quant. Then the latency
cost (``--cost latency_ms``) on ``--latency-models`` sampled configs: how well a second measurement
of the whole network agrees with the first, and how well the latency table (``objective.latency:
table``) predicts it (goal: within +-10% for >= 80% of 50 models).

    OMP_NUM_THREADS=1 python benchmarks/deploy.py [--spaces cifar_cnn,fashion_cnn] [--models 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nasq_ray.data import Split, load_dataset
from nasq_ray.deploy.onnx import float_onnx, integer_plan, run_onnx, to_onnx
from nasq_ray.deploy.latency import faster_float_layers
from nasq_ray.deploy.runtime import latency_ms, layer_kernels
from nasq_ray.models import build_model
from nasq_ray.space import load_space

FASHION = "/usr/share/datasets/fashion-mnist"


def w8a8(config: dict) -> dict:
    return {k: (8 if k.endswith(("w_bits", "a_bits", "logit_bits")) else v) for k, v in config.items()}


def as_rgb32(split: Split) -> Split:
    x = np.pad(split.x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return Split(np.ascontiguousarray(np.repeat(x, 3, axis=1)), split.y)


def train(model: torch.nn.Module, data: Split, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spaces", default="cifar_cnn,fashion_cnn")
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=4000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--latency-models", type=int, default=50, help="configs for the latency-cost check (0: skip)")
    ap.add_argument("--latency-space", default="fashion_cnn", help="comma-separated spaces of the latency-cost check")
    args = ap.parse_args()
    torch.set_num_threads(2)
    import onnxruntime

    data = load_dataset("fashion_mnist", FASHION, max_train=args.max_train, seed=0)
    print(f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; Fashion-MNIST, {len(data.train)} "
          f"train / {args.test} test images, {args.epochs} epochs of fake-quant training per model, W8A8")
    for space_name in args.spaces.split(",") if args.models else []:
        space = load_space(space_name)
        tr, te = data.train, Split(data.test.x[:args.test], data.test.y[:args.test])
        if tuple(space.input_shape) == (3, 32, 32):
            tr, te = as_rgb32(tr), as_rgb32(te)
        print(f"\n{space_name} (input {tuple(space.input_shape)})")
        print(f"{'seed':>4} {'int/all':>7} {'float ms b1':>11} {'int ms b1':>9} {'ratio':>5} {'float ms b64':>12} "
              f"{'int ms b64':>10} {'ratio':>5} | {'measured':>8} {'ms b1':>6} {'ratio':>5} {'ms b64':>7} {'ratio':>5} "
              f"{'choose_s':>8} | {'fq_test':>7} {'ort_test':>8} {'diff_pp':>7} {'train_s':>7}")
        rows, reasons = [], Counter()
        for seed in range(args.models):
            spec = space.decode(w8a8(space.sample(seed)))
            model = build_model(spec.arch, replace(spec.quant, merge_bits=8), seed=seed)
            t0 = time.time()
            train(model, tr, args.epochs, seed)
            train_s = time.time() - t0
            proto = to_onnx(model, space.input_shape)
            float_proto = float_onnx(model, space.input_shape)
            kernels = layer_kernels(proto, integer_plan(model))
            reasons.update(k.reason for k in kernels if not k.integer)
            t0 = time.time()
            floats = faster_float_layers(model, space.input_shape)
            choose_s = time.time() - t0
            measured = to_onnx(model, space.input_shape, float_layers=floats)
            m_kernels = layer_kernels(measured, integer_plan(model, floats))
            lat = {(w, b): latency_ms(p.SerializeToString(), space.input_shape, b)
                   for w, p in (("float", float_proto), ("int", proto), ("measured", measured)) for b in (1, 64)}
            with torch.no_grad():
                fq = model(torch.from_numpy(te.x)).argmax(1).numpy()
            ort = run_onnx(measured, te.x).argmax(1)
            fq_acc, ort_acc = float((fq == te.y).mean()), float((ort == te.y).mean())
            n_int, m_int = sum(k.integer for k in kernels), sum(k.integer for k in m_kernels)
            rows.append(dict(frac=n_int / len(kernels), r1=lat["int", 1] / lat["float", 1],
                             r64=lat["int", 64] / lat["float", 64], diff=(ort_acc - fq_acc) * 100,
                             m_frac=m_int / len(m_kernels), m1=lat["measured", 1] / lat["float", 1],
                             m64=lat["measured", 64] / lat["float", 64]))
            print(f"{seed:>4} {f'{n_int}/{len(kernels)}':>7} {lat['float', 1]:>11.3f} {lat['int', 1]:>9.3f} "
                  f"{rows[-1]['r1']:>5.2f} {lat['float', 64]:>12.3f} {lat['int', 64]:>10.3f} {rows[-1]['r64']:>5.2f} | "
                  f"{f'{m_int}/{len(m_kernels)}':>8} {lat['measured', 1]:>6.3f} {rows[-1]['m1']:>5.2f} "
                  f"{lat['measured', 64]:>7.3f} {rows[-1]['m64']:>5.2f} {choose_s:>8.1f} | "
                  f"{fq_acc:>7.4f} {ort_acc:>8.4f} {rows[-1]['diff']:>+7.2f} {train_s:>7.1f}", flush=True)
        frac = sum(r["frac"] for r in rows) / len(rows)
        r64 = statistics.median(r["r64"] for r in rows)
        worst = max(abs(r["diff"]) for r in rows)
        print(f"{space_name}: Conv/Gemm on integer kernels {frac:.1%} (goal >= 90%: {'met' if frac >= 0.9 else 'NOT met'}); "
              f"median export/float latency at batch 64 {r64:.2f}x (goal <= 0.6: {'met' if r64 <= 0.6 else 'NOT met'}), "
              f"at batch 1 {statistics.median(r['r1'] for r in rows):.2f}x; largest |ONNX - fake-quant| test accuracy "
              f"{worst:.2f} pp (goal <= 0.5: {'met' if worst <= 0.5 else 'NOT met'})")
        m_frac, m64 = sum(r["m_frac"] for r in rows) / len(rows), statistics.median(r["m64"] for r in rows)
        print(f"{space_name}, measured export (the export command's default): Conv/Gemm on integer kernels "
              f"{m_frac:.1%}; median export/float latency at batch 64 {m64:.2f}x (goal <= 0.6: "
              f"{'met' if m64 <= 0.6 else 'NOT met'}), at batch 1 {statistics.median(r['m1'] for r in rows):.2f}x; "
              f"test accuracy above is the measured export's")
        print("why the float layers stay float (all-integer export): "
              + "; ".join(f"{n} x {r}" for r, n in reasons.most_common()))
    if args.latency_models:
        for name in args.latency_space.split(","):
            latency_check(name, args.latency_models)


def latency_check(space_name: str, n: int) -> None:
    """``--cost latency_ms``: per sampled config (mixed precision as sampled, merges at 8 bits), the
    whole exported network timed twice (``objective.latency: model``, fresh sessions, no cache: how
    far a second measurement would be) and predicted by the latency table (``objective.latency:
    table``, the table starting empty in a temporary cache and filling as configs come). Goal: the
    table within +-10% of the first measurement for >= 80% of configs."""
    import tempfile

    from nasq_ray.deploy.latency import LATENCY_BATCH, model_latency_ms

    torch.set_num_threads(1)  # nothing else on the second core while onnxruntime is timed
    space = load_space(space_name)
    repeat, errors, values, outside, table_s, measure_s = [], [], [], [], 0.0, 0.0
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NASQ_RAY_CACHE"] = cache
        for seed in range(n):
            spec = space.decode(space.sample(seed))
            model = build_model(spec.arch, replace(spec.quant, merge_bits=8), seed=seed)
            x = torch.randn(64, *space.input_shape, generator=torch.Generator().manual_seed(seed))
            t0 = time.time()
            a = model_latency_ms(lambda: model, space.input_shape, x)
            t1 = time.time()
            predicted = model_latency_ms(lambda: model, space.input_shape, x, source="table")
            t2 = time.time()
            b = model_latency_ms(lambda: model, space.input_shape, x)  # after the table: the two span its timings
            table_s += t2 - t1
            measure_s += (t1 - t0 + time.time() - t2) / 2
            repeat.append(abs(b - a) / a)
            errors.append(predicted / min(a, b) - 1)
            values.append(min(a, b))
            if abs(errors[-1]) > 0.1:
                outside.append(f"seed {seed}: timed {a:.4f} / {b:.4f} ms, table {predicted:.4f} ms ({errors[-1]:+.0%})")
        entries = len(list(Path(cache).glob("latency/*/part-*.json")))
    within = sum(abs(e) <= 0.1 for e in errors) / n
    print(f"\nlatency_ms cost on {space_name}, {n} sampled configs (batch {LATENCY_BATCH}, 1 thread): latency "
          f"{min(values):.4f} .. {max(values):.4f} ms (median {statistics.median(values):.4f})")
    print(f"  whole network timed twice: within +-10% for {sum(d <= 0.1 for d in repeat) / n:.0%} of configs "
          f"(median |difference| {statistics.median(repeat):.1%}, largest {max(repeat):.1%}); {measure_s / n:.2f} s "
          "per measurement (export + timing)")
    print(f"  latency table against the lesser timing: within +-10% for {within:.0%} of configs (goal >= 80%: "
          f"{'met' if within >= 0.8 else 'NOT met'}); median |error| {statistics.median(abs(e) for e in errors):.1%}, "
          f"errors {min(errors):+.1%} .. {max(errors):+.1%}; {entries} parts timed, {table_s / n:.2f} s per "
          "prediction (export, cut, parts not yet in the table timed)")
    print("  outside +-10%: " + ("; ".join(outside) or "none"))


if __name__ == "__main__":
    main()
