"""``--oneshot`` end to end: one command, one results folder, three phases; phase 1 resumes after a
SIGKILL of the driver; bad combinations exit 2 with one line."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ONESHOT_SPACE
from nasq_ray.export import main as export_main
from nasq_ray.run import main
from nasq_ray.testing import kill_session

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "tinyshot.yaml"
    path.write_text(ONESHOT_SPACE)
    return path


def test_a_one_shot_search_runs_its_three_phases_in_one_folder(ray_cluster, tmp_path, capsys, monkeypatch):
    from nasq_ray.search import driver

    during = {}  # the folder's experiment.yaml while each phase runs (what a resume after a kill -9 reads)
    cpus = {}  # each phase's CPUs per trial
    fit = driver._fit
    monkeypatch.setattr(driver, "_fit", lambda cfg, *a, **k: (
        during.setdefault(cfg.name, (tmp_path / "shot" / "experiment.yaml").read_text()),
        cpus.setdefault(cfg.name, cfg.resources.cpus_per_trial), fit(cfg, *a, **k))[2])
    rc = main(["--space", str(_space(tmp_path)), "--oneshot", "--supernet-epochs", "3", "--num-samples", "12",
               "--finetune-epochs", "1", "--set", "search.finetune_top=2", "--max-train", "300",
               "--out", str(tmp_path), "--name", "shot"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    folder = tmp_path / "shot"
    assert "phase 1" in out and "phase 2" in out and "phase 3" in out and "Pareto front" in out
    assert set(during) == {"supernet", "shot", "finetune"}
    assert all("mode: oneshot" in text for text in during.values())  # phase 2 (shot) had written its own
    assert cpus == {"supernet": 2, "shot": 1, "finetune": 1}  # phase 1, one trial, takes the whole machine
    assert (folder / "supernet.pt").is_file() and json.loads((folder / "oneshot.json").read_text()) == {
        "supernet": "done", "search": "done", "finetune": "done"}
    rows = _rows(folder / "trials.csv")
    oneshot = [r for r in rows if r["phase"] == "oneshot"]
    tuned = [r for r in rows if r["phase"] == "finetune"]
    assert len(oneshot) == 12 and 1 <= len(tuned) <= 2
    assert all(r["oneshot_val_acc"] != "" for r in tuned)  # the estimate beside the fine-tuned accuracy
    front = _rows(folder / "pareto.csv")
    assert front and {r["trial_id"] for r in front} <= {r["trial_id"] for r in tuned}
    assert (folder / "report.html").is_file()

    # export: the best (a fine-tuned trial, in finetune/) and a phase-2 sub-network (no checkpoint of its own)
    assert export_main([str(folder), "--format", "packed"]) == 0
    assert export_main([str(folder), "--format", "packed", "--trial", oneshot[0]["trial_id"]]) == 0
    best = json.loads((folder / "best.json").read_text())["trial_id"]
    assert {p.name for p in (folder / "export").iterdir()} == {f"{best}.nqw", f"{oneshot[0]['trial_id']}.nqw"}

    # resumed as if stopped at the end of phase 2: phase 2 is restored with its own config (the folder's
    # experiment.yaml is the one-shot run's; resuming from it had recursed), phase 3 runs again
    (folder / "oneshot.json").write_text(json.dumps({"supernet": "done"}))
    shutil.rmtree(folder / "finetune")
    capsys.readouterr()
    assert main(["--resume", str(folder), "--quiet"]) == 0, capsys.readouterr().err[-3000:]
    assert len([r for r in _rows(folder / "trials.csv") if r["phase"] == "oneshot"]) == 12
    assert json.loads((folder / "oneshot.json").read_text())["finetune"] == "done"

    # bad input on the finished folder: one line, exit 2, nothing lost
    files = {p: p.read_bytes() for p in folder.glob("*.csv")}
    capsys.readouterr()
    assert main(["--resume", str(folder / "finetune")]) == 2  # it resumed phase 3 alone, "interrupted" for ever
    assert f"is phase 3 of the one-shot run in '{folder}'; resume that run" in capsys.readouterr().err
    state = (folder / "oneshot.json").read_text()
    (folder / "oneshot.json").write_text("[1, 2]")
    assert main(["--resume", str(folder)]) == 2 and "oneshot.json is damaged (list)" in capsys.readouterr().err
    (folder / "oneshot.json").write_text(state)
    (folder / "best.json").write_text("{")
    assert export_main([str(folder), "--format", "packed"]) == 2
    assert "best.json is damaged (JSONDecodeError)" in capsys.readouterr().err
    shutil.rmtree(folder / "export")
    (folder / "export").write_text("")
    assert export_main([str(folder), "--format", "packed", "--pareto"]) == 2
    assert "export' is a file" in capsys.readouterr().err
    assert files == {p: p.read_bytes() for p in folder.glob("*.csv")}


def test_phase_1_resumes_after_a_sigkill_of_the_driver(tmp_path):
    args = ["--space", str(_space(tmp_path)), "--oneshot", "--supernet-epochs", "40", "--num-samples", "4",
            "--finetune-epochs", "0", "--max-train", "300", "--out", str(tmp_path), "--name", "kill", "--quiet"]
    driver = subprocess.Popen([sys.executable, "-m", "nasq_ray.run", *args], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    phase1 = tmp_path / "kill" / "supernet"
    try:
        deadline = time.time() + 300
        # the hard kill once the experiment state (which Ray saves every few seconds) names a checkpoint
        while not any("checkpoint_0000" in f.read_text() for f in phase1.glob("experiment_state-*.json")):
            assert time.time() < deadline and driver.poll() is None, driver.stdout.read()[-3000:]
            time.sleep(0.2)
    finally:
        kill_session(driver.pid)
        driver.wait()
    assert not (tmp_path / "kill" / "supernet.pt").exists()
    p = subprocess.run([sys.executable, "-m", "nasq_ray.run", "--resume", str(tmp_path / "kill"), "--quiet"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (trial,) = phase1.glob("trial_*")
    lines = [json.loads(x) for x in (trial / "result.json").read_text().splitlines() if x.strip()]
    assert lines[-1]["epoch"] == 40 and lines[-1]["iterations_since_restore"] < 40  # continued, not restarted
    assert len(_rows(tmp_path / "kill" / "trials.csv")) == 4


@pytest.mark.parametrize("argv, needle", [
    (["--space", "nb201", "--oneshot"], "search.mode: oneshot trains a super-network of a generated space"),
    (["--oneshot", "--scheduler", "pbt"], "search.mode: oneshot scores sub-networks"),
    (["--oneshot", "--model", "mynet:Net"], "has no elastic dimension"),
    (["--oneshot", "--set", "search.head_steps=-1"], "search.head_steps"),
    (["--oneshot", "--set", "search.subnet_val_samples=0"], "search.subnet_val_samples"),
    (["--oneshot", "--searcher", "dnas"], "search.searcher: dnas trains its own differentiable super-network"),
    (["--oneshot", "--objective", "multi", "--scheduler-arg", "grace_period=2"],
     "search.scheduler_args: {'grace_period': 2} is not allowed with search.mode oneshot"),
    (["--oneshot", "--searcher", "hawq"], "search.searcher: hawq needs the Hessian sensitivities"),
])
def test_bad_one_shot_combinations_exit_2_with_one_line(ray_cluster, tmp_path, capsys, argv, needle):
    rc = main([*argv, "--out", str(tmp_path), "--name", "bad"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_a_verbose_one_shot_run_builds_its_quiet_phases():
    from nasq_ray.config import from_dict
    from nasq_ray.search.oneshot import phase_configs

    phases = phase_configs(from_dict({"verbose": True, "search": {"mode": "oneshot"}, "name": "x"}))
    assert phases[0].quiet and phases[0].verbose  # Ray's logs on, the phase's own summary off
