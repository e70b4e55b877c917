"""``BaseStrategy``: the small interface of a search strategy (Optuna ``BaseSampler``'s shape).

A strategy suggests configs and learns from finished trials. It need not import Ray: ``nasq_ray.search.searchers``
adapts it to Ray Tune's ``Searcher``. Two methods are required; the rest are optional hooks.

Each finished trial arrives as a plain dict: the trial's last metrics plus ``status``, one of

* ``"complete"``  trained for the full budget;
* ``"pruned"``    stopped early by a scheduler: its metrics are low-fidelity, not final values;
* ``"failed"``    diverged or raised; its metrics (if any) are not to be trusted.
"""

from __future__ import annotations

import abc
import copy

from ...objective import ObjectiveConfig
from ...space.search_space import SearchSpace

FINISHED = "FINISHED"
"""Returned by :meth:`BaseStrategy.suggest` when the strategy has nothing more to try."""


class BaseStrategy(abc.ABC):
    """Base class of nasq-ray search strategies.

    Constructed as ``Strategy(space, objective, seed=..., **kwargs)``; unknown keyword arguments
    are an error (they come from ``--searcher-arg``).
    """

    def __init__(self, space: SearchSpace, objective: ObjectiveConfig, seed: int = 0):
        self.space = space
        self.objective = objective
        self.seed = seed

    @abc.abstractmethod
    def suggest(self, trial_id: str) -> dict | str | None:
        """A config to try next; ``None`` if nothing can be suggested right now (for example while
        waiting for results); :data:`FINISHED` when the strategy is done."""

    @abc.abstractmethod
    def on_trial_complete(self, trial_id: str, config: dict, result: dict) -> None:
        """Learn from a finished trial; ``result["status"]`` says how it finished."""

    # optional hooks ---------------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """An intermediate (per-epoch) result of a running trial."""

    def get_state(self) -> dict:
        """Everything needed to resume; by default a copy of the instance's attributes."""
        return copy.copy(self.__dict__)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    # helpers for subclasses -------------------------------------------------------------------
    def values(self, result: dict) -> tuple[float, ...]:
        """The objective values of a result, in ``self.objective.metrics`` order."""
        return tuple(float(result[m]) for m in self.objective.metrics)

    def better(self, a: float, b: float) -> bool:
        """Whether scalar ``a`` beats ``b`` for a single-objective run."""
        return a > b if self.objective.modes[0] == "max" else a < b
