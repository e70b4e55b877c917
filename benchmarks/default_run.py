"""The default search, exactly as a user runs it: ``python -m nasq_ray.run`` with no search flags.

Measures the wall time of the whole command (Python start, Ray start, 24 trials, test evaluation of
the front) and reads its results: number of trials, and the most accurate front model whose weights
average at most 4 bits.

    python benchmarks/default_run.py [--runs 1]
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


def one_run(out: Path, seed: int) -> dict:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "nasq_ray.run", "--out", str(out), "--name", "default",
                        "--seed", str(seed), "--quiet"], capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"run failed ({p.returncode}): {p.stderr[-2000:]}")
    with open(out / "default" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    with open(out / "default" / "pareto.csv") as f:
        front = list(csv.DictReader(f))
    low_bit = [r for r in front if float(r["avg_w_bits"]) <= 4.0]
    best = max(low_bit, key=lambda r: float(r["val_acc"])) if low_bit else None
    return {"wall_s": wall, "trials": len(trials), "front": len(front), "best_low_bit": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="repeat with seeds 0..runs-1")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    print(f"python -m nasq_ray.run (defaults), {os.cpu_count()} CPUs")
    print(f"{'seed':>4} {'wall_s':>7} {'trials':>6} {'front':>5}  most accurate front model with avg weight bits <= 4")
    for seed in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            r = one_run(Path(d), seed)
        b = r["best_low_bit"]
        desc = (f"val_acc {float(b['val_acc']):.4f}, test_acc {float(b['test_acc']):.4f}, avg_w_bits "
                f"{float(b['avg_w_bits']):.2f}, size {float(b['size_kb']):.3f} kB, bits {b['bits']}") if b else "none"
        print(f"{seed:>4} {r['wall_s']:>7.1f} {r['trials']:>6} {r['front']:>5}  {desc}", flush=True)


if __name__ == "__main__":
    main()
