"""The ``table`` trial kind: a config's metrics are looked up in a table instead of trained.

The table is a CSV file (optionally gzip'd) with one column per parameter of the space and any
number of numeric metric columns; ``acc`` and ``cost`` name the columns the objective uses. With
NAS-Bench-201's table (``search_spaces/nb201_mini.csv.gz``), strategies can be compared in seconds
on a published benchmark.
"""

from __future__ import annotations

import csv
import gzip
import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError, DataError, SearchSpaceError, did_you_mean
from ..objective import LATENCY_METRIC, ObjectiveConfig, score
from ..space.domains import Int
from ..space.search_space import SearchSpace
from .base import BaseTrialKind, Prepared, Reporter, failed_metrics


def _key_value(v) -> str:
    """Table cells and config values compared as text; numbers by value (``4`` == ``4.0``)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(float(v))
    try:
        return repr(float(v))
    except (TypeError, ValueError):
        return str(v)


class Table:
    """Rows of a metric table indexed by the space's parameter values."""

    def __init__(self, path: str | Path, space: SearchSpace, acc: str, cost: str, test: str | None = None):
        self.path = Path(path)
        self.names = space.names
        header, body = _read_table(self.path)
        where = f"'{self.path}'"
        doubled = sorted({h for h in header if header.count(h) > 1})
        if doubled:
            raise DataError(f"table: {where} has the column '{doubled[0]}' twice; expected one column per name")
        missing = [n for n in self.names if n not in header]
        if missing:
            raise DataError(f"table: {where} has no column '{missing[0]}' for parameter '{missing[0]}' of "
                            f"space '{space.name}'; columns: {', '.join(header)}")
        col = {h: i for i, h in enumerate(header)}
        metrics = [h for h in header if h not in self.names]
        self.numeric = [c for c in metrics if all(_is_number(r[col[c]]) for _, r in body)]
        for field, column in (("table.acc", acc), ("table.cost", cost), ("table.test", test)):
            if column is None or column in self.numeric:
                continue
            if column in col and column not in self.names:  # a metric column with a cell that is not a number
                line, row = next((n, r) for n, r in body if not _is_number(r[col[column]]))
                raise DataError(f"{field}: column '{column}' of {where}, line {line}: {row[col[column]]!r} is not a "
                                "finite number; every row needs one")
            raise ConfigError(f"{field}: '{column}' is not a numeric column of '{self.path.name}'"
                              f"{did_you_mean(str(column), self.numeric)}; allowed: {', '.join(self.numeric)}")
        if acc == cost:
            raise ConfigError(f"table.cost: '{cost}' is the accuracy column too; allowed: another numeric column "
                              f"({', '.join(c for c in self.numeric if c != acc)})")
        line, row = next(((n, r) for n, r in body if float(r[col[cost]]) < 0), (None, None))
        if line is not None:
            raise DataError(f"table.cost: column '{cost}' of {where}, line {line}: {row[col[cost]]} is negative; "
                            "a cost is a number >= 0")
        self.acc, self.cost, self.test = acc, cost, test
        self.rows: dict[tuple, dict[str, float]] = {}
        first_line: dict[tuple, int] = {}
        used = [c for c in (acc, cost, test) if c is not None]  # other columns (an id, an index) may differ
        for n, r in body:
            key = tuple(_key_value(r[col[name]]) for name in self.names)
            values = {c: float(r[col[c]]) for c in self.numeric}
            if key in self.rows and any(self.rows[key][c] != values[c] for c in used):
                raise DataError(f"table: {where}, lines {first_line[key]} and {n}: the same config "
                                f"({', '.join(f'{name}={r[col[name]]}' for name in self.names)}) with different "
                                f"{'/'.join(used)}; expected one row per config (several runs of a config: average "
                                "them into one row)")
            self.rows.setdefault(key, values)
            first_line.setdefault(key, n)
        _check_choices_in_table(space, self.names, [r for _, r in body], col, where)

    def lookup(self, config: dict) -> dict[str, float] | None:
        return self.rows.get(tuple(_key_value(config.get(n)) for n in self.names))

    def __len__(self) -> int:
        return len(self.rows)


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (names stripped; a UTF-8 byte-order mark, as spreadsheets write, dropped) and the
    rows with their line numbers."""
    if path.is_dir():
        raise DataError(f"table: '{path}' is a folder; expected a CSV file (optionally .csv.gz)")
    if not path.is_file():
        raise DataError(f"table: file '{path}' does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as e:
        raise DataError(f"table: cannot read '{path}' as CSV: {e}") from None
    if not rows or not any(rows[0]):
        raise DataError(f"table: '{path}' is empty; expected a header row and one row per config")
    header = [h.strip() for h in rows[0]]
    while header and not header[-1]:  # a spreadsheet's empty trailing columns ('cost,,')
        header.pop()
    body = [(n, [v.strip() for v in r]) for n, r in enumerate(rows[1:], start=2) if any(v.strip() for v in r)]
    if not body:
        raise DataError(f"table: '{path}' has a header and no rows; expected one row per config")
    for n, r in body:
        if len(r) < len(header) or any(r[len(header):]):  # empty fields past the header's are a trailing comma
            raise DataError(f"table: '{path}', line {n} has {len(r)} fields, the header has {len(header)}")
    return header, [(n, r[:len(header)]) for n, r in body]


def _check_choices_in_table(space: SearchSpace, names, rows, col, where) -> None:
    """Each parameter is a list of choices, and each choice is in the table: a value no row holds
    (``X`` where the table says ``x``) would fail every trial that draws it."""
    for prm in space.params:
        values = getattr(prm.domain, "values", None)
        if values is None and isinstance(prm.domain, Int):
            values = range(prm.domain.low, prm.domain.high + 1)
        if values is None:
            raise SearchSpaceError(f"{space.source}: params.{prm.name}: a range of numbers; a table run needs a list "
                                   "of the values the table holds (or an integer range)")
        held = {_key_value(r[col[prm.name]]) for r in rows}
        absent = [v for v in values if _key_value(v) not in held]
        if absent:
            shown = sorted({r[col[prm.name]] for r in rows})
            raise DataError(f"table: {where} has no row with {prm.name}={absent[0]!r}; its values there: "
                            f"{', '.join(shown[:10])}{' ...' if len(shown) > 10 else ''}")


def _is_number(v: str) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def default_test_column(acc: str, numeric: list[str]) -> str | None:
    """``cifar10_val_acc`` -> ``cifar10_test_acc`` when the table has it."""
    cand = acc.replace("val", "test")
    return cand if cand != acc and cand in numeric else None


@dataclass(frozen=True)
class TableContext:
    """What a tabular trial needs: the table and how to score."""

    space: SearchSpace
    table: Table
    objective: ObjectiveConfig
    max_epochs: int


def run_table_trial(config: dict, ctx: TableContext, report: Reporter,
                    state: dict | None = None) -> dict:
    """Report the table row of ``config`` as one complete result (failed if the table lacks it)."""
    row = ctx.table.lookup(config)
    if row is None:
        metrics = failed_metrics(f"config not in table {ctx.table.path.name}", ctx.objective.cost, ctx.max_epochs)
    else:
        acc = row[ctx.table.acc]
        metrics = {**row, "val_acc": acc, ctx.objective.cost: row[ctx.table.cost], "epoch": ctx.max_epochs,
                   "score": score(acc, row[ctx.table.cost], ctx.objective), "status": "complete", "fail_reason": ""}
    report(metrics, None)
    return metrics


@dataclass(frozen=True)
class TableCost:
    """A config's cost column, looked up before the trial runs (the table's exact cost model)."""

    table: Table

    def __call__(self, config: dict) -> float | None:
        row = self.table.lookup(config)
        return None if row is None else row[self.table.cost]


class TableTrial(BaseTrialKind):
    """Trials whose metrics are a table's row (one report each, no checkpoint)."""

    name = "table"

    def prepare(self, cfg, raw_space: dict, space_path: Path, objective: ObjectiveConfig) -> Prepared:
        space = SearchSpace(raw_space, source=str(space_path))
        default = space.table or {}
        table_path = cfg.table.path or default.get("path")
        if not table_path:
            raise ConfigError(f"table: space '{space.name}' names no table; give --table")
        acc = cfg.table.acc or default.get("acc")
        cost = cfg.table.cost or default.get("cost")
        for field, value in (("table.acc", acc), ("table.cost", cost)):
            if not value:
                raise ConfigError(f"{field}: name the table's {field.split('.')[1]} column (--table-{field.split('.')[1]})")
        if objective.acc != "val_acc":  # the table's accuracy column is reported as val_acc, and nothing else
            raise ConfigError(f"objective.acc: '{objective.acc}' is not reported by a table trial; allowed: val_acc (the "
                              f"table's accuracy column, --table-acc; here '{acc}')")
        if objective.cost == LATENCY_METRIC:
            raise ConfigError(f"objective.cost: {LATENCY_METRIC} is measured on a network nasq-ray builds and a table "
                              f"trial builds none; allowed: the table's cost columns (--table-cost; here '{cost}')")
        if objective.cost not in ("size_kb", cost):  # size_kb: the default, which the table's column replaces
            raise ConfigError(f"objective.cost: '{objective.cost}' is not the table's cost column; a table run's cost is "
                              f"--table-cost (here '{cost}'); leave out --cost")
        objective = replace(objective, cost=cost)
        table = Table(table_path, space, acc, cost, cfg.table.test)
        if cfg.table.test is None:
            table.test = default_test_column(acc, table.numeric)
        return Prepared(self.name, space, objective, TableContext(space, table, objective, cfg.search.max_epochs))

    def run(self, config: dict, context: TableContext, report: Reporter, state: dict | None = None) -> dict:
        return run_table_trial(config, context, report, state)

    def cost_model(self, prepared: Prepared) -> TableCost:
        return TableCost(prepared.context.table)

    def check(self, cfg, prepared: Prepared) -> None:
        if cfg.search.scheduler == "pbt":
            raise ConfigError("scheduler: pbt perturbs training; a table run reports once per trial; use fifo")

    def test_accuracy(self, records, prepared: Prepared) -> None:
        column = prepared.context.table.test
        if column is not None:
            for r in records:
                r.test_acc = r.metrics.get(column)

