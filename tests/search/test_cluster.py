"""Cluster configs are valid for their tools; a real 2-node cluster on loopback runs a search;
a killed driver resumes; a crashed trial is retried; runs are reproducible."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nasq_ray.testing import kill_session

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
RAY_CLI = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else "ray"
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------------ configs are valid

@pytest.mark.parametrize("name", ["ray-aws.yaml", "ray-local.yaml"])
def test_cluster_launcher_configs_validate_against_rays_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((CLUSTER / name).read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    bad = {**copy.deepcopy(cfg), "max_wrokers": 3}  # a typo must not pass
    with pytest.raises(Exception, match="max_wrokers"):
        validate_config(prepare_config(bad))


def test_rayjob_manifest_has_the_fields_kuberay_requires():
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m nasq_ray.run --config ")
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert "rayStartParams" in head and head["template"]["spec"]["containers"][0]["image"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert group["template"]["spec"]["containers"][0]["image"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env["env_vars"]["RAY_AUTH_MODE"] == "disabled"


def test_submit_script_wraps_ray_job_submit():
    script = CLUSTER / "submit.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "ray job submit" in text and "--working-dir ." in text and "python -m nasq_ray.run" in text


# ------------------------------------------------------------------------------------ helpers

TINY_SPACE = {
    "name": "tiny", "input": "image",
    "stages": [{"channels": [4, 8], "ops": ["conv3x3", "dwsep3x3"]}],
    "head": {"pool": "flatten", "hidden_layers": 0},
    "quant": {"w_bits": [2, 4, 8], "a_bits": [4, 8]},
    "train": {"lr": {"low": 0.005, "high": 0.02, "log": True}, "batch_size": 32},
}


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "nasq_ray.run", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or ENV, cwd=ROOT)


@pytest.fixture
def tiny_space(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


# --------------------------------------------------------------------------- a 2-node cluster

@pytest.fixture
def two_node_cluster(tmp_path):
    """A head and a worker node started with `ray start` on loopback (one CPU each)."""
    port = _free_port()
    common = ["--num-cpus=1", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    head = subprocess.Popen([RAY_CLI, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    procs = [head]
    try:
        _wait_for(lambda: _can_connect("127.0.0.1", port), 60, "head node")
        worker = subprocess.Popen([RAY_CLI, "start", f"--address={address}", *common], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(worker)
        _wait_for(lambda: _nodes(address) >= 2, 90, "worker node")
        yield address
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        stale = Path("/tmp/ray/ray_current_cluster")  # `ray start --head` leaves its address behind
        if stale.exists() and stale.read_text().strip().endswith(f":{port}"):
            stale.unlink()


def _can_connect(host, port) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _nodes(address: str) -> int:
    code = ("import ray; ray.init(address=%r, log_to_driver=False, logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))" % address)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    return int(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 and p.stdout.strip() else 0


def _wait_for(check, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up in {timeout} s")


def test_search_runs_on_both_nodes_of_a_real_cluster(two_node_cluster, tmp_path, tiny_space):
    p = _run(["--address", two_node_cluster, "--space", str(tiny_space), "--max-train", "150", "--max-epochs", "3",
              "--num-samples", "6", "--scheduler", "fifo", "--out", str(tmp_path), "--name", "mn", "--quiet"])
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(tmp_path / "mn" / "trials.csv")
    assert len(rows) == 6 and all(r["status"] == "complete" for r in rows)
    nodes = {r["node"] for r in rows}
    assert len(nodes) == 2, nodes  # trials ran on the head and on the worker


# ------------------------------------------------------------------------------- kill and resume

def _last_results(exp: Path) -> dict[str, dict]:
    """Each trial's last reported result, from the result.json files trials write as they go."""
    out = {}
    for result in exp.glob("trial_*/result.json"):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        if lines:
            out[result.parent.name.replace("trial_", "")] = lines[-1]
    return out


def _finished_trials(exp: Path, epochs: int = 3) -> int:
    return sum(r["epoch"] == epochs for r in _last_results(exp).values())


def _driver(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nasq_ray.run", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_an_interrupted_and_a_killed_driver_resume_with_finished_trials_kept(tmp_path):
    args = ["--space", "digits_small", "--max-epochs", "8", "--num-samples", "8",
            "--scheduler", "fifo", "--searcher", "evolution", "--max-concurrent", "1", "--out", str(tmp_path),
            "--name", "kill", "--seed", "3"]
    exp = tmp_path / "kill"

    # SIGTERM (as a batch system sends it; Ctrl-C takes the same path): state saved, resume command printed
    driver = _driver(args)
    try:
        # trials run: stop now. Checkpoints are written to the results folder as trials report; result.json
        # only when Ray syncs the driver's files (on CI that came once most trials had finished)
        _wait_for(lambda: any(exp.glob("trial_*/checkpoint_*")), 300, "a first checkpoint")
        driver.send_signal(signal.SIGTERM)
        out, _ = driver.communicate(timeout=120)
    finally:
        kill_session(driver.pid)  # whatever is left of the Ray it started
    assert driver.returncode == 130, out[-3000:]
    assert f"python -m nasq_ray.run --resume {exp}" in out

    # SIGKILL of the resumed driver: no chance to save anything more
    first = _finished_trials(exp, 8)
    driver = _driver(["--resume", str(exp)])
    try:
        _wait_for(lambda: _finished_trials(exp, 8) >= first + 1, 300, "one more finished trial")
    finally:
        kill_session(driver.pid)  # the driver, the Ray cluster it started, its trials
        driver.wait()
    before = {tid: r["val_acc"] for tid, r in _last_results(exp).items() if r["epoch"] == 8}
    assert len(before) >= 1

    p = _run(["--resume", str(exp), "--quiet"])
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(exp / "trials.csv")
    assert len(rows) == 8, [r["trial_id"] for r in rows]  # exactly the requested number
    assert all(r["status"] == "complete" for r in rows)
    done = {r["trial_id"]: float(r["val_acc"]) for r in rows}
    for tid, acc in before.items():  # finished trials kept, with their results
        assert done[tid] == pytest.approx(acc, abs=1e-6)  # trials.csv keeps 6 decimals


def _saved_configs(exp: Path) -> dict[str, dict]:
    """Trial id -> config, from the newest experiment state Ray saved in ``exp``."""
    from nasq_ray.search.schedulers import flat_config

    state = json.loads(max(exp.glob("experiment_state-*.json")).read_text())
    return {t["trial_id"]: flat_config(t["config"]) for t in (json.loads(x) for x, _ in state["trial_data"])}


def _network(config: dict) -> dict:
    """What PBT never perturbs: every parameter but the training hyperparameters (trials.csv's columns with
    a dot in their name), as trials.csv writes it."""
    return {k: str(v) for k, v in config.items() if "." in k and not k.startswith("train.") and str(v) != ""}


def test_a_copied_interrupted_pbt_run_resumes_in_the_copy_with_its_own_networks(tmp_path, tiny_space):
    """Two faults of Ray's restore: a PBT trial's starting config (a ``sample_from`` function) was drawn
    again, so every restored trial failed on its own checkpoint; and a copied folder's resume wrote its
    new trials and Optuna study into the folder it was copied from."""
    import shutil

    import optuna

    exp = tmp_path / "orig" / "p"
    driver = _driver(["--space", str(tiny_space), "--max-train", "150", "--max-epochs", "40", "--num-samples", "4",
                      "--scheduler", "pbt", "--out", str(tmp_path / "orig"), "--name", "p", "--quiet"])
    try:
        _wait_for(lambda: any(exp.glob("trial_*/checkpoint_*")), 300, "a first checkpoint")
        driver.send_signal(signal.SIGTERM)
        out, _ = driver.communicate(timeout=120)
    finally:
        kill_session(driver.pid)
    assert driver.returncode == 130, out[-3000:]
    copy = tmp_path / "copy" / "p"
    shutil.copytree(exp, copy)
    before = sorted(str(f.relative_to(exp)) for f in exp.rglob("*"))

    p = _run(["--resume", str(copy)])  # not quiet: the original was, and the resume's own flags hold
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(copy / "trials.csv")
    assert len(rows) == 4 and all(r["status"] == "complete" for r in rows), [(r["status"], r["error"]) for r in rows]
    # each trial that had started ends with its own network or one PBT cloned from another trial, never a new draw
    networks = [_network(c) for c in _saved_configs(exp).values()]
    assert networks and all(_network(r) in networks for r in rows if r["trial_id"] in _saved_configs(exp))
    assert all(any(t.glob("checkpoint_*")) for t in copy.glob("trial_*"))
    assert sorted(str(f.relative_to(exp)) for f in exp.rglob("*")) == before  # the original untouched
    assert len(optuna.load_study(study_name="p", storage=f"sqlite:///{copy}/optuna.db").trials) == 4
    assert "4/4 done" in p.stdout


# ------------------------------------------------------------------------------- trial faults

def test_a_trial_that_kills_its_process_is_retried_from_its_checkpoint(tmp_path, tiny_space):
    marks = tmp_path / "crashed"
    marks.mkdir()
    env = {**ENV, "NASQ_CRASH_ONCE_DIR": str(marks)}  # each trial kills its worker once, after epoch 2
    p = _run(["--space", str(tiny_space), "--max-train", "100", "--max-epochs", "3", "--num-samples", "2",
              "--scheduler", "fifo", "--max-failures", "1", "--out", str(tmp_path), "--name", "crash", "--quiet"],
             env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(tmp_path / "crash" / "trials.csv")
    assert len(rows) == 2 and all(r["status"] == "complete" and r["epochs"] == "3" for r in rows)
    assert len(list(marks.iterdir())) == 2  # both really crashed once
    for trial in (tmp_path / "crash").glob("trial_*"):
        lines = [json.loads(x) for x in (trial / "result.json").read_text().splitlines() if x.strip()]
        # resumed, not restarted: the retried worker's first report is epoch 3. (Ray's JSON logger copies
        # result.json back from storage when the trial restarts; under load that copy can predate epochs
        # 1-2, so they are not always in the file: the last line says what the retry did.)
        assert lines[-1]["epoch"] == 3 and lines[-1]["iterations_since_restore"] == 1, lines
        assert [r["epoch"] for r in lines] in ([1, 2, 3], [3]), lines


def test_a_trial_that_always_crashes_is_recorded_and_the_search_goes_on(tmp_path, tiny_space):
    env = {**ENV, "NASQ_CRASH_ONCE_DIR": "always"}
    p = _run(["--space", str(tiny_space), "--max-train", "100", "--max-epochs", "3", "--num-samples", "2",
              "--scheduler", "fifo", "--max-failures", "1", "--out", str(tmp_path), "--name", "dead", "--quiet"],
             env=env)
    rows = _rows(tmp_path / "dead" / "trials.csv")
    assert len(rows) == 2 and all(r["status"] == "failed" and r["error"] for r in rows)
    # a run that gave no model says so and exits 1 (the results are written all the same)
    assert p.returncode == 1, p.stderr[-3000:]
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: every trial failed (2 trials); the first one's error: ") and "trials.csv" in line


# ------------------------------------------------------------------------------ reproducibility

def test_a_fixed_seed_with_one_trial_at_a_time_reproduces_configs_and_metrics(tmp_path, tiny_space):
    runs = []
    procs = {name: subprocess.Popen(  # the two runs side by side (one trial at a time each, two cores)
        [sys.executable, "-m", "nasq_ray.run", "--space", str(tiny_space), "--max-train", "100", "--max-epochs", "2",
         "--num-samples", "3", "--seed", "7", "--max-concurrent", "1", "--out", str(tmp_path), "--name", name,
         "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
        for name in ("r1", "r2")}
    for name, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        rows = _rows(tmp_path / name / "trials.csv")
        keep = [k for k in rows[0] if k not in ("trial_id", "time_s", "node")]
        runs.append(sorted(tuple(r[k] for k in keep) for r in rows))
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 3  # three different trials, each reproduced exactly


# ------------------------------------------------------------------------------ trials that no node can run

@pytest.mark.parametrize("private, cpus, gpus, workers, needle", [
    (True, 3, 0, 0, "resources.cpus_per_trial: 3 is more than this machine has (2 CPUs); allowed: up to 2,"),
    (True, 1, 0.5, 0, "resources.gpus_per_trial: 0.5 is more than this machine has (0 GPUs); allowed: up to 0,"),
    (True, 1, 0, 3, "search.supernet_workers: 3 is more than this machine has (2 CPUs for 3 workers of 1 CPU); "
                    "allowed: up to 2,"),
    (True, 2.5, 0, 2, "search.supernet_workers: 2 is more than this machine has (2 CPUs for 2 workers of 2 CPUs)"),
])
def test_a_trial_no_node_can_run_is_refused_on_the_runs_own_ray(monkeypatch, private, cpus, gpus, workers, needle):
    import ray

    from nasq_ray.config import from_dict
    from nasq_ray.errors import ConfigError
    from nasq_ray.search.session import check_trials_fit

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    cfg = from_dict({"resources": {"cpus_per_trial": cpus, "gpus_per_trial": gpus}})
    with pytest.raises(ConfigError) as e:
        check_trials_fit(cfg, private=private, workers=workers)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_on_a_cluster_the_largest_node_counts_and_too_large_a_trial_is_a_warning(monkeypatch, capsys):
    import ray

    from nasq_ray.config import from_dict
    from nasq_ray.search.session import check_trials_fit

    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]  # a dead node gives nothing
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    check_trials_fit(from_dict({"resources": {"cpus_per_trial": 8, "gpus_per_trial": 1}}), private=True)
    check_trials_fit(from_dict({"resources": {"cpus_per_trial": 2}}), private=True, workers=5)  # 10 CPUs of 10
    assert capsys.readouterr().err == ""
    check_trials_fit(from_dict({"resources": {"gpus_per_trial": 2}}), private=False)
    assert capsys.readouterr().err.startswith("warning: resources.gpus_per_trial: 2 is more than the cluster's "
                                              "largest node has (1 GPU); trials wait")


def test_a_gpu_trial_on_a_machine_without_one_exits_2_before_any_trial(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    p = subprocess.run([sys.executable, "-m", "nasq_ray.run", "--gpus-per-trial", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=180, env=ENV)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().endswith("or --address of a cluster that has more"), p.stderr[-2000:]
    assert "resources.gpus_per_trial: 1 is more than this machine has (0 GPUs)" in p.stderr
    assert not list(tmp_path.rglob("trials.csv"))


def test_one_driver_at_a_time_writes_a_results_folder(tmp_path):
    from nasq_ray.errors import ConfigError
    from nasq_ray.search.session import LOCK_FILE, folder_lock

    with folder_lock(tmp_path / "run"):
        with pytest.raises(ConfigError, match=rf"another nasq-ray process \(pid {os.getpid()} on "):
            with folder_lock(tmp_path / "run"):  # a second run of the name, or a second --resume
                pass
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run" / LOCK_FILE).write_text(f"{socket.gethostname()} {dead.pid}")  # a driver killed with -9
    with folder_lock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_FILE).read_text().endswith(f" {os.getpid()}")


def test_a_folder_the_driver_cannot_lock_is_one_line(tmp_path, monkeypatch):
    from nasq_ray.errors import ConfigError
    from nasq_ray.search.session import LOCK_FILE, folder_lock

    (tmp_path / "run" / LOCK_FILE).mkdir(parents=True)  # a folder of the lock's name
    with pytest.raises(ConfigError, match=r"another nasq-ray process \(pid \? on \?\)"):
        with folder_lock(tmp_path / "run"):
            pass
    (tmp_path / "run" / LOCK_FILE).rmdir()
    (tmp_path / "run" / LOCK_FILE).write_bytes(b"\x1b[2J\x00\xff garbage")  # no raw bytes in the message
    with pytest.raises(ConfigError, match=r"\(pid \? on \?\)"):
        with folder_lock(tmp_path / "run"):
            pass

    def refused(*a, **k):  # a read-only folder (root writes anywhere, so the refusal is simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refused)
    with pytest.raises(ConfigError, match=r"^out: cannot write in '.*ro' \(PermissionError: Permission denied\)"):
        with folder_lock(tmp_path / "ro"):
            pass
