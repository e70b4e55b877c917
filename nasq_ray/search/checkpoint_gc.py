"""Bounded checkpoints per trial that a killed driver can still resume from.

Ray Tune's own ``CheckpointConfig(num_to_keep=N)`` deletes a trial's older checkpoint the moment a
newer one is registered, but the experiment state that ``--resume`` reads is written only every few
seconds. A driver killed in between leaves a state that names a deleted checkpoint, and the resumed
trial fails with "Could not recover from checkpoint as it does not exist on storage anymore".

``CheckpointGC`` deletes a checkpoint only once the experiment state already on storage names a newer
checkpoint of the same trial (it reads the state file: no clocks involved), so the state on storage
always names checkpoints that exist.
"""

from __future__ import annotations

import time

from ray import tune

from .experiment_state import checkpoint_index, read_saved_state, saved_checkpoint_indices


class CheckpointGC(tune.Callback):
    """Keep the newest ``keep`` checkpoints of each trial up to the one the saved experiment state
    names, plus every checkpoint registered after it."""

    def __init__(self, keep: int, check_every_s: float = 5.0):
        self.keep = keep
        self.check_every_s = check_every_s
        self._registered: dict[str, list[object]] = {}  # trial id -> checkpoints, oldest first
        self._state_dir = None  # (filesystem, path) of the experiment folder on storage
        self._last_check = 0.0

    def __getstate__(self):  # pickled with the run config; the lists are rebuilt after a resume
        return {"keep": self.keep, "check_every_s": self.check_every_s}

    def __setstate__(self, state):
        self.__init__(**state)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self._state_dir is None:
            storage = trial.storage
            self._state_dir = (storage.storage_filesystem, storage.experiment_fs_path)
        self._registered.setdefault(trial.trial_id, []).append(checkpoint)

    def on_step_end(self, iteration, trials, **info):
        now = time.time()
        if self._state_dir is None or now - self._last_check < self.check_every_s:
            return
        self._last_check = now
        self.collect(self.saved_state())

    def on_experiment_end(self, trials, **info):
        if self._state_dir is not None:
            self.collect(self.saved_state())

    def saved_state(self) -> dict[str, int]:
        """Trial id -> newest checkpoint index named by the newest experiment state on storage."""
        fs, path = self._state_dir
        text = read_saved_state(fs, path)
        try:
            return saved_checkpoint_indices(text) if text else {}
        except (ValueError, KeyError):  # being replaced right now: try again at the next check
            return {}

    def collect(self, saved: dict[str, int]) -> int:
        """Delete checkpoints that the saved state no longer needs; return how many were deleted."""
        deleted = 0
        for trial_id, registered in self._registered.items():
            if trial_id not in saved:
                continue
            known = [c for c in registered if checkpoint_index(c.path) <= saved[trial_id]]
            drop = known[:-self.keep] if len(known) > self.keep else []
            for checkpoint in drop:
                try:
                    checkpoint.filesystem.delete_dir(checkpoint.path)
                    deleted += 1
                except OSError:
                    pass  # already gone (deleted before a resume)
            if drop:
                gone = {id(c) for c in drop}
                self._registered[trial_id] = [c for c in registered if id(c) not in gone]
        return deleted
