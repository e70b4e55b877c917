"""Mixed-precision policies and the warm start, compared on the default search.

Each variant is ``digits_small`` with one change to its ``quant:`` section (or ``--warm-start``),
searched exactly as the default run (``python -m nasq_ray.run``: TPE + ASHA, 24 trials of up to 15
epochs), one run per seed. Reported per variant: the number of searched parameters, mean over
seeds of the hypervolume of the (val_acc, size_kb) front of complete trials (reference point:
val_acc 0.5, size_kb 10), of the best score and of the test accuracy of the best trial, and the
wall time of the run.

    python benchmarks/policies.py [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nasq_ray.objective import hypervolume
from nasq_ray.space import SearchSpace
from nasq_ray.space import read_space_yaml, resolve_space_path

REFERENCE = (0.5, 10.0)  # (val_acc, size_kb)
VARIANTS = {
    "layer (default)": ({}, []),
    "layer + warm start 4": ({}, ["--warm-start", "4"]),
    "block": ({"policy": "block"}, []),
    "uniform": ({"policy": "uniform"}, []),
    "auto (30 dB)": ({"policy": "auto"}, []),
    "layer, pin 8": ({"pin_first_last": 8}, []),
    "block, pin 8": ({"policy": "block", "pin_first_last": 8}, []),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = read_space_yaml(resolve_space_path("digits_small"))
    print(f"digits_small, default search (tpe + asha, 24 trials), seeds {seeds}; hypervolume of (val_acc, size_kb) "
          f"fronts, reference {REFERENCE}")
    print(f"{'variant':<22} {'params':>6} {'hypervolume':>11} {'best score':>10} {'best test_acc':>13} {'wall_s':>6}")
    with tempfile.TemporaryDirectory() as d:
        for name, (quant, flags) in VARIANTS.items():
            raw = {**base, "quant": {**base["quant"], **quant}}
            path = Path(d) / f"{len(os.listdir(d))}.yaml"
            path.write_text(yaml.safe_dump(raw))
            n_params = len(SearchSpace(raw, (1, 8, 8), 10).params)
            hv, best, test, wall = [], [], [], []
            for seed in seeds:
                out = Path(d) / f"out{seed}"
                t0 = time.time()
                p = subprocess.run([sys.executable, "-m", "nasq_ray.run", "--space", str(path), "--out", str(out),
                                    "--name", path.stem, "--seed", str(seed), "--quiet", *flags],
                                   capture_output=True, text=True)
                wall.append(time.time() - t0)
                if p.returncode != 0:
                    raise SystemExit(f"{name}: run failed ({p.returncode}): {p.stderr[-2000:]}")
                with open(out / path.stem / "trials.csv") as f:
                    rows = [r for r in csv.DictReader(f) if r["status"] == "complete"]
                hv.append(hypervolume([(float(r["val_acc"]), float(r["size_kb"])) for r in rows], REFERENCE,
                                      ("max", "min")))
                top = max(rows, key=lambda r: float(r["score"]))
                best.append(float(top["score"]))
                test.append(float(top["test_acc"]) if top.get("test_acc") else float("nan"))
            print(f"{name:<22} {n_params:>6} {statistics.fmean(hv):>11.3f} {statistics.fmean(best):>10.4f} "
                  f"{statistics.fmean(test):>13.4f} {statistics.fmean(wall):>6.1f}", flush=True)


if __name__ == "__main__":
    main()
