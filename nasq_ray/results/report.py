"""The report page of a results folder: ``report.html`` (one self-contained page, no network) and
``pareto.png``; for several folders, ``compare.html`` and ``compare.png``. :func:`write_report` takes
the records of a search that just ended in memory; the CLI (:mod:`nasq_ray.report`) reads a folder."""

from __future__ import annotations

import html
from pathlib import Path
from ..errors import ConfigError
from .records import TrialRecord
from .plots import (COLORS, Plot, bits_chart, front_plot, hv_plot, importance_chart, pareto_png, point_tip,
                    reference_table, sensitivity_table, trials_table)
from .report_data import Run, hv_over_trials, importances, load_run


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
    reference = reference_table(run)
    if reference:
        body += ["<h2>Reference models</h2>", '<p class="meta">Found without a search, for comparison: the float '
                 'model and post-training quantization (calibrated ranges, no QAT) at uniform widths (green rings '
                 'in the plots).</p>', reference]
    if bits:
        body += ["<h2>Bit-widths of the front's models</h2>", bits]
    sens = sensitivity_table(run)
    if sens:
        body += ["<h2>Layer sensitivities (HAWQ-V3)</h2>", '<p class="meta">omega = Tr(H)/n x ||Q_b(W) - W||^2 per '
                 'layer and weight width, from the float model (darker: more sensitive); what --searcher hawq and '
                 'the warm start choose widths by.</p>', sens]
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
        p.points([(t[r.cost], t[r.acc], f"{r.name}\n" + point_tip(t, r)) for t in front], color, r=5, label=r.name)
        hv = hv_over_trials(r)
        rows.append(f"<tr><td>{html.escape(r.name)}</td><td>{len(r.trials)}</td><td>{len(front)}</td>"
                    f"<td>{max((t[r.acc] for t in front), default=float('nan')):.4f}</td>"
                    f"<td>{hv[-1][1] if hv else float('nan'):.4g}</td></tr>")
    table = ("<table><thead><tr><th>run</th><th>trials</th><th>front</th><th>best acc</th>"
             "<th>HV (own reference)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    body = ["<h1>nasq-ray: runs compared</h1>", f'<div class="plots">{p.svg()}</div>', table]
    return _page("nasq-ray: runs compared", "\n".join(body))


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
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"report: --out '{out_dir}' is a file; allowed: a folder (made if missing)")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "compare.html"
    out.write_text(render_compare(runs))
    pareto_png(runs, out_dir / "compare.png")
    return out
