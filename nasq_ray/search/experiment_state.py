"""Read Ray Tune's experiment state file (what ``--resume`` restores from) on any storage."""

from __future__ import annotations

import json

STATE_PREFIX = "experiment_state-"


def read_saved_state(fs, path: str) -> str | None:
    """Text of the newest ``experiment_state-*.json`` in the experiment folder ``path`` on the pyarrow
    filesystem ``fs``; None when there is none (yet) or it cannot be read right now."""
    import pyarrow.fs

    try:
        infos = [i for i in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=False))
                 if i.base_name.startswith(STATE_PREFIX) and i.base_name.endswith(".json")]
        if not infos:
            return None
        # by name (the session's start time), as Ray restores: each sync rewrites every file's mtime
        newest = max(infos, key=lambda i: i.base_name)
        with fs.open_input_stream(newest.path) as f:
            return f.readall().decode()
    except OSError:
        return None


def _trials(state_text: str):
    for trial_json, meta_json in json.loads(state_text)["trial_data"]:
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        meta = json.loads(meta_json) if isinstance(meta_json, str) else meta_json
        yield trial, meta


def checkpoint_index(path: str) -> int:
    """``.../checkpoint_000012`` -> 12."""
    return int(str(path).rstrip("/").rsplit("_", 1)[-1])


def saved_checkpoint_indices(state_text: str) -> dict[str, int]:
    """Trial id -> index of the newest checkpoint an experiment state names."""
    out = {}
    for trial, meta in _trials(state_text):
        name = (meta.get("last_result") or {}).get("checkpoint_dir_name")
        if name:
            out[trial["trial_id"]] = checkpoint_index(name)
    return out


def saved_trial_statuses(state_text: str) -> dict[str, str]:
    """Trial id -> Tune status (TERMINATED, ERROR, PENDING, ...) in an experiment state. A trial
    stopped by Ctrl-C is saved as PENDING: ``--resume`` continues it."""
    return {trial["trial_id"]: trial.get("status", "") for trial, _ in _trials(state_text)}


def saved_checkpoint_paths(state_text: str) -> dict[str, tuple[str, str]]:
    """Trial id -> (status, the newest checkpoint's path relative to the experiment folder) for every
    trial an experiment state names a checkpoint of."""
    out = {}
    for trial, meta in _trials(state_text):
        name = (meta.get("last_result") or {}).get("checkpoint_dir_name")
        logdir = trial.get("relative_logdir")
        if name and logdir:
            out[trial["trial_id"]] = (trial.get("status", ""), f"{logdir}/{name}")
    return out
