"""Ray Tune callbacks: the live progress line and the Optuna study of every trial."""

from __future__ import annotations

import sys
import time

import optuna
from ray import tune

from ..objective import ObjectiveConfig, within_budget
from ..results.console import json_line, progress_line
from ..results.optuna_store import frozen_trial, log, open_study
from ..results.records import BITS_METRIC, pareto_front
from ..space.search_space import SearchSpace
from ..trials.base import trial_status


class ProgressCallback(tune.Callback):
    """The live view of a search: trials done / running / pruned / failed, best score, front size,
    elapsed and estimated remaining time (counted from Ray's own trial list, so a resumed run goes on).

    ``text`` on a terminal: one status line rewritten in place. ``text`` into a pipe or file: the same
    line at most every ``every_s`` seconds, and for the last trial. ``json``: one object per ended
    trial, for machines.
    """

    def __init__(self, num_samples: int, objective: ObjectiveConfig, max_epochs: int, log_format: str = "text",
                 every_s: float = 10.0):
        self.n = num_samples
        self.objective = objective
        self.max_epochs = max_epochs
        self.log_format = log_format
        self.every_s = every_s
        self.t0 = time.time()
        self._last_print = 0.0
        self._points: dict[str, tuple[float, float]] = {}  # complete trials' (acc, cost)
        self._best: float | None = None
        self._ended: dict[str, str] = {}  # trial id -> complete | pruned | failed
        self._restored: set[str] = set()  # ended before this session (a resumed run)

    def setup(self, **info):
        self.t0 = time.time()  # also when a resumed experiment starts again

    def state(self, trials, starting: str | None = None) -> dict:
        for t in trials:  # trials that had ended before a resume: in the counts, the best score and the front
            if t.status in ("TERMINATED", "ERROR") and t.trial_id not in self._ended:
                self._record(t, error=t.status == "ERROR")
                self._restored.add(t.trial_id)
        done = len(self._ended) - len(self._restored)  # ended in this session: the pace of the estimate
        elapsed = time.time() - self.t0
        ended_now = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
        done_total = max(len(self._ended), ended_now)
        eta = elapsed / done * max(self.n - done_total, 0) if done else None
        return {"done": done_total, "requested": self.n,
                "running": sum((t.status == "RUNNING" or t.trial_id == starting) and t.trial_id not in self._ended
                               for t in trials),
                "pruned": sum(v == "pruned" for v in self._ended.values()),
                "failed": sum(v == "failed" for v in self._ended.values()),
                "best_score": self._best, "front_size": len(pareto_front(list(self._points.values()))),
                "elapsed_s": round(elapsed, 1), "eta_s": None if eta is None else round(eta, 1)}

    def _record(self, trial, error: bool) -> tuple[dict, str]:
        m = trial.last_result or {}
        status = trial_status(m, error, self.max_epochs)
        self._ended[trial.trial_id] = status
        acc, cost = m.get(self.objective.acc), m.get(self.objective.cost)
        if status == "complete" and isinstance(acc, (int, float)) and isinstance(cost, (int, float)):
            if within_budget(cost, self.objective):  # the front the results will show: none over --max-cost
                self._points[trial.trial_id] = (float(acc), float(cost))
            score = m.get("score")
            if isinstance(score, (int, float)) and (self._best is None or score > self._best):
                self._best = float(score)
        return m, status

    def _ended_trial(self, trials, trial, error: bool) -> None:
        self._restored.discard(trial.trial_id)  # a restored errored trial that ran again
        m, status = self._record(trial, error)
        st = self.state(trials)
        if self.log_format == "json":
            event = {"event": "trial_end", "trial_id": trial.trial_id, "status": status,
                     "epoch": int(m.get("epoch", 0))}
            for k in (self.objective.acc, self.objective.cost, "score", BITS_METRIC, "fail_reason"):
                if k in m and m[k] not in ("", None):
                    event["bits" if k == BITS_METRIC else k] = m[k]
            print(json_line({**event, **st}), flush=True)
            return
        self._print_line(st, last=st["done"] >= self.n)

    def _print_line(self, st: dict, last: bool = False) -> None:
        line = progress_line(st)
        if sys.stdout.isatty():
            print("\r" + line, end="", flush=True)
        elif last or time.time() - self._last_print >= self.every_s:
            print(line, flush=True)
            self._last_print = time.time()

    def on_trial_start(self, iteration, trials, trial, **info):
        # the line also moves while trials run: counted at trial ends only, the trial that takes over a
        # freed actor has not started yet, and two trials training at once read as "1 running"
        if self.log_format == "text":  # Ray marks it RUNNING after this call
            self._print_line(self.state(trials, starting=trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.log_format == "text":
            self._print_line(self.state(trials))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended_trial(trials, trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended_trial(trials, trial, error=True)

    def on_experiment_end(self, trials, **info):
        if self.log_format == "text" and sys.stdout.isatty():
            print(flush=True)  # end the in-place line


class OptunaStoreCallback(tune.Callback):
    """Writes each trial to the study as it ends (and remembers what it wrote, for a resume)."""

    def __init__(self, url: str, study_name: str, space: SearchSpace, objective: ObjectiveConfig,
                 trial_fields):
        self.url, self.study_name = url, study_name
        self.space, self.objective = space, objective
        self.trial_fields = trial_fields  # (trial config, metrics, error) -> (config, extra, status)
        self._study = None
        self._written: set[str] = set()
        self._intermediate: dict[str, dict[int, float]] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_study"] = None
        return state

    def _open(self) -> optuna.Study:
        if self._study is None:
            self._study = open_study(self.url, self.study_name, self.objective)
            self._written |= {t.user_attrs.get("trial_id") for t in self._study.get_trials(deepcopy=False)}
        return self._study

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result and isinstance(result.get("score"), (int, float)):
            self._intermediate.setdefault(trial.trial_id, {})[int(result["epoch"])] = float(result["score"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, error=True)

    def _write(self, trial, error: bool) -> None:
        study = self._open()
        if trial.trial_id in self._written:
            return
        metrics = dict(trial.last_result or {})
        config, _, status = self.trial_fields(dict(trial.config or {}), metrics, error)
        try:
            study.add_trial(frozen_trial(trial.trial_id, status, config, metrics,
                                         self._intermediate.pop(trial.trial_id, {}), self.space, self.objective))
        except (ValueError, TypeError) as e:  # the study is a view of the run: never let it stop the search
            log.warning("optuna storage: trial %s not written (%s)", trial.trial_id, e)
        self._written.add(trial.trial_id)
