"""Conformance checks for plug-in authors (like ``optuna.testing``): search strategies and trial kinds.

Every built-in strategy runs through :func:`check_strategy`, and every built-in trial kind through
:func:`check_trial_kind`, in the test suite; a plug-in author can run them on theirs::

    from nasq_ray.testing import check_strategy, check_trial_kind
    check_strategy(MyStrategy)
    check_trial_kind(MyKind(), prepared, config, failing_config)
"""

from __future__ import annotations

import hashlib
import pickle

from .objective import ObjectiveConfig, score
from .space.search_space import SearchSpace
from .space.search_space import load_space
from .search.strategies import FINISHED
from .trials.base import DNAS_PREFIX

TRIAL_OPTION_PREFIXES = (DNAS_PREFIX,)


def synthetic_result(cfg: dict, objective: ObjectiveConfig, status: str = "complete", epoch: int = 5) -> dict:
    """A deterministic fake trial result for ``cfg`` (no training): accuracy and cost from a hash."""
    digest = hashlib.sha256(repr(sorted(cfg.items())).encode()).digest()
    acc = 0.5 + 0.5 * digest[0] / 255.0
    size_kb = 1.0 + 10.0 * digest[1] / 255.0
    metrics = {"val_acc": acc, "val_f1": acc, "size_kb": size_kb, "size_bits": size_kb * 8000,
               "bitops": size_kb * 1e6, "macs": size_kb * 1e4, "epoch": epoch, "status": status}
    metrics["score"] = score(acc, metrics[objective.cost], objective)
    return metrics


def run_in_process(strategy, evaluate, budget: int, in_flight: int = 1) -> list[tuple[dict, dict]]:
    """Drive a strategy without Ray: ``evaluate(config) -> result`` (a dict of metrics with
    ``status``). ``in_flight`` trials are outstanding at once, as on a cluster (the oldest ends
    first; a strategy that answers None waits for it). Returns the (config, result) pairs in the
    order they ended. This is how strategies are compared in seconds on a table
    (``benchmarks/strategies.py``)."""
    done, pending, asked, exhausted = [], [], 0, False
    while len(done) < budget:
        while not exhausted and len(pending) < in_flight and asked < budget:
            cfg = strategy.suggest(str(asked))
            if cfg is None or cfg == FINISHED:
                exhausted = cfg is not None or not pending  # None with nothing running: nothing will change
                break
            pending.append((str(asked), cfg))
            asked += 1
        if not pending:
            break
        tid, cfg = pending.pop(0)
        result = evaluate(cfg)
        strategy.on_trial_result(tid, result)
        strategy.on_trial_complete(tid, cfg, result)
        done.append((cfg, result))
    return done


def _suggestions(strategy, n: int, prefix: str) -> list[dict]:
    out = []
    for k in range(n):
        cfg = strategy.suggest(f"{prefix}{k}")
        if cfg is None or cfg == FINISHED:
            break
        out.append(cfg)
    return out


def check_strategy(factory, space: SearchSpace | None = None, objective: ObjectiveConfig | None = None,
                   n_trials: int = 12, **kwargs) -> None:
    """Assert the strategy contract; raises AssertionError naming the broken rule.

    1. Suggestions are valid configs of the space (``space.validate`` accepts them; keys starting
       with a trial-option prefix such as ``dnas.`` are options of the trial, not of the space).
    2. Several suggestions may be outstanding at once (parallel trials).
    3. It accepts complete, pruned and failed results, and intermediate results.
    4. The same seed gives the same suggestions.
    5. ``get_state`` survives pickling, and a restored copy suggests what the original would.
    """
    space = space or load_space("digits_small")
    objective = objective or ObjectiveConfig()
    make = lambda: factory(space=space, objective=objective, seed=3, **kwargs)  # noqa: E731
    a, b = make(), make()
    statuses = ("complete", "pruned", "failed")
    for rnd in range(max(1, n_trials // 3)):
        batch_a = _suggestions(a, 3, f"r{rnd}-")
        batch_b = _suggestions(b, 3, f"r{rnd}-")
        assert batch_a == batch_b, "rule 4: the same seed must give the same suggestions"
        for cfg in batch_a:
            plain = {k: v for k, v in cfg.items() if not k.startswith(TRIAL_OPTION_PREFIXES)}
            assert space.validate(plain) == plain, "rule 1: suggestions must be valid configs of the space"
        for k, cfg in enumerate(batch_a):
            tid = f"r{rnd}-{k}"
            status = statuses[(rnd + k) % 3]
            for s in (a, b):
                s.on_trial_result(tid, synthetic_result(cfg, objective, "running", epoch=1))
                s.on_trial_complete(tid, cfg, synthetic_result(cfg, objective, status))
        if not batch_a:
            break
    restored = make()
    restored.set_state(pickle.loads(pickle.dumps(a.get_state())))
    assert _suggestions(restored, 2, "z") == _suggestions(a, 2, "z"), \
        "rule 5: a restored strategy must suggest what the original would"


class _Stop(Exception):
    """Raised by the conformance check's ``report`` to stop a trial after its first saved state."""


def _collect(kind, config: dict, context, state: dict | None = None, stop_at_payload: bool = False):
    reports: list[tuple[dict, dict | None]] = []

    def report(metrics: dict, payload: dict | None) -> None:
        assert isinstance(metrics, dict), f"report: metrics must be a dict, got {type(metrics).__name__}"
        reports.append((dict(metrics), payload))
        if stop_at_payload and payload is not None:
            raise _Stop

    try:
        kind.run(dict(config), context, report, state)
    except _Stop:
        pass
    return reports


def _comparable(metrics: dict) -> dict:
    """Metrics that must not change when a trial resumes: all but timings (``*_s``)."""
    return {k: v for k, v in metrics.items() if not k.endswith("_s")}


def check_trial_kind(kind, prepared, config: dict, failing_config: dict) -> None:
    """The conformance check every trial kind passes (like :func:`check_strategy` for strategies).

    ``prepared`` is the kind's own ``prepare`` result; ``config`` a config it runs to completion;
    ``failing_config`` one it cannot run (a diverging learning rate, a config missing from a table).

    * its context is picklable (it travels to Ray's workers);
    * every report holds what the objective and the scheduler need (``epoch``, ``score``, the
      objective's accuracy and cost metrics, ``status``), epochs increase, and the last report is
      ``complete``; ``run`` returns the last report's metrics;
    * it resumes from its own state: stopped after its first report with a saved state and run
      again from that state, it continues with the next epoch and ends with the same metrics
      (timings aside) as a run that was never stopped;
    * a trial that cannot run reports ``status = "failed"`` with a ``fail_reason``; it does not raise;
    * the hooks answer: ``record`` gives a config and extra columns; a ``cost_model``, where the
      kind has one, is picklable and gives the cost the trial then reports (it is exact).
    """
    import math

    from .trials.base import BaseTrialKind

    assert isinstance(kind, BaseTrialKind), f"{type(kind).__name__} is not a BaseTrialKind"
    assert kind.name, "a trial kind needs a name"
    pickle.loads(pickle.dumps(prepared.context))
    pickle.loads(pickle.dumps(kind))
    objective = prepared.objective
    straight = _collect(kind, config, prepared.context)
    assert straight, f"{kind.name}: run() reported nothing"
    epochs = [m.get("epoch") for m, _ in straight]
    assert all(isinstance(e, int) for e in epochs) and epochs == sorted(set(epochs)), f"epochs {epochs}"
    for metrics, _ in straight:
        missing = {"epoch", "score", "status", objective.acc, objective.cost} - set(metrics)
        assert not missing, f"{kind.name}: a report lacks {sorted(missing)}"
    last = straight[-1][0]
    assert last["status"] == "complete", f"{kind.name}: the last report says {last['status']!r}, not 'complete'"
    assert math.isfinite(float(last["score"])), f"{kind.name}: a complete trial's score is {last['score']}"
    shown, extra = kind.record(dict(config), last)
    assert isinstance(shown, dict) and isinstance(extra, dict), f"{kind.name}: record() must give two dicts"
    cost_model = kind.cost_model(prepared)
    if cost_model is not None:
        predicted = pickle.loads(pickle.dumps(cost_model))(dict(config))
        assert predicted is None or _same(float(predicted), float(last[objective.cost])), (
            f"{kind.name}: cost_model says {objective.cost} = {predicted}, the trial reported {last[objective.cost]}")

    first = _collect(kind, config, prepared.context, stop_at_payload=True)
    if first and first[-1][1] is not None and first[-1][0]["epoch"] < last["epoch"]:  # saved state: continue from it
        resumed = _collect(kind, config, prepared.context, state=first[-1][1])
        assert resumed, f"{kind.name}: a resumed run reported nothing"
        assert resumed[0][0]["epoch"] == first[-1][0]["epoch"] + 1, (
            f"{kind.name}: resumed after epoch {first[-1][0]['epoch']}, went on with epoch {resumed[0][0]['epoch']}")
        a, b = _comparable(resumed[-1][0]), _comparable(last)
        differ = sorted(k for k in set(a) | set(b) if not _same(a.get(k), b.get(k)))
        assert not differ, f"{kind.name}: resumed and uninterrupted runs end differently in {differ}"

    failed = _collect(kind, failing_config, prepared.context)
    assert failed, f"{kind.name}: a failing trial reported nothing"
    end = failed[-1][0]
    assert end.get("status") == "failed" and end.get("fail_reason"), (
        f"{kind.name}: a trial that cannot run must end with status 'failed' and a fail_reason; got {end.get('status')!r}")


def _same(a, b) -> bool:
    import math

    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (Linux): a driver started with ``start_new_session``,
    the Ray it started and that Ray's workers, which run in process groups of their own. What a
    fault-tolerance test or benchmark uses to kill a driver the hard way."""
    import os
    import signal
    from pathlib import Path

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass
