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

import sys
from .errors import ConfigError, NasqError, OneLineParser, unwritable
from .results.report import write_compare, write_report


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m nasq_ray.report", description=__doc__.split("\n\n")[1])
    ap.add_argument("result_dirs", nargs="+", metavar="RESULT_DIR", help="results folder(s) of runs (OUT/NAME)")
    ap.add_argument("--out", default=None, help="where compare.html/compare.png go with several folders (.)")
    args = ap.parse_args(argv)
    if args.out is not None and len(args.result_dirs) == 1:
        ap.error("--out: one run's report is written into its own folder (report.html, pareto.png); --out places "
                 "compare.html when several folders are compared")
    try:
        if len(args.result_dirs) == 1:
            path = write_report(args.result_dirs[0])
            print(f"wrote {path} and {path.with_name('pareto.png')}")
        else:
            try:
                path = write_compare(args.result_dirs, args.out or ".")
            except (PermissionError, FileNotFoundError) as e:  # --out where no folder can be made or written
                raise ConfigError(f"--out: {unwritable(e)}") from None
            print(f"wrote {path} and {path.with_name('compare.png')}")
        return 0
    except NasqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # a run's folder this user cannot write
        print(f"error: report: {unwritable(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
