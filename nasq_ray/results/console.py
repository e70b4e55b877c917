"""What a search prints: the Pareto front as a text table and the end-of-run summary (text or JSON).
"""

from __future__ import annotations

import json
import math
from ..objective import ObjectiveConfig
from .records import BITS_METRIC, SearchResult, TrialRecord


def counted(n: int, noun: str) -> str:
    """``"1 trial"``, ``"3 trials"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def front_table(front: list[TrialRecord], objective: ObjectiveConfig) -> str:
    """The Pareto front as a text table (cost columns that the trials report)."""
    extra = [c for c in ("size_kb", "bitops", "avg_w_bits") if c != objective.cost and front and c in front[0].metrics]
    cols = [objective.cost, *extra]
    head = f"{'trial':<10} {objective.acc:>9} {'test_acc':>9} " + " ".join(f"{c:>12}" for c in cols)
    head += f" {'epochs':>6}" + ("  bits (W/A per layer)" if front and BITS_METRIC in front[0].metrics else "")
    lines = [head, "-" * len(head)]
    for r in front:
        m = r.metrics
        test = f"{r.test_acc:.4f}" if r.test_acc is not None else "-"
        vals = " ".join(f"{_num(m.get(c)):>12}" for c in cols)
        lines.append(f"{r.trial_id:<10} {m[objective.acc]:>9.4f} {test:>9} {vals} {r.epochs:>6}  {r.bits}".rstrip())
    return "\n".join(lines)


def reference_table(rows: list[dict], objective: ObjectiveConfig) -> str:
    """The reference models (float, post-training quantization) as a text table."""
    cols = [c for c in (objective.cost, "size_kb", "bitops", "macs", "avg_w_bits") if c in rows[0]]
    cols = list(dict.fromkeys(cols))
    head = f"{'model':<10} {objective.acc:>9} {'test_acc':>9} " + " ".join(f"{c:>12}" for c in cols) + "  bits"
    lines = [head, "-" * len(head)]
    for r in rows:
        test = f"{r['test_acc']:.4f}" if r.get("test_acc") is not None else "-"
        vals = " ".join(f"{_num(r.get(c)):>12}" for c in cols)
        lines.append(f"{r['name']:<10} {r[objective.acc]:>9.4f} {test:>9} {vals}  {r.get('bits') or ''}".rstrip())
    return "\n".join(lines)


def _num(v) -> str:
    """A metric for a table cell: integers with thousands separators, others to 4 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return f"{int(v):,}"


def summary_json(result: SearchResult) -> str:
    """The end of a search as one JSON object (``--log-format json``)."""
    objective = result.objective

    def row(r: TrialRecord) -> dict:
        return {"trial_id": r.trial_id, objective.acc: r.metrics.get(objective.acc), "test_acc": r.test_acc,
                objective.cost: r.metrics.get(objective.cost), "score": r.metrics.get("score"),
                "bits": r.bits, "config": r.config}

    counts = {s: sum(r.status == s for r in result.records) for s in ("complete", "pruned", "failed", "unfinished")}
    return json_line({"event": "summary", "trials": len(result.records), **counts, "wall_s": round(result.wall_s, 1),
                      "out_dir": str(result.out_dir), "interrupted": result.interrupted,
                      "front": [row(r) for r in result.front], "best": row(result.best) if result.best else None,
                      "reference": result.reference})


def json_line(obj) -> str:
    """``obj`` as one line of strict JSON: NaN and infinity (a failed trial's -inf score), which
    Python writes as ``-Infinity`` and other parsers refuse, become null; NumPy scalars numbers."""
    def strict(o):
        if isinstance(o, dict):
            return {str(k): strict(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [strict(v) for v in o]
        if hasattr(o, "item") and not isinstance(o, (str, bytes)):
            o = o.item()
        if isinstance(o, float) and not math.isfinite(o):
            return None
        return o if o is None or isinstance(o, (str, int, float, bool)) else str(o)

    return json.dumps(strict(obj), allow_nan=False)


def _wrapped(items: list[str], width: int = 100, indent: str = "  ") -> list[str]:
    lines, line = [], ""
    for item in items:
        if line and len(line) + 2 + len(item) > width - len(indent):
            lines.append(indent + line)
            line = ""
        line = f"{line}  {item}" if line else item
    return lines + ([indent + line] if line else [])


def summary(result: SearchResult) -> str:
    """The text printed at the end of a search: the front and the best config."""
    objective = result.objective
    n = len(result.records)
    by_status = {s: sum(r.status == s for r in result.records)
                 for s in ("complete", "pruned", "failed", "unfinished")}
    lines = [
        "",
        f"{counted(n, 'trial')} in {result.wall_s:.0f} s ({by_status['complete']} complete, "
        f"{by_status['pruned']} pruned, "
        f"{by_status['failed']} failed" + (f", {by_status['unfinished']} unfinished" if by_status["unfinished"] else "")
        + f"); results in {result.out_dir}",
        "",
        f"Pareto front ({objective.acc} vs {objective.cost}; test accuracy of front models only):",
        front_table(result.front, objective) if result.front else "(empty: no trial has finished yet)",
    ]
    if result.reference:
        lines += ["", "Reference models (no search; test accuracy on the test split):", reference_table(result.reference,
                                                                                                  objective)]
    if result.best is not None:
        b = result.best
        m = b.metrics
        size = "".join(f", {k} {_num(m[k])}" for k in ("size_kb", "bitops") if k in m and k != objective.cost)
        test = "-" if b.test_acc is None else round(b.test_acc, 4)
        lines += ["", f"Best score {m['score']:.4f}: trial {b.trial_id}, {objective.acc} {m[objective.acc]:.4f}, "
                      f"test_acc {test}, {objective.cost} {_num(m[objective.cost])}{size}",
                  "Best config:"]
        lines += _wrapped([f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in b.config.items()])
    return "\n".join(lines)


def clock(seconds: float | None) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on); ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def progress_line(st: dict) -> str:
    """The live progress line of a search from its state (done, running, pruned, failed, ...)."""
    best = "-" if st["best_score"] is None else f"{st['best_score']:.4f}"
    return (f"[{st['done']:>3}/{st['requested']} done | {st['running']} running | {st['pruned']} pruned | "
            f"{st['failed']} failed]  best score {best}  front {st['front_size']}  "
            f"elapsed {clock(st['elapsed_s'])}  left ~{clock(st['eta_s'])}")
