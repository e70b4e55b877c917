"""report.html and pareto.png from a results folder: finished, running (no trials.csv yet) and
interrupted runs; compare runs; the page renders in headless Chromium without console errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nasq_ray.results.report import render_html, write_compare, write_report
from nasq_ray.results.report_data import hypervolume_2d, load_run
from nasq_ray.report import main

TRIALS = [  # trial_id, status, epochs, val_acc, size_kb, bitops, bits, test_acc, s0.op
    ("a", "complete", 4, 0.90, 2.0, 1000, "4/4 8/8", 0.88, "conv3x3"),
    ("b", "complete", 4, 0.95, 4.0, 3000, "8/8 8/8", 0.94, "conv5x5"),
    ("c", "complete", 4, 0.80, 3.0, 2000, "2/4 2/4", "", "conv3x3"),  # dominated by a
    ("d", "pruned", 2, 0.50, 1.0, 500, "2/2 2/2", "", "conv5x5"),
    ("e", "complete", 4, 0.97, 8.0, 9000, "f/f 8/8", 0.96, "conv5x5"),
]


def _results_folder(root: Path, name: str = "run", trials=TRIALS, with_csv: bool = True,
                    results_json: bool = True, unfinished: tuple = ()) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "experiment.yaml").write_text(yaml.safe_dump({
        "name": name, "objective": {"acc": "val_acc", "cost": "size_kb"},
        "search": {"num_samples": len(trials), "max_epochs": 4}}))
    for i, (tid, status, epochs, acc, size, bitops, bits, _, op) in enumerate(trials):
        if results_json:
            d = folder / f"trial_{tid}"
            d.mkdir()
            lines = [{"epoch": e, "val_acc": acc * e / epochs, "size_kb": size, "bitops": bitops, "score": acc,
                      "w_bits_str": bits, "timestamp": 1000 + 10 * i + e, "config": {"s0.op": op}}
                     for e in range(1, epochs + 1)]
            (d / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if with_csv:
        with open(folder / "trials.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["trial_id", "status", "epochs", "val_acc", "size_kb", "bitops", "bits", "test_acc", "score",
                        "s0.op"])
            for tid, status, epochs, acc, size, bitops, bits, test, op in trials:
                w.writerow([tid, "unfinished" if tid in unfinished else status, epochs, acc, size, bitops, bits,
                            test, acc, op])
    return folder


def test_hypervolume_of_a_staircase():
    # (acc, cost) points, reference (0, 10): areas 0.5*(4-2) + 0.9*(10-4)... computed by hand
    assert hypervolume_2d([(0.5, 2.0), (0.9, 4.0)], (0.0, 10.0)) == pytest.approx(0.5 * 2 + 0.9 * 6)
    assert hypervolume_2d([(0.9, 4.0), (0.5, 6.0)], (0.0, 10.0)) == pytest.approx(0.9 * 6)  # dominated point adds 0
    assert hypervolume_2d([], (0.0, 10.0)) == 0.0


def test_front_statuses_and_page(tmp_path):
    run = load_run(_results_folder(tmp_path))
    assert [t["trial_id"] for t in run.front] == ["a", "b", "e"] and run.state == "finished"
    page = render_html(run)
    assert page.count('class="pt front"') == 3 * 2  # front drawn on the size and on the BitOPs plot
    assert page.count('class="pt front-test"') == 3 * 2
    assert "hypervolume over finished trials" in page and "bits per quantized layer" in page
    assert page.count("<tr") == len(TRIALS) + 1 and "s0.op = conv5x5" in page  # hover shows the config
    assert "<script src" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")  # offline


def test_records_handed_over_in_memory_read_as_trials_csv(tmp_path):
    """After a search the driver gives the report its records instead of trials.csv to parse back."""
    from nasq_ray.results.records import TrialRecord

    folder = _results_folder(tmp_path, with_csv=False)
    records = [TrialRecord(tid, status, {"s0.op": op}, {"epoch": epochs, "val_acc": acc, "size_kb": size,
                                                        "bitops": bitops, "score": acc, "w_bits_str": bits},
                           test_acc=test if test != "" else None)
               for tid, status, epochs, acc, size, bitops, bits, test, op in TRIALS]
    from_memory = load_run(folder, records)
    shutil.rmtree(folder)
    from_csv = load_run(_results_folder(tmp_path))
    keys = ("trial_id", "status", "epochs", "val_acc", "size_kb", "bits", "test_acc", "params")
    assert [{k: t.get(k) for k in keys} for t in from_memory.trials] == \
        [{k: t.get(k) for k in keys} for t in from_csv.trials]
    assert [t["trial_id"] for t in from_memory.front] == ["a", "b", "e"] and from_memory.state == "finished"


def test_report_files_and_cli(tmp_path, capsys):
    folder = _results_folder(tmp_path)
    assert main([str(folder)]) == 0
    assert (folder / "report.html").stat().st_size > 1000
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_flags_and_an_out_that_is_a_file_exit_2_with_one_line(tmp_path, capsys):
    from nasq_ray.export import main as export_main

    one, two = _results_folder(tmp_path, "one"), _results_folder(tmp_path, "two")
    (tmp_path / "a_file").write_text("")
    for argv, command, needle in (([str(one), str(two), "--out", str(tmp_path / "a_file")], main, "is a file"),
                                  ([str(one), "--bogus"], main, "unrecognized arguments: --bogus"),
                                  ([str(one), "--out", str(tmp_path / "x")], main,  # it had been ignored
                                   "--out: one run's report is written into its own folder"),
                                  ([str(one), "--format", "bad"], export_main, "invalid choice: 'bad'")):
        try:
            rc = command(argv)
        except SystemExit as e:  # argparse's exit
            rc = e.code
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (argv, err)


def test_trial_ids_that_read_as_numbers_stay_ids(tmp_path, capsys):
    """Ray's ids are 8 hex digits: about 2% are all decimal digits, and some read as a float (1e345678)."""
    trials = [("12345678", *TRIALS[0][1:]), ("1e345678", *TRIALS[1][1:]), *TRIALS[2:]]
    folder = _results_folder(tmp_path, trials=trials)
    run = load_run(folder)
    assert [t["trial_id"] for t in run.front] == ["12345678", "1e345678", "e"]
    assert main([str(folder)]) == 0 and "12345678" in (folder / "report.html").read_text()


def test_a_running_experiment_without_trials_csv(tmp_path):
    run = load_run(_results_folder(tmp_path, with_csv=False))
    assert run.state == "running" and len(run.trials) == len(TRIALS)
    assert [t["trial_id"] for t in run.front] == ["a", "b", "e"]
    write_report(run.folder)
    assert (run.folder / "report.html").exists()


def test_an_interrupted_experiment(tmp_path):
    run = load_run(_results_folder(tmp_path, unfinished=("e",)))
    assert run.state == "interrupted" and [t["trial_id"] for t in run.front] == ["a", "b"]


def test_an_interrupted_experiment_with_no_finished_trial_yet(tmp_path, capsys):
    """Trials with metrics but none finished: nothing to draw, and the cost axis must not go log."""
    folder = _results_folder(tmp_path, trials=TRIALS[:2], unfinished=("a", "b"))
    assert load_run(folder).front == []
    assert main([str(folder)]) == 0, capsys.readouterr().err
    assert (folder / "pareto.png").stat().st_size > 0


def test_compare_overlays_fronts(tmp_path, capsys):
    one = _results_folder(tmp_path, "one")
    two = _results_folder(tmp_path, "two", trials=[t[:3] + (t[3] - 0.1,) + t[4:] for t in TRIALS])
    out = write_compare([one, two], tmp_path / "cmp")
    page = out.read_text()
    assert "one" in page and "two" in page and page.count("<polyline") == 2
    assert (tmp_path / "cmp" / "compare.png").exists()


def test_not_a_results_folder(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: report:")


def test_a_trials_table_without_its_columns_or_a_missing_front_exits_2_with_one_line(tmp_path, capsys):
    from nasq_ray.config import ExperimentConfig
    from nasq_ray.export import main as export_main

    (tmp_path / "experiment.yaml").write_text(ExperimentConfig(name="run").to_yaml())
    (tmp_path / "trials.csv").write_text("trial_id,val_acc\nabc,0.5\n")  # not written by nasq-ray
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trials.csv' is not a nasq-ray trials table (no status column)" in err[0]
    assert export_main([str(tmp_path), "--pareto"]) == 2  # a run that ended writes pareto.csv; this one did not
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: export:") and "pareto.csv' does not exist" in err[0]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_page_renders_in_headless_chromium_without_console_errors(tmp_path):
    folder = _results_folder(tmp_path)
    write_report(folder)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=3000"]
    p = subprocess.run([CHROMIUM, *flags, "--dump-dom", (folder / "report.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    console = [ln for ln in p.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    dom = p.stdout
    assert 'data-ready="' in dom and 'data-ready="0"' not in dom  # the page's script ran, saw its plots
    assert dom.count("<svg") >= 4 and dom.count("<circle") > len(TRIALS)


def test_a_damaged_folder_is_reported_or_named_in_one_line(tmp_path, capsys):
    folder = _results_folder(tmp_path)
    text = (folder / "trials.csv").read_text()
    (folder / "trials.csv").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 12])  # the last row cut short
    assert main([str(folder)]) == 0  # was a TypeError on the missing cells
    (folder / "experiment.yaml").write_text("search: [oops\n")
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "malformed YAML" in err[0], err
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope' does not exist; give the results folder" in capsys.readouterr().err


def test_an_out_or_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    import nasq_ray.export as export_cli

    one, two = _results_folder(tmp_path, "one"), _results_folder(tmp_path, "two")
    if os.path.isdir("/proc/self"):
        assert main([str(one), str(two), "--out", "/proc/nasq_nope"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --out: cannot write '/proc/nasq_nope'"), err

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(one / "export"))

    monkeypatch.setattr(export_cli, "export_run", read_only)
    assert export_cli.main([str(one), "--format", "packed"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: export: cannot write '{one / 'export'}' (Permission denied); allowed: a folder this user "
                   "can write"]
