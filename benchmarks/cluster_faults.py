"""Long-run costs of a search: the driver's memory per 100 trials, disk per trial, resume overhead.

* ``memory``: a tabular search (nb201, no training, so the driver's own growth dominates) of
  ``--trials`` trials; the driver's resident memory (VmRSS of the ``python -m nasq_ray.run`` process)
  is sampled against the number of finished trials (its progress lines); reported: RSS at start of
  the search and at the end, and the least-squares slope in MiB per 100 trials after the first 100.
* ``disk``: the default digits search with ``--keep-checkpoints 1`` (the default); bytes per trial
  folder (checkpoint, logs) and per experiment, and the same run keeping every checkpoint.
* ``resume``: a digits search stopped by SIGKILL of the driver (and of the Ray it started) after its
  first finished trials, then ``--resume``: seconds from the resume command's start to the first new
  result (a new line in any ``trial_*/result.json``), and to Ray Tune's restore being done (first
  progress line) — repeated ``--repeats`` times.

    python benchmarks/cluster_faults.py [--what memory disk resume] [--trials 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from nasq_ray.testing import kill_session

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
RUN = [sys.executable, "-m", "nasq_ray.run"]


def finished_count(line: str) -> int | None:
    """Trials done, from a ``--log-format json`` progress line (None for other lines)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event.get("done") if isinstance(event, dict) and event.get("event") == "trial_end" else None


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------- memory

def memory(trials: int, out: Path) -> None:
    p = subprocess.Popen([*RUN, "--space", "nb201", "--searcher", "random", "--scheduler", "fifo",
                          "--num-samples", str(trials), "--out", str(out), "--name", "mem", "--log-format", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    samples: list[tuple[int, float]] = []  # (finished trials, RSS MiB)
    t0 = time.time()
    for line in p.stdout:
        done = finished_count(line)
        if done is not None:
            rss = rss_mib(p.pid)
            if rss is not None:
                samples.append((done, rss))
    p.wait()
    wall = time.time() - t0
    if p.returncode != 0 or not samples:
        raise SystemExit(f"memory run failed ({p.returncode})")
    tail = [(n, r) for n, r in samples if n > 100] or samples
    n_mean = statistics.fmean(n for n, _ in tail)
    r_mean = statistics.fmean(r for _, r in tail)
    slope = (sum((n - n_mean) * (r - r_mean) for n, r in tail)
             / max(sum((n - n_mean) ** 2 for n, _ in tail), 1e-9))
    print(f"memory: {trials} nb201 trials (random, fifo) in {wall:.0f} s; driver RSS at trial 1 "
          f"{samples[0][1]:.0f} MiB, at trial 100 {dict(samples).get(100, float('nan')):.0f} MiB, "
          f"at trial {samples[-1][0]} {samples[-1][1]:.0f} MiB; growth after the first 100: "
          f"{slope * 100:.2f} MiB per 100 trials (least squares over {len(tail)} samples)")


# ------------------------------------------------------------------------------------------ disk

def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def disk(out: Path) -> None:
    for keep in (1, 100):
        name = f"disk{keep}"
        subprocess.run([*RUN, "--num-samples", "12", "--scheduler", "fifo", "--keep-checkpoints", str(keep),
                        "--out", str(out), "--name", name, "--quiet"], check=True, env=ENV,
                       stdout=subprocess.DEVNULL)
        exp = out / name
        trials = sorted(exp.glob("trial_*"))
        per_trial = [_du(t) for t in trials]
        ckpt = [sum(_du(c) for c in t.glob("checkpoint_*")) for t in trials]
        n_ckpt = [len(list(t.glob("checkpoint_*"))) for t in trials]
        print(f"disk, --keep-checkpoints {keep}: {len(trials)} trials of 15 epochs; per trial folder median "
              f"{statistics.median(per_trial) / 1024:.0f} KiB (max {max(per_trial) / 1024:.0f}), of which "
              f"checkpoints median {statistics.median(ckpt) / 1024:.0f} KiB in {statistics.median(n_ckpt):.0f} "
              f"folder(s); whole experiment {_du(exp) / 1024:.0f} KiB")


# ---------------------------------------------------------------------------------------- resume

def _result_lines(exp: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in exp.glob("trial_*/result.json"))


def _finished(exp: Path, epochs: int) -> int:
    n = 0
    for f in exp.glob("trial_*/result.json"):
        lines = f.read_text().splitlines()
        n += bool(lines) and f'"epoch": {epochs},' in lines[-1]
    return n


def _wait(check, timeout_s: float) -> None:
    end = time.time() + timeout_s
    while time.time() < end:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit("timed out")


def resume_once(out: Path, i: int) -> tuple[float, float, float]:
    name = f"resume{i}"
    exp = out / name
    t_start = time.time()
    driver = subprocess.Popen([*RUN, "--num-samples", "12", "--max-epochs", "6", "--scheduler", "fifo",
                               "--out", str(out), "--name", name, "--seed", str(i)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(lambda: _result_lines(exp) > 0, 600)
        fresh_first = time.time() - t_start
        _wait(lambda: _finished(exp, 6) >= 2, 600)
    finally:
        kill_session(driver.pid)
        driver.wait()
    time.sleep(1)
    before = _result_lines(exp)
    t0 = time.time()
    first_progress: list[float] = []
    p = subprocess.Popen([*RUN, "--resume", str(exp), "--log-format", "json"], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)

    def read():
        for line in p.stdout:
            if finished_count(line) is not None and not first_progress:
                first_progress.append(time.time() - t0)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _wait(lambda: _result_lines(exp) > before, 600)
    first_result = time.time() - t0
    p.wait()
    reader.join()
    total = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"resume failed ({p.returncode})")
    return first_result, first_progress[0] if first_progress else float("nan"), total, fresh_first


def resume(repeats: int, out: Path) -> None:
    rows = [resume_once(out, i) for i in range(repeats)]
    for i, (first, progress, total, fresh) in enumerate(rows):
        print(f"resume #{i}: first new result {first:.1f} s after the resume command started (a fresh run: "
              f"{fresh:.1f} s to its first result); first finished-trial line {progress:.1f} s; whole "
              f"resumed run {total:.1f} s")
    extra = [r[0] - r[3] for r in rows]
    print(f"resume: median {statistics.median(r[0] for r in rows):.1f} s from `--resume` to the first new "
          f"result (min {min(r[0] for r in rows):.1f}, max {max(r[0] for r in rows):.1f}; includes Python "
          f"and Ray start); {statistics.median(extra):+.1f} s against a fresh run's first result")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", nargs="+", default=["memory", "disk", "resume"], choices=["memory", "disk", "resume"])
    ap.add_argument("--trials", type=int, default=1000, help="tabular trials for the memory run")
    ap.add_argument("--repeats", type=int, default=3, help="kill-and-resume repetitions")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "memory" in args.what:
            memory(args.trials, out)
        if "disk" in args.what:
            disk(out)
        if "resume" in args.what:
            resume(args.repeats, out)


if __name__ == "__main__":
    main()
