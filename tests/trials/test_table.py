"""Table files for tabular trials: every way a table can disagree with its space is one line naming the
file, line and column, before any trial (a table that silently matched nothing failed every trial)."""

from __future__ import annotations

import gzip

import pytest

from nasq_ray.errors import ConfigError, DataError, NasqError, SearchSpaceError
from nasq_ray.space import SearchSpace
from nasq_ray.trials.table import Table

SPACE = {"name": "tiny", "params": {"a": ["x", "y"], "b": [1, 2]}}
GOOD = ["a,b,acc,cost", "x,1,50,10", "x,2,60,20", "y,1,55,12", "y,2,70,30"]


def _table(tmp_path, lines, space=SPACE, name="t.csv", acc="acc", cost="cost", **kw):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding=kw.pop("encoding", "utf-8"))
    return Table(path, SearchSpace(space), acc, cost, **kw)


def _error(tmp_path, lines, error=NasqError, **kw) -> str:
    with pytest.raises(error) as e:
        _table(tmp_path, lines, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_good_table_and_one_a_spreadsheet_wrote_are_read_alike(tmp_path):
    rows = _table(tmp_path, GOOD).rows
    assert len(rows) == 4
    bom = _table(tmp_path, [", ".join(GOOD[0].split(","))] + GOOD[1:], name="bom.csv", encoding="utf-8-sig")
    assert bom.rows == rows  # a byte-order mark and ', ' between the names


@pytest.mark.parametrize("lines, needle", [
    (["a,b,acc,cost", "x,1,50,10", "x,1,99,5", "x,2,60,20", "y,1,55,12", "y,2,70,30"],
     "lines 2 and 3: the same config (a=x, b=1) with different acc/cost; expected one row per config"),  # first won
    (["a,b,acc,cost,acc", "x,1,50,10,1", "x,2,60,20,2", "y,1,55,12,3", "y,2,70,30,4"],
     "has the column 'acc' twice"),  # the last column won
    (["a,b,acc,cost", "X,1,50,10", "X,2,60,20", "Y,1,55,12", "Y,2,70,30"],
     "has no row with a='x'; its values there: X, Y"),  # every trial failed: config not in table
    (["a,b,acc,cost", "x,1,50,10", "x,2,nan,20", "y,1,55,12", "y,2,70,30"],
     "table.acc: column 'acc' of", ),
    (["a,b,acc,cost", "x,1,50,10", "x,2,60,-20", "y,1,55,12", "y,2,70,30"],
     "line 3: -20 is negative; a cost is a number >= 0"),  # it scored as the best network
    (["a,b,acc,cost", "x,1,50,10", "x,2,60", "y,1,55,12", "y,2,70,30"], "line 3 has 3 fields, the header has 4"),
    (["a,b,acc,cost"], "has a header and no rows"),
    ([""], "is empty"),
])
def test_a_table_that_disagrees_with_itself_or_its_space_is_named(tmp_path, lines, needle):
    assert needle in _error(tmp_path, lines)


def test_the_bad_cell_is_named_by_line(tmp_path):
    assert _error(tmp_path, ["a,b,acc,cost", "x,1,50,10", "x,2,60,20", "y,1,,12", "y,2,70,30"]).endswith(
        "column 'acc' of '" + str(tmp_path / "t.csv") + "', line 4: '' is not a finite number; every row needs one")


def test_column_choices_a_range_a_folder_and_a_damaged_gzip(tmp_path):
    assert "'cost' is the accuracy column too" in _error(tmp_path, GOOD, ConfigError, acc="cost")
    ranged = {"name": "r", "params": {"a": ["x", "y"], "b": {"low": 0.5, "high": 2.5}}}
    assert "params.b: a range of numbers; a table run needs a list" in _error(tmp_path, GOOD, SearchSpaceError,
                                                                               space=ranged)
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(DataError, match="is a folder; expected a CSV file"):
        Table(tmp_path / "d.csv", SearchSpace(SPACE), "acc", "cost")
    data = bytearray(gzip.compress(("\n".join(GOOD * 50) + "\n").encode()))
    data[15:] = bytes(b ^ 0xFF for b in data[15:])
    (tmp_path / "bad.csv.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="cannot read .* as CSV"):  # was zlib.error's traceback
        Table(tmp_path / "bad.csv.gz", SearchSpace(SPACE), "acc", "cost")


def test_parameter_names_and_values_the_results_or_yaml_would_take_apart():
    import yaml

    from nasq_ray.results.files import check_param_names

    with pytest.raises(ConfigError, match="params.status: 'status' is a column of trials.csv"):  # it overwrote it
        check_param_names(SearchSpace({"name": "p", "params": {"status": ["x", "y"]}}))
    with pytest.raises(SearchSpaceError, match="holds true/false, which YAML makes of unquoted yes"):
        SearchSpace(yaml.safe_load("name: p\nparams:\n  a: [yes, no]\n"))


@pytest.mark.parametrize("table, needle", [
    ("../t.csv", "table: expected a mapping with keys path, acc, cost, got str"),
    ({"path": 5}, "table.path: 5 is not allowed; allowed: the path of a CSV file"),
    ({"path": None}, "table.path: None is not allowed"),
])
def test_a_space_files_table_section_is_checked(tmp_path, capsys, table, needle):
    import yaml

    from nasq_ray.run import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "table": table}))
    assert main(["--space", str(path), "--show-space"]) == 2
    assert needle in capsys.readouterr().err


def test_what_spreadsheets_and_benchmark_dumps_hold_is_read(tmp_path):
    # empty trailing columns, a trailing comma on the rows, an id column that differs between repeated
    # rows of one config, and an integer range in the space: all loaded before and still load
    lines = ["a,b,acc,cost,id,,", "x,1,50,10,0,,", "x,2,60,20,1,", "y,1,55,12,2,", "y,2,70,30,3,", "y,2,70,30,4,"]
    table = _table(tmp_path, lines, space={"name": "i", "params": {"a": ["x", "y"], "b": {"low": 1, "high": 2}}})
    assert len(table.rows) == 4 and table.lookup({"a": "y", "b": 2})["acc"] == 70
    assert "has no row with b=3" in _error(tmp_path, lines, space={"name": "i", "params": {"a": ["x", "y"],
                                                                                          "b": {"low": 1, "high": 3}}})


def test_a_config_the_table_lacks_is_reported_failed_with_the_reason(tmp_path):
    from nasq_ray.objective import ObjectiveConfig
    from nasq_ray.trials.table import TableContext, run_table_trial

    table = _table(tmp_path, GOOD[:-1])  # no row for a=y, b=2
    ctx = TableContext(SearchSpace(SPACE), table, ObjectiveConfig(cost="cost"), max_epochs=3)
    reports = []
    metrics = run_table_trial({"a": "y", "b": 2}, ctx, lambda m, s: reports.append(m))
    assert reports == [metrics] and metrics["status"] == "failed" and metrics["epoch"] == 3
    assert metrics["fail_reason"] == "config not in table t.csv" and metrics["score"] == float("-inf")
    assert metrics["cost"] != metrics["cost"]  # NaN: no cost for a config with no row
    assert run_table_trial({"a": "y", "b": 1}, ctx, lambda m, s: None)["status"] == "complete"
