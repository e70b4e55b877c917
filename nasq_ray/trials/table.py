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
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError, DataError, did_you_mean
from ..objective import LATENCY_METRIC, ObjectiveConfig, score
from ..space.search_space import SearchSpace
from .base import BaseTrialKind, Prepared, Reporter


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
        if not self.path.is_file():
            raise DataError(f"table: file '{self.path}' does not exist")
        opener = gzip.open if self.path.suffix == ".gz" else open
        try:
            with opener(self.path, "rt", newline="") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                raw_rows = list(reader)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"table: cannot read '{self.path}' as CSV: {e}") from None
        missing = [n for n in self.names if n not in header]
        if missing:
            raise DataError(f"table: '{self.path}' has no column '{missing[0]}' for parameter '{missing[0]}' of "
                            f"space '{space.name}'; columns: {', '.join(header)}")
        self.numeric = [c for c in header if c not in self.names and raw_rows and all(_is_number(r[c]) for r in raw_rows)]
        for field, col in (("table.acc", acc), ("table.cost", cost)):
            if col not in self.numeric:
                raise ConfigError(f"{field}: '{col}' is not a numeric column of '{self.path.name}'"
                                  f"{did_you_mean(str(col), self.numeric)}; allowed: {', '.join(self.numeric)}")
        if test is not None and test not in self.numeric:
            raise ConfigError(f"table.test: '{test}' is not a numeric column of '{self.path.name}'; "
                              f"allowed: {', '.join(self.numeric)}")
        self.acc, self.cost, self.test = acc, cost, test
        self.rows: dict[tuple, dict[str, float]] = {}
        for r in raw_rows:
            key = tuple(_key_value(r[n]) for n in self.names)
            self.rows.setdefault(key, {c: float(r[c]) for c in self.numeric})

    def lookup(self, config: dict) -> dict[str, float] | None:
        return self.rows.get(tuple(_key_value(config.get(n)) for n in self.names))

    def __len__(self) -> int:
        return len(self.rows)


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
        metrics = {"epoch": ctx.max_epochs, "val_acc": 0.0, ctx.objective.cost: math.nan, "score": -math.inf,
                   "status": "failed", "fail_reason": f"config not in table {ctx.table.path.name}"}
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
        if objective.cost == LATENCY_METRIC:
            raise ConfigError(f"objective.cost: {LATENCY_METRIC} is measured on a network nasq-ray builds and a table "
                              f"trial builds none; allowed: the table's cost columns (--table-cost; here '{cost}')")
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

