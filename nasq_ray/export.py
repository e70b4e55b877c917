"""``python -m nasq_ray.export RESULT_DIR [--trial ID | --pareto] [--format onnx|packed]``: the chosen
models as real integers, checked against the fake-quant models the search scored.

Writes, per model, ``OUT/NAME/export/<trial>.onnx`` (with ``--format onnx``, the default): an ONNX
model with QuantizeLinear/DequantizeLinear and integer weights (see ``nasq_ray.deploy.onnx``), run with
onnxruntime on the test split, its accuracy printed beside the fake-quant model's, with how many of its
Conv/Gemm layers onnxruntime runs on integer kernels (QLinearConv) and why each other one stays float;
``OUT/NAME/export/<trial>.float.onnx``: the same network in float (its float weights, no quantizers),
what ``--benchmark`` times the export against; and
``OUT/NAME/export/<trial>.nqw``: a bit-packed weights file that holds exactly
``w_bits`` bits per weight, plus what the cost model's ``size_bits`` counts beside them (32 bits
each): per-channel weight scales, biases, the following BatchNorm in its inference form (scale and
shift per channel), each quantized layer's input scale and zero point, and the logit quantizer's.
Unpacking gives back the fake-quant weights bit for bit (``unpack`` + ``restored_weights``).

File layout: ``b"NQW1"``, a little-endian uint32 header length, a JSON header (layers in forward
order: name, kind, shape, bits, quantizer, byte offsets of each part), then the body. Integer
weights are stored as unsigned codes ``q + qmax`` (1 bit: ``q > 0``), least significant bit first.

"""

from __future__ import annotations

import sys
from .errors import NasqError, OneLineParser, unwritable
from .deploy.export_run import BENCHMARK_BATCHES, KERNEL_MODES, ONNX_TOLERANCE_PP, acc_gap_pp, export_run
from .deploy.runtime import kernel_summary


def latency_table(rows: list[dict]) -> str:
    """onnxruntime latency per model: float ONNX against the export, per batch size."""
    head = f"{'trial':<10} " + " ".join(f"{'float ms b' + str(b):>13} {'export ms':>10} {'ratio':>6}"
                                         for b in BENCHMARK_BATCHES)
    lines = ["onnxruntime latency, 1 thread (least of 3 sessions' medians of 10 timings):", head]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(f"{r['trial_id']:<10} " + " ".join(
            f"{lat['float', b]:>13.3f} {lat['export', b]:>10.3f} {lat['export', b] / lat['float', b]:>6.2f}"
            for b in BENCHMARK_BATCHES))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m nasq_ray.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("result_dir", metavar="RESULT_DIR")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--trial", metavar="ID", help="one trial (default: the best trial)")
    which.add_argument("--pareto", action="store_true", help="every model of the Pareto front")
    ap.add_argument("--tolerance-pp", type=float, default=ONNX_TOLERANCE_PP, metavar="PP",
                    help="largest allowed |onnxruntime - fake-quant| test accuracy, in percentage points "
                         f"(default {ONNX_TOLERANCE_PP}); beyond it the command exits 1")
    ap.add_argument("--format", choices=["onnx", "packed"], default="onnx",
                    help="onnx: ONNX Q/DQ model checked in onnxruntime, and the packed weights file (default); "
                         "packed: the packed weights file only")
    ap.add_argument("--benchmark", action="store_true",
                    help="also time each model in onnxruntime (1 thread, batch 1 and 64, least of 3 sessions' "
                         "medians): "
                         "the export against the float ONNX model of the same network")
    ap.add_argument("--kernels", choices=KERNEL_MODES, default="measured",
                    help="measured: an 8/8 layer is written for onnxruntime's integer kernels unless the whole model "
                         "runs faster on this machine with it on a float kernel (default); integer: every 8/8 layer "
                         "that qualifies")
    args = ap.parse_args(argv)
    if args.benchmark and args.format != "onnx":
        print("error: --benchmark: needs --format onnx (it times ONNX models)", file=sys.stderr)
        return 2
    if not args.tolerance_pp >= 0:
        print(f"error: --tolerance-pp: {args.tolerance_pp} is not allowed; allowed: a number >= 0", file=sys.stderr)
        return 2
    try:
        rows = export_run(args.result_dir, args.trial, args.pareto, args.format, args.benchmark, args.kernels)
    except NasqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # export/ inside a folder this user cannot write
        print(f"error: export: {unwritable(e)}", file=sys.stderr)
        return 2
    onnx = args.format == "onnx"
    head = f"{'trial':<10} "
    if onnx:
        head += f"{'fake-quant test':>15} {'onnxruntime':>11} {'diff pp':>7} {'changed':>7}  "
    print(head + f"{'packed bits':>12} {'size_bits':>10} {'diff':>7} {'header B':>9}  restored == fake-quant")
    for r in rows:
        line = f"{r['trial_id']:<10} "
        if onnx:
            line += (f"{r['fq_test_acc']:>15.4f} {r['onnx_test_acc']:>11.4f} {acc_gap_pp(r):>+7.2f} "
                     f"{r['changed']:>7}  ")
        diff = (r["body_bits"] - r["size_bits"]) / r["size_bits"] * 100
        print(line + f"{r['body_bits']:>12,} {r['size_bits']:>10,} {diff:>+6.2f}% {r['header_bytes']:>9}  "
              f"{'yes' if r['exact'] else 'NO'}  {r.get('onnx_path', r['path'])}")
    ok = all(r["exact"] for r in rows)
    if onnx:
        print(f"test split: {rows[0]['test_n'] if rows else 0} samples; changed = test predictions that differ "
              "between onnxruntime and fake-quant")
        for r in rows:
            print(f"{r['trial_id']}: {kernel_summary(r['kernels'])}")
        if args.benchmark:
            print(latency_table(rows))
        off = [r["trial_id"] for r in rows if abs(acc_gap_pp(r)) > args.tolerance_pp]
        if off:
            print(f"onnxruntime accuracy differs from fake-quant by more than {args.tolerance_pp} pp for: "
                  f"{', '.join(off)}", file=sys.stderr)
        ok = ok and not off
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
