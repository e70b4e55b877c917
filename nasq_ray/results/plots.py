"""The report's pictures: inline SVG plots (no library; points show their trial and config on
hover), the bits chart, the trials table, and ``pareto.png`` (matplotlib).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from .report_data import Run, is_finite_number, hv_over_trials


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


BIT_COLORS = {1: "#67001f", 2: "#b2182b", 3: "#d6604d", 4: "#f4a582", 5: "#fddbc7", 6: "#d1e5f0", 7: "#92c5de",
              8: "#4393c3", 32: "#2166ac"}


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
        xs = [x for x in xs if is_finite_number(x) and (x > 0 or not logx)] or [1.0]
        ys = [y for y in ys if is_finite_number(y)] or [0.0, 1.0]
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
            if not (is_finite_number(xv) and is_finite_number(yv)) or (self.logx and xv <= 0):
                continue
            fill = color if filled else "none"
            self.items.append(f'<circle class="{cls}" cx="{self.x(xv):.1f}" cy="{self.y(yv):.1f}" r="{r}" '
                              f'fill="{fill}" stroke="{color}" fill-opacity="0.75"><title>{html.escape(tip)}'
                              f'</title></circle>')
        if label:
            self.legend.append((label, color))

    def line(self, pts: list[tuple[float, float]], color: str, label: str | None = None, step: bool = False) -> None:
        pts = [(a, b) for a, b in pts if is_finite_number(a) and is_finite_number(b) and (a > 0 or not self.logx)]
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


def point_tip(t: dict, run: Run) -> str:
    head = [f"trial {t['trial_id']} ({t.get('status', '')})"]
    for k in (run.acc, "test_acc", run.cost, "bitops", "score", "bits"):
        if t.get(k) not in (None, ""):
            head.append(f"{k}: {t[k]}")
    return "\n".join(head + [f"{k} = {v}" for k, v in (t.get("params") or {}).items()])


def front_plot(run: Run, cost: str, label: str) -> str | None:
    pts = [t for t in run.trials if is_finite_number(t.get(run.acc)) and is_finite_number(t.get(cost))]
    if not pts:
        return None
    front = [t for t in run.front if is_finite_number(t.get(cost))]
    tests = [t.get("test_acc") for t in front if is_finite_number(t.get("test_acc"))]
    refs = [r for r in run.reference if is_finite_number(r.get(cost)) and is_finite_number(r.get(run.acc))]
    xs = [t[cost] for t in pts] + [r[cost] for r in refs]
    p = Plot(f"{run.acc} vs {label}", label, "accuracy", xs,
             [t[run.acc] for t in pts] + tests + [r[run.acc] for r in refs], logx=min(xs) > 0)
    others = [t for t in pts if t not in front]
    p.points([(t[cost], t[run.acc], point_tip(t, run)) for t in others if t.get("status") == "complete"], "#9e9e9e",
             label="complete trials")
    p.points([(t[cost], t[run.acc], point_tip(t, run)) for t in others if t.get("status") != "complete"], "#c7c7c7",
             r=3, filled=False, label="pruned / running / failed")
    p.line(sorted((t[cost], t[run.acc]) for t in front), COLORS[0], step=True)
    p.points([(t[cost], t[run.acc], point_tip(t, run)) for t in front], COLORS[0], r=5.5, label=f"front ({run.acc})",
             cls="pt front")
    p.points([(t[cost], t["test_acc"], point_tip(t, run)) for t in front if is_finite_number(t.get("test_acc"))], COLORS[1],
             r=4, filled=False, label="front (test_acc)", cls="pt front-test")
    if refs:
        p.points([(r[cost], r[run.acc], f"{r['name']} (reference, no search)\n{run.acc} {r[run.acc]:.4f}\n"
                   f"{cost} {r[cost]:.4g}") for r in refs], "#2e7d32", r=6, filled=False,
                 label="reference: float, PTQ", cls="pt reference")
    return p.svg()


def reference_table(run: Run) -> str | None:
    """The reference models (float, post-training quantization) beside the front, as a table."""
    if not run.reference:
        return None
    cols = [c for c in ("val_acc", "test_acc", "size_kb", "bitops", "macs", "avg_w_bits", "bits") if c in run.reference[0]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("model", *cols))
    rows = []
    for r in run.reference:
        cells = "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols)
        rows.append(f"<tr><td>{html.escape(str(r['name']))}</td>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def sensitivity_table(run: Run) -> str | None:
    """Per-layer Hessian sensitivity omega(layer, width) (HAWQ-V3), shaded by its log10, and, where
    activation widths were searched, the loss increase measured with the layer's input activations
    alone at each width."""
    import math

    layers = (run.sensitivity or {}).get("layers") or {}
    if not layers:
        return None
    widths = sorted({int(b) for v in layers.values() for b in v["omega"]})
    a_widths = sorted({int(a) for v in layers.values() for a in v.get("act_loss", {})})
    values = [v["omega"].get(str(b), 0.0) for v in layers.values() for b in widths]
    logs = [math.log10(v) for v in values if v > 0]
    lo, hi = (min(logs), max(logs)) if logs else (0.0, 1.0)
    head = ("<th>layer</th><th>Tr(H)</th><th>weights</th>" + "".join(f"<th>{b} bits</th>" for b in widths)
            + "".join(f"<th>A{a}: loss +</th>" for a in a_widths))
    rows = []
    for name, v in layers.items():
        cells = []
        for b in widths:
            o = v["omega"].get(str(b), 0.0)
            shade = 0 if o <= 0 or hi == lo else (math.log10(o) - lo) / (hi - lo)
            color = f"rgba(214, 39, 40, {0.08 + 0.6 * shade:.2f})" if o > 0 else "transparent"
            cells.append(f'<td data-v="{o:.6g}" style="background:{color}">{o:.3g}</td>')
        for a in a_widths:
            d = v.get("act_loss", {}).get(str(a))
            cells.append("<td>-</td>" if d is None else f'<td data-v="{d:.6g}">{d:.3g}</td>')
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{v['trace']:.4g}</td><td>{v['n_weights']}</td>"
                    f"{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


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
            sort_key = f' data-v="{v}"' if is_finite_number(v) else ""
            cells.append(f"<td{sort_key}>{html.escape(shown)}</td>")
        cls = ' class="front"' if t["trial_id"] in front_ids else ""
        rows.append(f'<tr{cls} title="{html.escape(point_tip(t, run))}">{"".join(cells)}</tr>')
    return f'<table id="trials"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def pareto_png(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    single = len(runs) == 1
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        if single:
            pts = [t for t in r.trials if t.get("status") == "complete" and is_finite_number(t.get(r.acc))
                   and is_finite_number(t.get(r.cost))]
            ax.scatter([t[r.cost] for t in pts], [t[r.acc] for t in pts], s=14, color="#9e9e9e",
                       label="complete trials")
        front = r.front
        ax.step([t[r.cost] for t in front], [t[r.acc] for t in front], where="post", color=color)
        ax.scatter([t[r.cost] for t in front], [t[r.acc] for t in front], s=30, color=color,
                   label=f"front ({r.acc})" if single else r.name, zorder=3)
        if single:
            tested = [t for t in front if is_finite_number(t.get("test_acc"))]
            ax.scatter([t[r.cost] for t in tested], [t["test_acc"] for t in tested], s=30, facecolors="none",
                       edgecolors=COLORS[1], label="front (test_acc)", zorder=3)
    drawn = [x for c in ax.collections for x, _ in c.get_offsets()]
    xs = [t[r.cost] for r in runs for t in r.trials if is_finite_number(t.get(r.cost))]
    if drawn and xs and min(xs) > 0:  # with nothing drawn (no trial finished yet) a log axis cannot scale
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
