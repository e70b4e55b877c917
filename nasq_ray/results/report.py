"""``python -m nasq_ray.report RESULT_DIR [RESULT_DIR ...]``: the picture of a search.

One folder: writes ``report.html`` (one self-contained page, no network: inline SVG plots whose
points show their trial and config on hover, a sortable trials table) and ``pareto.png``
(matplotlib) into it. The page holds the Pareto front of validation (and, for front models, test)
accuracy against size and against BitOPs, hypervolume over finished trials, each front model's
bit-width per layer, parameter importances (Optuna's fANOVA over the run's study) and the trials.

Several folders: overlays their fronts on one plot (``compare.html`` and ``compare.png`` in
``--out``, default the current folder).

Works on a finished, a running and an interrupted experiment: it reads ``trials.csv`` where the
search wrote it, and otherwise (or in addition) each trial's ``result.json`` as the trials report.

"""

from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from ..config import saved_config
from ..errors import ConfigError, NasqError
from ..objective import hypervolume
from ..trials.base import trial_status
from .files import RECORD_COLUMNS
from .records import TrialRecord, bits_of, pareto_front


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


BIT_COLORS = {1: "#67001f", 2: "#b2182b", 3: "#d6604d", 4: "#f4a582", 5: "#fddbc7", 6: "#d1e5f0", 7: "#92c5de",
              8: "#4393c3", 32: "#2166ac"}


NOT_PARAMS = set(RECORD_COLUMNS)


@dataclass
class Run:
    """What a results folder says about a search."""

    folder: Path
    name: str
    acc: str = "val_acc"
    cost: str = "size_kb"
    requested: int = 0
    max_epochs: int = 0
    trials: list[dict] = field(default_factory=list)  # one dict per trial: status, metrics, params
    curves: dict[str, list[dict]] = field(default_factory=dict)  # trial id -> reported results
    state: str = "finished"  # finished | interrupted | running

    @cached_property  # trials are final once load_run returns
    def complete(self) -> list[dict]:
        return [t for t in self.trials if t["status"] == "complete" and _isnum(t.get(self.acc))
                and _isnum(t.get(self.cost))]

    @cached_property
    def front(self) -> list[dict]:
        pool = self.complete
        return [pool[i] for i in pareto_front([(t[self.acc], t[self.cost]) for t in pool])]


def _isnum(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _value(text: str):
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _experiment_folder(folder: Path) -> Path:
    """Where Ray Tune keeps the run's trial folders (its storage; the results folder by default)."""
    try:
        return saved_config(folder, "report").local_experiment_dir or folder
    except NasqError:
        return folder


def _record_row(r: TrialRecord) -> dict:
    """A record as the trials.csv row the report reads (numbers as numbers)."""
    row = {"trial_id": r.trial_id, "status": r.status, "epochs": r.epochs, "test_acc": r.test_acc,
           "test_f1": r.test_f1, "bits": r.bits, "time_s": r.time_s, "node": r.node,
           "error": r.error or r.metrics.get("fail_reason", "")}
    row.update({k: v for k, v in r.metrics.items() if k in NOT_PARAMS and k not in row})
    return {**row, **r.config, **r.extra}


def load_run(folder: str | Path, records: list[TrialRecord] | None = None) -> Run:
    """What a results folder says about a search. ``records`` (a search that just ended hands them
    over) stand for trials.csv."""
    import yaml

    folder = Path(folder).expanduser().resolve()
    saved_file = folder / "experiment.yaml"
    if not folder.is_dir() or not (saved_file.is_file() or (folder / "trials.csv").is_file()):
        raise ConfigError(f"report: '{folder}' holds no nasq-ray results (no experiment.yaml or trials.csv); "
                          "give the results folder of a run (OUT/NAME)")
    saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else {}
    saved = saved if isinstance(saved, dict) else {}
    objective = saved.get("objective") or {}
    search = saved.get("search") or {}
    run = Run(folder, folder.name, acc=objective.get("acc", "val_acc"), cost=objective.get("cost", "size_kb"),
              requested=int(search.get("num_samples", 0) or 0), max_epochs=int(search.get("max_epochs", 0) or 0))
    by_id: dict[str, dict] = {}
    exp = _experiment_folder(folder)
    for result in sorted(exp.glob("trial_*/result.json")):
        lines = []
        for line in result.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                break  # a line being written right now
        if not lines:
            continue
        tid = result.parent.name.replace("trial_", "")
        run.curves[tid] = lines
        last = lines[-1]
        params = {k: v for k, v in (last.get("config") or {}).items() if not isinstance(v, dict)}
        # no trials.csv row yet: a trial short of the budget may still be running
        status = trial_status(last, False, run.max_epochs or math.inf, ended=False)
        by_id[tid] = {"trial_id": tid, "status": status, "epochs": last.get("epoch"), "bits": bits_of(last),
                      "end_time": last.get("timestamp"),
                      **{k: last[k] for k in (run.acc, run.cost, "val_acc", "score", "size_kb", "bitops", "avg_w_bits")
                         if k in last}, "params": params}
    table = folder / "trials.csv"
    rows = [_record_row(r) for r in records] if records is not None else None
    if rows is None and table.is_file():
        with open(table) as f:
            rows = [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]
    if rows is not None:
        for row in rows:
            tid = row["trial_id"]
            t = by_id.setdefault(tid, {"trial_id": tid, "params": {}})
            end_time = t.get("end_time")
            t.update({k: v for k, v in row.items() if k in NOT_PARAMS})
            t["params"] = {k: v for k, v in row.items() if k not in NOT_PARAMS and v not in ("", None)}
            t["trial_id"], t["end_time"] = tid, end_time
        run.state = "interrupted" if any(t["status"] == "unfinished" for t in by_id.values()) or (
            run.requested and len(by_id) < run.requested) else "finished"
    else:
        run.state = "running"
    run.trials = sorted(by_id.values(), key=lambda t: (t.get("end_time") or 0, t["trial_id"]))
    return run


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (accuracy max, cost min) up to ``ref`` (acc, cost)."""
    return hypervolume(points, ref, ("max", "min")) if points else 0.0


def hv_over_trials(run: Run) -> list[tuple[int, float]]:
    done = run.complete
    if not done:
        return []
    ref = (0.0, max(t[run.cost] for t in done) * 1.1)
    out, pts = [], []
    for i, t in enumerate(done, 1):
        pts.append((t[run.acc], t[run.cost]))
        out.append((i, hypervolume_2d(pts, ref)))
    return out


def importances(run: Run) -> dict[str, float]:
    """fANOVA importances of the parameters for the score, from the run's Optuna study."""
    db = run.folder / "optuna.db"
    if not db.is_file() or len(run.complete) < 3:
        return {}
    import optuna

    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{db}")
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0), target=target))
    except Exception:  # noqa: BLE001 - too few trials, one value everywhere...: no importances
        return {}


W, H, PAD = 700, 340, 52


LEGEND_W = 165  # right margin holding the legend


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        out, e = [], math.floor(math.log10(lo))
        while 10 ** e <= hi * 1.0001:
            for m in (1, 2, 5):
                v = m * 10 ** e
                if lo <= v <= hi:
                    out.append(v)
            e += 1
        return out or [lo, hi]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-12)))
    if (hi - lo) / step < 3:
        step /= 2
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt_tick(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:.3g}"


class Plot:
    """A scatter/line plot as inline SVG (no library): points carry a <title> shown on hover."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xs: list[float], ys: list[float], logx: bool = False):
        self.title, self.xlabel, self.ylabel, self.logx = title, xlabel, ylabel, logx
        xs = [x for x in xs if _isnum(x) and (x > 0 or not logx)] or [1.0]
        ys = [y for y in ys if _isnum(y)] or [0.0, 1.0]
        self.x0, self.x1 = min(xs), max(xs)
        if logx:
            self.x0, self.x1 = self.x0 / 1.3, self.x1 * 1.3
        else:
            span = (self.x1 - self.x0) or 1.0
            self.x0, self.x1 = self.x0 - 0.05 * span, self.x1 + 0.05 * span
        span = (max(ys) - min(ys)) or 0.1
        self.y0, self.y1 = min(ys) - 0.05 * span, max(ys) + 0.05 * span
        self.items: list[str] = []
        self.legend: list[tuple[str, str]] = []

    def x(self, v: float) -> float:
        if self.logx:
            f = (math.log10(v) - math.log10(self.x0)) / (math.log10(self.x1) - math.log10(self.x0))
        else:
            f = (v - self.x0) / (self.x1 - self.x0)
        return PAD + f * (W - PAD - 12 - LEGEND_W)

    def y(self, v: float) -> float:
        return H - PAD + 14 - (v - self.y0) / (self.y1 - self.y0) * (H - PAD - 14 - 24)

    def points(self, pts: list[tuple[float, float, str]], color: str, r: float = 4, filled: bool = True,
               label: str | None = None, cls: str = "pt") -> None:
        for xv, yv, tip in pts:
            if not (_isnum(xv) and _isnum(yv)) or (self.logx and xv <= 0):
                continue
            fill = color if filled else "none"
            self.items.append(f'<circle class="{cls}" cx="{self.x(xv):.1f}" cy="{self.y(yv):.1f}" r="{r}" '
                              f'fill="{fill}" stroke="{color}" fill-opacity="0.75"><title>{html.escape(tip)}'
                              f'</title></circle>')
        if label:
            self.legend.append((label, color))

    def line(self, pts: list[tuple[float, float]], color: str, label: str | None = None, step: bool = False) -> None:
        pts = [(a, b) for a, b in pts if _isnum(a) and _isnum(b) and (a > 0 or not self.logx)]
        if len(pts) < 1:
            return
        coords = []
        for i, (xv, yv) in enumerate(pts):
            if step and i:
                coords.append(f"{self.x(xv):.1f},{self.y(pts[i - 1][1]):.1f}")
            coords.append(f"{self.x(xv):.1f},{self.y(yv):.1f}")
        self.items.append(f'<polyline class="line" points="{" ".join(coords)}" fill="none" stroke="{color}" '
                          'stroke-width="1.8"/>')
        if label:
            self.legend.append((label, color))

    def svg(self) -> str:
        parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
                 f'viewBox="0 0 {W} {H}" role="img" aria-label="{html.escape(self.title)}">',
                 f'<text x="{W / 2}" y="16" text-anchor="middle" class="title">{html.escape(self.title)}</text>']
        x_axis, y_axis = H - PAD + 14, PAD
        parts.append(f'<line x1="{y_axis}" y1="{x_axis}" x2="{W - 12 - LEGEND_W}" y2="{x_axis}" class="axis"/>')
        parts.append(f'<line x1="{y_axis}" y1="24" x2="{y_axis}" y2="{x_axis}" class="axis"/>')
        for v in _ticks(self.x0, self.x1, self.logx):
            parts.append(f'<text x="{self.x(v):.1f}" y="{x_axis + 14}" text-anchor="middle" class="tick">'
                         f'{_fmt_tick(v)}</text>')
        for v in _ticks(self.y0, self.y1, False):
            parts.append(f'<text x="{y_axis - 4}" y="{self.y(v) + 4:.1f}" text-anchor="end" class="tick">'
                         f'{_fmt_tick(v)}</text>')
            parts.append(f'<line x1="{y_axis}" y1="{self.y(v):.1f}" x2="{W - 12 - LEGEND_W}" y2="{self.y(v):.1f}" '
                         'class="grid"/>')
        parts.append(f'<text x="{(W - LEGEND_W + PAD) / 2}" y="{H - 6}" text-anchor="middle" class="label">'
                     f'{html.escape(self.xlabel)}</text>')
        parts.append(f'<text transform="translate(12,{H / 2}) rotate(-90)" text-anchor="middle" class="label">'
                     f'{html.escape(self.ylabel)}</text>')
        parts += self.items
        for i, (label, color) in enumerate(self.legend):
            yy = 34 + 15 * i
            parts.append(f'<rect x="{W - LEGEND_W + 4}" y="{yy - 9}" width="10" height="10" fill="{color}"/>'
                         f'<text x="{W - LEGEND_W + 19}" y="{yy}" class="legend">{html.escape(label)}</text>')
        parts.append("</svg>")
        return "\n".join(parts)


def _tip(t: dict, run: Run) -> str:
    head = [f"trial {t['trial_id']} ({t.get('status', '')})"]
    for k in (run.acc, "test_acc", run.cost, "bitops", "score", "bits"):
        if t.get(k) not in (None, ""):
            head.append(f"{k}: {t[k]}")
    return "\n".join(head + [f"{k} = {v}" for k, v in (t.get("params") or {}).items()])


def front_plot(run: Run, cost: str, label: str) -> str | None:
    pts = [t for t in run.trials if _isnum(t.get(run.acc)) and _isnum(t.get(cost))]
    if not pts:
        return None
    front = [t for t in run.front if _isnum(t.get(cost))]
    tests = [t.get("test_acc") for t in front if _isnum(t.get("test_acc"))]
    p = Plot(f"{run.acc} vs {label}", label, "accuracy", [t[cost] for t in pts],
             [t[run.acc] for t in pts] + tests, logx=min(t[cost] for t in pts) > 0)
    others = [t for t in pts if t not in front]
    p.points([(t[cost], t[run.acc], _tip(t, run)) for t in others if t.get("status") == "complete"], "#9e9e9e",
             label="complete trials")
    p.points([(t[cost], t[run.acc], _tip(t, run)) for t in others if t.get("status") != "complete"], "#c7c7c7",
             r=3, filled=False, label="pruned / running / failed")
    p.line(sorted((t[cost], t[run.acc]) for t in front), COLORS[0], step=True)
    p.points([(t[cost], t[run.acc], _tip(t, run)) for t in front], COLORS[0], r=5.5, label=f"front ({run.acc})",
             cls="pt front")
    p.points([(t[cost], t["test_acc"], _tip(t, run)) for t in front if _isnum(t.get("test_acc"))], COLORS[1],
             r=4, filled=False, label="front (test_acc)", cls="pt front-test")
    return p.svg()


def hv_plot(run: Run) -> str | None:
    hv = hv_over_trials(run)
    if not hv:
        return None
    p = Plot("hypervolume over finished trials", "complete trials, in the order they finished",
             f"HV ({run.acc} x {run.cost})", [i for i, _ in hv], [v for _, v in hv])
    p.line([(float(i), v) for i, v in hv], COLORS[2], step=True)
    p.points([(float(i), v, f"after {i} trials: {v:.4g}") for i, v in hv], COLORS[2], r=2.5)
    return p.svg()


def bits_chart(run: Run) -> str | None:
    front = [t for t in run.front if t.get("bits")]
    if not front:
        return None
    rows = [(t["trial_id"], str(t["bits"]).split()) for t in front]
    n_layers = max(len(b) for _, b in rows)
    cell_w, cell_h, left = 56, 24, 90
    width, height = max(left + cell_w * n_layers + 10, left + 46 * len(BIT_COLORS) + 10), 40 + cell_h * len(rows) + 40
    parts = [f'<svg class="bits" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
             f'<text x="{left}" y="16" class="title">bits per quantized layer (W/A; f = float), front models</text>']
    for j in range(n_layers):
        parts.append(f'<text x="{left + j * cell_w + cell_w / 2}" y="34" text-anchor="middle" class="tick">'
                     f'layer {j}</text>')
    for i, (tid, bits) in enumerate(rows):
        y = 40 + i * cell_h
        parts.append(f'<text x="{left - 6}" y="{y + 16}" text-anchor="end" class="tick">{html.escape(tid)}</text>')
        for j, wa in enumerate(bits):
            w = wa.split("/")[0]
            wb = 32 if w == "f" else int(w) if w.isdigit() else 32
            color = BIT_COLORS.get(wb, "#cccccc")
            parts.append(f'<rect x="{left + j * cell_w}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                         f'fill="{color}"><title>trial {html.escape(tid)}, layer {j}: W/A {html.escape(wa)}'
                         f'</title></rect><text x="{left + j * cell_w + cell_w / 2 - 1}" y="{y + 16}" '
                         f'text-anchor="middle" class="cell">{html.escape(wa)}</text>')
    legend_y = 40 + cell_h * len(rows) + 22
    for k, (b, color) in enumerate(BIT_COLORS.items()):
        parts.append(f'<rect x="{left + k * 46}" y="{legend_y - 10}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{left + k * 46 + 15}" y="{legend_y}" class="legend">{"f" if b == 32 else b}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def importance_chart(imp: dict[str, float]) -> str | None:
    if not imp:
        return None
    items = list(imp.items())[:15]
    left, bar_w, row_h = 200, 300, 20
    height = 30 + row_h * len(items)
    parts = [f'<svg class="importance" xmlns="http://www.w3.org/2000/svg" width="{left + bar_w + 60}" '
             f'height="{height}">', f'<text x="{left}" y="16" class="title">parameter importance for the score '
             '(fANOVA)</text>']
    top = max(v for _, v in items) or 1.0
    for i, (name, v) in enumerate(items):
        y = 26 + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" class="tick">{html.escape(name)}</text>'
                     f'<rect x="{left}" y="{y}" width="{bar_w * v / top:.1f}" height="{row_h - 5}" '
                     f'fill="{COLORS[3]}"><title>{html.escape(name)}: {v:.3f}</title></rect>'
                     f'<text x="{left + bar_w * v / top + 4:.1f}" y="{y + 13}" class="tick">{v:.3f}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def trials_table(run: Run) -> str:
    cols = ["trial_id", "status", "epochs", run.acc, "test_acc", run.cost, "bitops", "avg_w_bits", "score", "bits"]
    cols = list(dict.fromkeys(c for c in cols if any(t.get(c) not in (None, "") for t in run.trials)))
    front_ids = {t["trial_id"] for t in run.front}
    head = "".join(f'<th onclick="sortTable(this)">{html.escape(c)}</th>' for c in cols)
    rows = []
    for t in run.trials:
        cells = []
        for c in cols:
            v = t.get(c)
            shown = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
            sort_key = f' data-v="{v}"' if _isnum(v) else ""
            cells.append(f"<td{sort_key}>{html.escape(shown)}</td>")
        cls = ' class="front"' if t["trial_id"] in front_ids else ""
        rows.append(f'<tr{cls} title="{html.escape(_tip(t, run))}">{"".join(cells)}</tr>')
    return f'<table id="trials"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
svg { background: #fff; border: 1px solid #ddd; }
.title { font-size: 13px; font-weight: 600; } .tick, .legend { font-size: 11px; fill: #444; }
.label { font-size: 12px; } .cell { font-size: 11px; fill: #111; }
.axis { stroke: #333; } .grid { stroke: #eee; }
circle.pt:hover { stroke-width: 3; }
table { border-collapse: collapse; font-size: 12px; } th, td { border: 1px solid #ddd; padding: 3px 6px; }
th { background: #f3f3f3; cursor: pointer; user-select: none; } tr.front td { background: #eef5ff; }
.meta { color: #555; font-size: 13px; }
"""


SCRIPT = """
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const i = Array.from(th.parentNode.children).indexOf(th);
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = td => td.dataset.v !== undefined ? parseFloat(td.dataset.v) : td.textContent;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a.cells[i]), y = key(b.cells[i]);
    const r = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
    return asc ? r : -r;
  });
  rows.forEach(r => body.appendChild(r));
}
document.body.dataset.ready = document.querySelectorAll('svg').length;
"""


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n<script>{SCRIPT}</script></body></html>\n")


def render_html(run: Run) -> str:
    counts = {s: sum(t.get("status") == s for t in run.trials) for s in ("complete", "pruned", "failed")}
    others = len(run.trials) - sum(counts.values())
    meta = (f"{len(run.trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
            f"{counts['failed']} failed{f', {others} running or unfinished' if others else ''}); "
            f"experiment {run.state}; front: {len(run.front)} models; objective {run.acc} vs {run.cost}")
    plots = [front_plot(run, run.cost, run.cost)]
    if run.cost != "size_kb":
        plots.append(front_plot(run, "size_kb", "size_kb"))
    if run.cost != "bitops":
        plots.append(front_plot(run, "bitops", "bitops"))
    plots.append(hv_plot(run))
    plots = [p for p in plots if p]
    bits = bits_chart(run)
    imp = importance_chart(importances(run))
    body = [f"<h1>nasq-ray: {html.escape(run.name)}</h1>", f'<p class="meta">{html.escape(meta)}</p>',
            "<h2>Pareto front and progress</h2>", '<p class="meta">Hover a point for its trial and config; the '
            'front (blue) is drawn over all trials, with its models\' test accuracy (red rings).</p>',
            f'<div class="plots">{"".join(plots) or "<p>no finished trial yet</p>"}</div>']
    if bits:
        body += ["<h2>Bit-widths of the front's models</h2>", bits]
    body += ["<h2>Parameter importances</h2>", imp or '<p class="meta">not available yet (needs the run\'s '
             'optuna.db and at least 3 complete trials with varied parameters)</p>']
    body += ["<h2>Trials</h2>", '<p class="meta">Click a column to sort; front models highlighted.</p>',
             trials_table(run)]
    return _page(f"nasq-ray report: {run.name}", "\n".join(body))


def render_compare(runs: list[Run]) -> str:
    xs = [t[r.cost] for r in runs for t in r.front]
    ys = [t[r.acc] for r in runs for t in r.front]
    costs = {r.cost for r in runs}
    cost = costs.pop() if len(costs) == 1 else "cost"
    p = Plot("Pareto fronts compared", cost, "accuracy", xs, ys, logx=bool(xs) and min(xs) > 0)
    rows = []
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        front = r.front
        p.line(sorted((t[r.cost], t[r.acc]) for t in front), color, step=True)
        p.points([(t[r.cost], t[r.acc], f"{r.name}\n" + _tip(t, r)) for t in front], color, r=5, label=r.name)
        hv = hv_over_trials(r)
        rows.append(f"<tr><td>{html.escape(r.name)}</td><td>{len(r.trials)}</td><td>{len(front)}</td>"
                    f"<td>{max((t[r.acc] for t in front), default=float('nan')):.4f}</td>"
                    f"<td>{hv[-1][1] if hv else float('nan'):.4g}</td></tr>")
    table = ("<table><thead><tr><th>run</th><th>trials</th><th>front</th><th>best acc</th>"
             "<th>HV (own reference)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    body = ["<h1>nasq-ray: runs compared</h1>", f'<div class="plots">{p.svg()}</div>', table]
    return _page("nasq-ray: runs compared", "\n".join(body))


def pareto_png(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    single = len(runs) == 1
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        if single:
            pts = [t for t in r.trials if t.get("status") == "complete" and _isnum(t.get(r.acc))
                   and _isnum(t.get(r.cost))]
            ax.scatter([t[r.cost] for t in pts], [t[r.acc] for t in pts], s=14, color="#9e9e9e",
                       label="complete trials")
        front = r.front
        ax.step([t[r.cost] for t in front], [t[r.acc] for t in front], where="post", color=color)
        ax.scatter([t[r.cost] for t in front], [t[r.acc] for t in front], s=30, color=color,
                   label=f"front ({r.acc})" if single else r.name, zorder=3)
        if single:
            tested = [t for t in front if _isnum(t.get("test_acc"))]
            ax.scatter([t[r.cost] for t in tested], [t["test_acc"] for t in tested], s=30, facecolors="none",
                       edgecolors=COLORS[1], label="front (test_acc)", zorder=3)
    xs = [t[r.cost] for r in runs for t in r.trials if _isnum(t.get(r.cost))]
    if xs and min(xs) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(runs[0].cost)
    ax.set_ylabel("accuracy")
    ax.set_title(runs[0].name if single else "Pareto fronts compared")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(folder: str | Path, records: list[TrialRecord] | None = None) -> Path:
    """Write report.html and pareto.png into a results folder; return the HTML path. ``records``:
    the search's own, handed over in memory (otherwise trials.csv is read)."""
    run = load_run(folder, records)
    out = run.folder / "report.html"
    out.write_text(render_html(run))
    pareto_png([run], run.folder / "pareto.png")
    return out


def write_compare(folders: list[str | Path], out_dir: str | Path) -> Path:
    runs = [load_run(f) for f in folders]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "compare.html"
    out.write_text(render_compare(runs))
    pareto_png(runs, out_dir / "compare.png")
    return out
