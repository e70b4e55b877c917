"""Export of the default search's Pareto models, checked: ONNX in onnxruntime against fake-quant,
packed file against the cost model.

Runs ``python -m nasq_ray.run`` with its defaults (one run per seed), then exports every model of
each run's Pareto front (``nasq_ray.export.export_run(..., pareto=True)``). Per model: test accuracy
of the fake-quant model and of the ONNX model in onnxruntime (default graph optimizations), the
number of test predictions that differ, the packed body against ``size_bits`` (the header is
excluded and printed apart) and whether the unpacked weights equal the fake-quant ones. Goals
(issue 4): accuracy within 0.5 points, packed size within 5%, unpacked weights exact.

    python benchmarks/export_check.py [--seeds 0,1,2] [--space digits_small]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime

from nasq_ray.deploy.export_run import export_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--space", default="digits_small")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    print(f"default search on {args.space}, seeds {args.seeds}; onnxruntime {onnxruntime.__version__}")
    print(f"{'seed':>4} {'trial':<9} {'bits (W/A per layer)':<26} {'fq_test':>7} {'ort_test':>8} {'diff_pp':>7} "
          f"{'changed':>7} {'packed':>8} {'size_bits':>9} {'diff':>7} {'header_B':>8} exact")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([sys.executable, "-m", "nasq_ray.run", "--space", args.space, "--out", d,
                                "--name", "run", "--seed", str(seed), "--quiet"], capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"search failed ({p.returncode}): {p.stderr[-2000:]}")
            t0 = time.time()
            summaries = export_run(Path(d) / "run", pareto=True)
            export_s = time.time() - t0
            with open(Path(d) / "run" / "pareto.csv") as f:
                bits = {r["trial_id"]: r["bits"] for r in csv.DictReader(f)}
        for r in summaries:
            gap = (r["onnx_test_acc"] - r["fq_test_acc"]) * 100
            size_diff = (r["body_bits"] - r["size_bits"]) / r["size_bits"] * 100
            rows.append((gap, size_diff, r["exact"]))
            print(f"{seed:>4} {r['trial_id']:<9} {bits[r['trial_id']][:26]:<26} {r['fq_test_acc']:>7.4f} "
                  f"{r['onnx_test_acc']:>8.4f} {gap:>+7.2f} {r['changed']:>7} {r['body_bits']:>8} "
                  f"{r['size_bits']:>9} {size_diff:>+6.2f}% {r['header_bytes']:>8} {'yes' if r['exact'] else 'NO'}",
                  flush=True)
        print(f"     (seed {seed}: {len(summaries)} front models exported and checked in {export_s:.1f} s; "
              f"test split {summaries[0]['test_n'] if summaries else 0} samples)")
    print(f"{len(rows)} models: max |accuracy diff| {max(abs(g) for g, _, _ in rows):.2f} pp, "
          f"max |packed - size_bits| {max(abs(s) for _, s, _ in rows):.2f}%, "
          f"unpacked == fake-quant: {sum(e for *_, e in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
