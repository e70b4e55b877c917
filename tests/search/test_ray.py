"""The tests that start Ray: real searches end to end on a shared 2-CPU local cluster."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nasq_ray import from_dict, load_space, run_search
from nasq_ray.space import SearchSpace

pytestmark = pytest.mark.ray

TINY_SPACE = {
    "name": "tiny", "input": "image",
    "stages": [{"channels": [4, 8], "ops": ["conv3x3", "dwsep3x3"], "connections": ["sequential", "residual"]}],
    "head": {"pool": "flatten", "hidden_layers": 0},
    "quant": {"w_bits": [2, 4, 8, 32], "a_bits": [4, 8], "logit_bits": [8, 32]},
    "train": {"lr": {"low": 0.005, "high": 0.02, "log": True}, "batch_size": 32},
}


@pytest.fixture
def tiny_space_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


def _config(tmp_path, space_file, **search):
    return from_dict({
        "name": "exp", "space": str(space_file), "out": str(tmp_path / "results"), "quiet": True,
        "data": {"max_train": 300},
        "search": {"num_samples": 4, "max_epochs": 3, "searcher": "tpe", "scheduler": "asha", **search},
    })


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_search_end_to_end(ray_cluster, tmp_path, tiny_space_file):
    result = run_search(_config(tmp_path, tiny_space_file))
    out = tmp_path / "results" / "exp"
    assert result.out_dir == out
    rows = _rows(out / "trials.csv")
    assert len(rows) == 4
    assert {r["status"] for r in rows} <= {"complete", "pruned"}
    assert any(r["status"] == "complete" for r in rows)
    space = load_space(tiny_space_file, (1, 8, 8), 10)
    for r in rows:
        assert float(r["val_acc"]) > 0.0 and int(r["macs"]) > 0 and r["node"]
    front = _rows(out / "pareto.csv")
    assert front and all(r["test_acc"] != "" for r in front)
    best = json.loads((out / "best.json").read_text())
    assert space.validate(best["config"]) == best["config"]
    assert Path(best["checkpoint"], "state.pt").is_file()
    # the front is non-dominated on (val_acc max, size_kb min)
    pts = [(float(r["val_acc"]), float(r["size_kb"])) for r in front]
    for a in pts:
        assert not any(b[0] >= a[0] and b[1] <= a[1] and b != a for b in pts)
    # Ray's real experiment state names each trial's newest checkpoint where --resume's check looks for it
    import pyarrow.fs

    from nasq_ray.search.experiment_state import read_saved_state, saved_checkpoint_paths

    saved = saved_checkpoint_paths(read_saved_state(pyarrow.fs.LocalFileSystem(), str(out)))
    assert saved and set(saved) <= {r["trial_id"] for r in rows}
    assert all(status == "TERMINATED" and (out / rel / "state.pt").is_file() for status, rel in saved.values())


def test_diverging_trials_are_recorded_and_the_search_goes_on(ray_cluster, tmp_path):
    raw = {**TINY_SPACE, "train": {"lr": 1.0e12, "optimizer": "sgd", "momentum": 0.0}}
    path = tmp_path / "boom.yaml"
    path.write_text(yaml.safe_dump(raw))
    import signal

    sigint = signal.getsignal(signal.SIGINT)
    result = run_search(_config(tmp_path, path, num_samples=3, searcher="random", scheduler="fifo"))
    assert signal.getsignal(signal.SIGINT) is sigint  # Ray Tune's handler is not left behind (Ctrl-C did nothing)
    rows = _rows(result.out_dir / "trials.csv")
    assert len(rows) == 3
    assert all(r["status"] == "failed" and "non-finite" in r["error"] for r in rows)
    assert _rows(result.out_dir / "pareto.csv") == []


def test_flat_space_as_plain_tune_param_space(ray_cluster, tmp_path):
    from ray import tune

    from nasq_ray.search.domains import to_param_space

    raw = {"name": "flat", "stages": [{"channels": [4, 8], "ops": "conv3x3"}], "quant": {"w_bits": [2, 4]}}
    space = SearchSpace(raw, (1, 8, 8), 10, source="flat")

    def check(config):
        tune.report({"valid": int(space.validate(config) == config)})

    grid = tune.Tuner(check, param_space=to_param_space(space),
                      tune_config=tune.TuneConfig(num_samples=4),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    assert [r.metrics["valid"] for r in grid] == [1, 1, 1, 1]


def test_define_by_run_with_rays_optuna_search(ray_cluster, tmp_path):
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from nasq_ray.search.strategies import define_by_run

    space = load_space("digits_small")

    def check(config):
        tune.report({"valid": int(space.validate(config) == config), "score": 1.0})

    searcher = OptunaSearch(space=define_by_run(space), metric="score", mode="max", seed=0)
    grid = tune.Tuner(check, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=4),
                      run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    assert [r.metrics["valid"] for r in grid] == [1, 1, 1, 1]


def test_cli_runs_a_search_and_prints_the_front(tmp_path, tiny_space_file):
    p = subprocess.run(
        [sys.executable, "-m", "nasq_ray.run", "--space", str(tiny_space_file), "--num-samples", "3",
         "--max-epochs", "2", "--max-train", "200", "--out", str(tmp_path), "--name", "cli", "--seed", "1"],
        capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Pareto front" in p.stdout and "Best config:" in p.stdout
    assert len(_rows(tmp_path / "cli" / "trials.csv")) == 3
    assert "Traceback" not in p.stderr


# ----------------------------------------------------------- every strategy and scheduler, from the CLI

from nasq_ray.run import main  # noqa: E402
from nasq_ray.search.schedulers import SCHEDULERS  # noqa: E402
from nasq_ray.search.strategies import SEARCHERS  # noqa: E402

DIGITS_TINY = ["--space", "digits_small", "--max-train", "120", "--max-epochs", "2", "--quiet"]


def test_a_default_run_without_a_name_stays_in_one_folder(ray_cluster, tmp_path, tiny_space_file, capsys):
    """As a new user runs it: no --name (and no --quiet). Export, report and --resume all take the
    folder the run prints."""
    from nasq_ray.export import main as export_main
    from nasq_ray.report import main as report_main

    argv = ["--space", str(tiny_space_file), "--max-train", "120", "--max-epochs", "1", "--num-samples", "2",
            "--out", str(tmp_path / "results")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    folder = Path(out.split("results in ", 1)[1].split()[0])
    assert [p.name for p in (tmp_path / "results").iterdir()] == [folder.name] and folder.name.startswith("tiny-")
    for f in ("experiment.yaml", "trials.csv", "pareto.csv", "best.json", "report.html", "optuna.db"):
        assert (folder / f).is_file(), f
    assert len(list(folder.glob("trial_*"))) == 2
    assert yaml.safe_load((folder / "experiment.yaml").read_text())["name"] == folder.name
    assert export_main([str(folder), "--format", "packed"]) == 0
    assert report_main([str(folder)]) == 0
    assert main(["--resume", str(folder), "--quiet"]) == 0
    assert len(_rows(folder / "trials.csv")) == 2


def test_the_readme_quick_start_command_as_it_is_with_no_option_at_all(ray_cluster, tmp_path, monkeypatch, capsys):
    """The README's first command, ``python -m nasq_ray.run``: the default space, data, budget and
    results folder (every other end-to-end test passes a smaller budget, a space or a folder)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    quick_start = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip()
    assert quick_start.endswith("&& python -m nasq_ray.run")  # what this test runs, nothing added
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    (folder,) = (tmp_path / "nasq_results").iterdir()
    assert folder.name.startswith("digits_small-") and f"results in {folder}" in out
    rows = _rows(folder / "trials.csv")
    assert len(rows) == 24 and {r["status"] for r in rows} <= {"complete", "pruned"}
    assert max(float(r["val_acc"]) for r in rows if r["status"] == "complete") > 0.9  # the README shows 0.98
    assert "Pareto front" in out and "Best config:" in out


def _cli(capsys, tmp_path, name, *argv):
    rc = main([*argv, "--out", str(tmp_path), "--name", name])
    out, err = capsys.readouterr()
    return rc, out, err


# Every searcher and every scheduler runs through Ray, each paired with one of the other kind (a run
# per pair, not per name: the pairs cover both lists; PBT only takes the random searcher).
DEFAULT_PAIRS = [("anneal", "fifo"), ("dnas", "fifo"), ("evolution", "hyperband"), ("greedy", "median"),
                 ("grid", "asha"), ("nsga2", "moasha"), ("random", "pbt"), ("tpe", "asha")]
NB201_PAIRS = [("anneal", "asha"), ("ehvi", "asha"), ("evolution", "fifo"), ("greedy", "hyperband"), ("gp", "fifo"), ("grid", "median"),
               ("nsga2", "moasha"), ("random", "fifo"), ("tpe", "asha")]
BUDGET_PAIR = ("gp", "asha")  # the default space's gp run is the cost-budget run below
MULTI_DEFAULT = ("ehvi", "asha")  # and its ehvi run the multi-objective run with no searcher named
OWN_MODEL_PAIR = ("hawq", "fifo")  # sensitivity-based bits need a user model: the own-model run below
# "given" (the kind's warm-start configs only) runs in the one-shot search's phase 3 (test_oneshot.py)


def test_the_pairs_cover_every_searcher_and_scheduler():
    assert {s for s, _ in DEFAULT_PAIRS + [BUDGET_PAIR, MULTI_DEFAULT, OWN_MODEL_PAIR]} == set(SEARCHERS) - {"given"}
    assert {c for _, c in DEFAULT_PAIRS} == set(SCHEDULERS)
    assert {s for s, _ in NB201_PAIRS} == set(SEARCHERS) - {"dnas", "hawq", "given"}
    assert {c for _, c in NB201_PAIRS} == set(SCHEDULERS) - {"pbt"}


@pytest.mark.parametrize("searcher, scheduler", DEFAULT_PAIRS)
def test_every_searcher_and_scheduler_runs_on_the_default_space(ray_cluster, tmp_path, capsys, searcher, scheduler):
    rc, out, err = _cli(capsys, tmp_path, searcher, "--space", "digits_small", "--max-train", "120",
                        "--max-epochs", "3", "--num-samples", "3", "--searcher", searcher, "--scheduler", scheduler,
                        "--quiet")
    assert rc == 0, err
    rows = _rows(tmp_path / searcher / "trials.csv")
    assert len(rows) == 3 and {r["status"] for r in rows} <= {"complete", "pruned"}, rows
    assert any(r["status"] == "complete" for r in rows)
    assert "Pareto front" in out
    saved = yaml.safe_load((tmp_path / searcher / "experiment.yaml").read_text())
    assert saved["objective"]["multi"] is (searcher == "nsga2")  # what ran: nsga2 implies a multi-objective run


@pytest.mark.parametrize("searcher, scheduler", NB201_PAIRS)
def test_every_searcher_and_scheduler_runs_on_nb201(ray_cluster, tmp_path, capsys, searcher, scheduler):
    rc, out, err = _cli(capsys, tmp_path, searcher, "--space", "nb201", "--searcher", searcher, "--scheduler",
                        scheduler, "--num-samples", "6", "--objective", "multi", "--quiet")
    assert rc == 0, err
    rows = _rows(tmp_path / searcher / "trials.csv")
    assert len(rows) == 6 and all(r["status"] == "complete" and float(r["val_acc"]) > 0 for r in rows)
    front = _rows(tmp_path / searcher / "pareto.csv")
    assert front and all(float(r["test_acc"]) > 0 for r in front)  # the table's cifar10_test_acc


def test_a_cost_budget_is_held_before_training(ray_cluster, tmp_path, capsys):
    # as a user asks for it: the default space, only the searcher and the budget given (size_kb);
    # every config's exact size is known before training, so none over 6 kB is trained
    searcher, scheduler = BUDGET_PAIR
    rc, out, err = _cli(capsys, tmp_path, "budget", "--searcher", searcher, "--scheduler", scheduler, "--max-cost", "6",
                        "--max-train", "120", "--max-epochs", "2", "--num-samples", "4", "--quiet")
    assert rc == 0, err
    rows = _rows(tmp_path / "budget" / "trials.csv")
    assert len(rows) == 4 and all(float(r["size_kb"]) <= 6.0 for r in rows), rows
    assert "Pareto front" in out
    rc, out, err = _cli(capsys, tmp_path, "nb", "--space", "nb201", "--searcher", "gp", "--objective", "multi",
                        "--max-cost", "4e7", "--num-samples", "12", "--quiet")
    assert rc == 0, err
    assert all(float(r["macs"]) <= 4e7 for r in _rows(tmp_path / "nb" / "trials.csv"))


def test_a_multi_objective_run_with_no_searcher_named_runs_ehvi(ray_cluster, tmp_path, capsys):
    from nasq_ray.search.searchers import resolve_searcher

    assert resolve_searcher(from_dict({"objective": {"multi": True}})) == MULTI_DEFAULT[0]
    rc, out, err = _cli(capsys, tmp_path, "multi", "--objective", "multi", "--max-train", "120", "--max-epochs", "2",
                        "--num-samples", "3", "--quiet")
    assert rc == 0, err
    rows = _rows(tmp_path / "multi" / "trials.csv")
    assert len(rows) == 3 and any(r["status"] == "complete" for r in rows) and "Pareto front" in out


@pytest.mark.parametrize("source", [[], ["--latency", "table", "--searcher", "random"]], ids=["whole-network", "latency-table"])
def test_a_latency_cost_search_runs_through_ray_with_the_front_on_latency(ray_cluster, tmp_path, capsys, source):
    rc, out, err = _cli(capsys, tmp_path, "lat", "--objective", "multi", "--cost", "latency_ms", *DIGITS_TINY,
                        "--num-samples", "3", "--scheduler", "fifo", *source)
    assert rc == 0, err
    rows = _rows(tmp_path / "lat" / "trials.csv")
    assert len(rows) == 3 and all(r["status"] == "complete" and float(r["latency_ms"]) > 0 for r in rows)
    front = _rows(tmp_path / "lat" / "pareto.csv")
    assert front and "Pareto front (val_acc vs latency_ms" in out
    by_acc = sorted(front, key=lambda r: float(r["val_acc"]))
    assert all(float(a["latency_ms"]) >= float(b["latency_ms"]) for a, b in zip(by_acc[1:], by_acc))


def test_a_cost_budget_refuses_pbt(tmp_path, capsys):
    rc, _, err = _cli(capsys, tmp_path, "pb", "--scheduler", "pbt", "--max-cost", "6")
    assert rc == 2 and err.count("\n") == 1 and "objective.max_cost" in err and "pbt" in err


def test_a_cost_budget_no_config_meets_exits_2_with_one_line(ray_cluster, tmp_path, capsys):
    """Not an interruption to resume (exit 130, as it was), but a bad value of objective.max_cost."""
    rc, _, err = _cli(capsys, tmp_path, "none", "--space", "nb201", "--objective", "multi", "--cost", "macs",
                      "--max-cost", "1", "--num-samples", "3", "--quiet")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: objective.max_cost: the searcher proposed 500 configs in a row over the budget "
                          "(1 macs; the cheapest config it refused: ") and "no trial ran" in err


def test_dnas_on_a_table_is_refused_with_the_reason(tmp_path, capsys):
    rc, _, err = _cli(capsys, tmp_path, "d", "--space", "nb201", "--searcher", "dnas")
    assert rc == 2 and "dnas trains a super-network" in err and len(err.strip().splitlines()) == 1


def test_pbt_refuses_a_searcher_and_tables(tmp_path, capsys):
    rc, _, err = _cli(capsys, tmp_path, "p", *DIGITS_TINY, "--scheduler", "pbt", "--searcher", "tpe")
    assert rc == 2 and "pbt cannot be combined with searcher 'tpe'" in err
    rc, _, err = _cli(capsys, tmp_path, "p2", "--space", "nb201", "--scheduler", "pbt")
    assert rc == 2 and "scheduler: pbt" in err


def test_storage_uri_holds_state_and_checkpoints_and_out_the_results(ray_cluster, tmp_path, capsys):
    storage = tmp_path / "bucket"
    rc, _, err = _cli(capsys, tmp_path / "out", "st", *DIGITS_TINY, "--num-samples", "2", "--scheduler", "fifo",
                      "--storage", f"file://{storage}", "--quiet")
    assert rc == 0, err
    assert len(_rows(tmp_path / "out" / "st" / "trials.csv")) == 2
    assert list((storage / "st").glob("experiment_state-*.json"))
    assert len(list((storage / "st").glob("trial_*/checkpoint_*"))) == 2  # one kept per trial
    assert not list((tmp_path / "out" / "st").glob("trial_*"))


def _tf_scalar_tags(path: Path) -> set[str]:
    """Scalar tags in a TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    tags, data = set(), path.read_bytes()
    i = 0
    while i + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = Event.FromString(data[i + 12:i + 12 + n])
        tags |= {v.tag for v in event.summary.value}
        i += 12 + n + 4
    return tags


def test_json_progress_optuna_study_tensorboard_and_report(ray_cluster, tmp_path, capsys):
    import optuna

    rc, out, err = _cli(capsys, tmp_path, "obs", "--space", "digits_small", "--max-train", "120", "--max-epochs", "3",
                        "--num-samples", "4", "--scheduler", "asha", "--log-format", "json")
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    ends = [e for e in events if e["event"] == "trial_end"]
    assert len(ends) == 4 and events[-1]["event"] == "summary" and events[-1]["trials"] == 4
    assert ends[-1]["done"] == 4 and {"running", "pruned", "best_score", "front_size", "eta_s"} <= set(ends[-1])

    exp = tmp_path / "obs"
    rows = {r["trial_id"]: r for r in _rows(exp / "trials.csv")}
    study = optuna.load_study(study_name="obs", storage=f"sqlite:///{exp / 'optuna.db'}")
    trials = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert set(trials) == set(rows)
    states = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}
    for tid, row in rows.items():
        t = trials[tid]
        assert t.state == states[row["status"]]
        assert t.user_attrs["val_acc"] == pytest.approx(float(row["val_acc"]), abs=1e-6)
        assert t.user_attrs["size_kb"] == pytest.approx(float(row["size_kb"]), abs=1e-6)
        if row["status"] == "complete":
            assert t.value == pytest.approx(float(row["score"]), abs=1e-6)
        assert max(t.intermediate_values) == int(row["epochs"])  # one value per reported epoch
        for name, value in t.params.items():  # the same config as the CSV's columns
            assert str(value) == row[name] or float(value) == pytest.approx(float(row[name]), rel=1e-4)

    event_files = list(exp.glob("trial_*/events.out.tfevents.*"))
    assert len(event_files) == 4
    assert {"ray/tune/val_acc", "ray/tune/score"} <= _tf_scalar_tags(event_files[0])

    page = (exp / "report.html").read_text()
    assert page.count("<svg") >= 3 and "Trials" in page
    assert (exp / "pareto.png").exists()


def test_default_text_output_fits_one_screen(ray_cluster, tmp_path, capsys):
    rc, out, err = _cli(capsys, tmp_path, "screen", *DIGITS_TINY[:-1], "--num-samples", "6")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) <= 40, out  # status lines, front table, best config
    assert "done |" in lines[0] and "best score" in lines[0] and "left ~" in lines[0]
    assert not err.strip(), err  # no warnings from Ray or anyone


def test_export_packs_the_front_of_a_finished_run(ray_cluster, tmp_path, capsys):
    from nasq_ray.export import main as export_main

    rc, _, err = _cli(capsys, tmp_path, "exp", *DIGITS_TINY, "--num-samples", "3", "--scheduler", "fifo",
                      "--set", "search.seed=2", "--warm-start", "1")
    assert rc == 0, err
    # the warm-start config (bits chosen by calibration) ran, as the first trial
    from nasq_ray.config import saved_config
    from nasq_ray.trials import prepare
    from nasq_ray.trials.trained import warm_start_configs

    _, prep = prepare(saved_config(tmp_path / "exp", "test"))
    (point,) = warm_start_configs(prep.space, 1, prep.context.train, seed=2)

    def same(row, cfg):
        return all(float(row[k]) == pytest.approx(v, rel=1e-4) if isinstance(v, float) else row[k] == str(v)
                   for k, v in cfg.items())

    assert any(same(r, point) for r in _rows(tmp_path / "exp" / "trials.csv"))
    # models of 2 epochs have near-tie logits: allow a float-rounding flip of 2 of the ~180 test samples
    assert export_main([str(tmp_path / "exp"), "--pareto", "--tolerance-pp", "1.2"]) == 0
    out = capsys.readouterr().out
    front = _rows(tmp_path / "exp" / "pareto.csv")
    for ext in ("nqw", "float.onnx"):
        assert len(list((tmp_path / "exp" / "export").glob(f"*.{ext}"))) == len(front) >= 1
    assert len(list((tmp_path / "exp" / "export").glob("*.onnx"))) == 2 * len(front)  # export + its float twin
    for row in front:
        cols = next(ln for ln in out.splitlines() if ln.startswith(row["trial_id"])).split()
        fq_acc, ort_acc, gap_pp = (float(v) for v in cols[1:4])
        changed, packed, size_bits = (int(v.replace(",", "")) for v in cols[4:7])
        assert abs(ort_acc - fq_acc) * 100 <= 1.2 and abs(gap_pp) <= 1.2 and changed <= 2
        assert abs(packed - size_bits) <= 0.05 * size_bits and cols[9] == "yes"
    assert export_main([str(tmp_path / "exp"), "--trial", "nope"]) == 2
    for row in front:  # what runs on integer kernels, said per model
        assert re.search(rf"^{row['trial_id']}: \d+ of \d+ Conv/Gemm on integer kernels", out, re.M), out

    # latency of the export against the float model of the same network (the best trial)
    assert export_main([str(tmp_path / "exp"), "--tolerance-pp", "1.2", "--benchmark"]) == 0
    out = capsys.readouterr().out
    best = json.loads((tmp_path / "exp" / "best.json").read_text())["trial_id"]
    cols = next(ln for ln in out.split("onnxruntime latency")[1].splitlines() if ln.startswith(best)).split()
    assert len(cols) == 7 and all(float(v) > 0 for v in cols[1:])
    assert export_main([str(tmp_path / "exp"), "--benchmark", "--format", "packed"]) == 2
    assert "--benchmark: needs --format onnx" in capsys.readouterr().err

    # a trial an interrupted run left unfinished is exported from its last checkpoint, and said so
    rows = _rows(tmp_path / "exp" / "trials.csv")
    rows[0]["status"] = "unfinished"
    with open(tmp_path / "exp" / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert export_main([str(tmp_path / "exp"), "--trial", rows[0]["trial_id"], "--format", "packed"]) == 0
    assert f"warning: trial {rows[0]['trial_id']} is unfinished (trained 2 of 2 epochs)" in capsys.readouterr().err


def test_a_user_model_is_pruned_quantized_trained_through_ray_and_exported(ray_cluster, tmp_path, capsys, monkeypatch):
    """The user's path: their model and data factory from the current directory, no weights (the
    float model is trained first), HAWQ-V3 bits at spread budgets; export of the front checks the
    ONNX files against fake-quant; the report shows the reference models and sensitivities."""
    from nasq_ray.export import main as export_main
    from user_model_code import write_user_module

    write_user_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    searcher, scheduler = OWN_MODEL_PAIR
    rc, out, err = _cli(capsys, tmp_path / "out", "own", "--model", "mynet:Net", "--data", "mynet:data",
                        "--float-epochs", "3", "--searcher", searcher, "--scheduler", scheduler, "--num-samples", "3",
                        "--max-epochs", "1")
    assert rc == 0, err
    folder = tmp_path / "out" / "own"
    assert "float model mynet:Net(): trained 3 epochs" in out and "Reference models" in out and "ptq 4/4" in out
    rows = _rows(folder / "trials.csv")
    assert len(rows) == 3 and all(r["status"] == "complete" for r in rows)
    assert len({r["size_kb"] for r in rows}) == 3  # three budgets, three sizes
    for f in ("float_model.pt", "sensitivity.json", "reference.csv", "report.html"):
        assert (folder / f).is_file(), f
    page = (folder / "report.html").read_text()
    assert "Reference models" in page and "Layer sensitivities" in page
    capsys.readouterr()
    assert export_main([str(folder), "--pareto", "--tolerance-pp", "1.0"]) == 0
    assert list((folder / "export").glob("*.onnx")) and list((folder / "export").glob("*.nqw"))
    kernel_lines = [x for x in capsys.readouterr().out.splitlines() if "Conv/Gemm on integer kernels" in x]
    assert kernel_lines and all("net." not in x for x in kernel_lines)  # layers named as the space names them
