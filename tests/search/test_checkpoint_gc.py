"""A checkpoint is deleted only once the experiment state on storage names a newer one; ``--resume``
refuses a run whose unfinished trials' checkpoints are gone."""

from __future__ import annotations

import json
import shutil

import pytest
from ray.tune import Checkpoint

from nasq_ray.errors import ConfigError
from nasq_ray.search.checkpoint_gc import CheckpointGC
from nasq_ray.search.session import check_checkpoints_kept
from nasq_ray.search.experiment_state import checkpoint_index, saved_checkpoint_indices, saved_trial_statuses


def _state(**newest: str) -> str:
    """An experiment state file as Ray Tune writes it: trial_data pairs of JSON strings."""
    data = [[json.dumps({"trial_id": tid}), json.dumps({"last_result": {"checkpoint_dir_name": name}})]
            for tid, name in newest.items()]
    data.append([json.dumps({"trial_id": "fresh"}), json.dumps({"last_result": {}})])  # nothing reported yet
    return json.dumps({"trial_data": data, "runner_data": {}})


def _checkpoints(tmp_path, trial, n):
    out = []
    for i in range(n):
        d = tmp_path / trial / f"checkpoint_{i:06d}"
        d.mkdir(parents=True)
        (d / "state.pt").write_bytes(b"x")
        out.append(Checkpoint.from_directory(str(d)))
    return out


def test_state_file_names_each_trials_newest_checkpoint():
    assert saved_checkpoint_indices(_state(a="checkpoint_000002", b="checkpoint_000010")) == {"a": 2, "b": 10}
    assert checkpoint_index("/x/trial_a/checkpoint_000012/") == 12


def test_only_checkpoints_older_than_the_saved_one_go(tmp_path):
    gc = CheckpointGC(keep=1)
    gc._registered = {"a": _checkpoints(tmp_path, "a", 4), "b": _checkpoints(tmp_path, "b", 3)}
    # the state on storage is behind: it names a's checkpoint 1 and nothing of b
    assert gc.collect(saved_checkpoint_indices(_state(a="checkpoint_000001"))) == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"checkpoint_{i:06d}" for i in (1, 2, 3)]
    assert len(list((tmp_path / "b").iterdir())) == 3
    # the state catches up: everything but the newest goes
    assert gc.collect(saved_checkpoint_indices(_state(a="checkpoint_000003", b="checkpoint_000002"))) == 4
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["checkpoint_000003"]
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["checkpoint_000002"]


def test_keep_n_and_already_deleted_checkpoints(tmp_path):
    gc = CheckpointGC(keep=2)
    gc._registered = {"a": _checkpoints(tmp_path, "a", 5)}
    (tmp_path / "a" / "checkpoint_000000" / "state.pt").unlink()
    (tmp_path / "a" / "checkpoint_000000").rmdir()  # gone already (a run before a resume)
    gc.collect({"a": 4})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["checkpoint_000003", "checkpoint_000004"]


def test_survives_pickling_with_the_run_config():
    import pickle

    gc = pickle.loads(pickle.dumps(CheckpointGC(keep=3)))
    assert gc.keep == 3 and gc._registered == {}


def test_statuses_in_the_saved_state():
    state = json.dumps({"trial_data": [
        [json.dumps({"trial_id": "a", "status": "TERMINATED"}), json.dumps({})],
        [json.dumps({"trial_id": "b", "status": "PENDING"}), json.dumps({})],
    ]})
    assert saved_trial_statuses(state) == {"a": "TERMINATED", "b": "PENDING"}


def _saved_run(folder, trials: dict[str, tuple[str, str]], on_disk: set[str]) -> None:
    """An experiment folder whose state names ``trials`` (id -> status, checkpoint); only ``on_disk`` exist."""
    data = [[json.dumps({"trial_id": tid, "status": status, "relative_logdir": f"trial_{tid}"}),
             json.dumps({"last_result": {"checkpoint_dir_name": ckpt}})] for tid, (status, ckpt) in trials.items()]
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": data}))
    for tid in on_disk:
        (folder / f"trial_{tid}" / trials[tid][1]).mkdir(parents=True)


def test_resume_refuses_unfinished_trials_whose_checkpoints_are_gone(tmp_path, capsys):
    trials = {"a": ("TERMINATED", "checkpoint_000002"), "b": ("PAUSED", "checkpoint_000001"),
              "c": ("ERROR", "checkpoint_000000"), "d": ("PENDING", "checkpoint_000004")}
    _saved_run(tmp_path, trials, on_disk={"a", "b", "c", "d"})
    check_checkpoints_kept(str(tmp_path))  # all there: nothing said
    assert capsys.readouterr().err == ""

    shutil.rmtree(tmp_path / "trial_a")  # a finished trial's folder: its results stay, a warning says what is lost
    check_checkpoints_kept(str(tmp_path))
    assert "finished trial(s) are gone (trial_a)" in capsys.readouterr().err

    shutil.rmtree(tmp_path / "trial_b" / "checkpoint_000001")  # Ray would fail these after the restore
    shutil.rmtree(tmp_path / "trial_d")
    with pytest.raises(ConfigError, match=r"^resume: 2 unfinished trial\(s\) need checkpoints that are gone .*"
                                          r"trial_b/checkpoint_000001, trial_d/checkpoint_000004; deleted"):
        check_checkpoints_kept(str(tmp_path))


def test_resume_refuses_a_folder_whose_experiment_state_is_gone_or_damaged(tmp_path):
    from nasq_ray.errors import ConfigError
    from nasq_ray.search.session import check_checkpoints_kept

    with pytest.raises(ConfigError, match=r"resume: no experiment state \(experiment_state-\*.json\)"):
        check_checkpoints_kept(str(tmp_path))  # Ray would start the experiment over and overwrite the results
    (tmp_path / "experiment_state-2026-12-08_00-00-00.json").write_text('{"trial_data": [["{\\"trial_id')
    with pytest.raises(ConfigError, match="the experiment state in .* is damaged"):
        check_checkpoints_kept(str(tmp_path))
