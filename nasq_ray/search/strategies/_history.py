"""Shared machinery of nasq-ray's own strategies: the record of finished trials, no config
suggested twice, and comparisons that work for one objective (``score``) or several (Pareto)."""

from __future__ import annotations

import math

import numpy as np

from ...objective import nondominated_ranks, pareto_order, within_budget
from ._base import FINISHED, BaseStrategy

MAX_DUPLICATE_TRIES = 200


def config_key(cfg: dict) -> tuple:
    return tuple(sorted(cfg.items()))


class HistoryStrategy(BaseStrategy):
    """A strategy that keeps every finished trial and never suggests the same config twice.

    Subclasses implement :meth:`propose` (the next config, possibly one already seen: it is then
    proposed again, up to a limit, before a random unseen config is used) and may override
    :meth:`learn` (called with each usable finished trial). ``budget`` is the number of trials the
    run will have, when known (annealing schedules use it).
    """

    def __init__(self, space, objective, seed=0, budget: int | None = None):
        super().__init__(space, objective, seed)
        self.rng = np.random.default_rng(seed)
        self.budget = budget
        self.history: list[tuple[dict, tuple]] = []  # usable finished trials, oriented values
        self.seen: set[tuple] = set()
        self.n_suggested = 0

    # to implement ------------------------------------------------------------------------------
    def propose(self) -> dict | None:
        raise NotImplementedError

    def learn(self, config: dict, values: tuple, result: dict) -> None:
        """A finished, usable trial (complete or pruned); ``values`` are oriented (larger is better)."""

    # the strategy interface ---------------------------------------------------------------------
    def suggest(self, trial_id):
        for _ in range(MAX_DUPLICATE_TRIES):
            cfg = self.propose()
            if cfg is None or cfg == FINISHED:
                return cfg
            if config_key(cfg) not in self.seen:
                break
        else:
            cfg = self._random_unseen()
            if cfg is None:
                return FINISHED
        self.seen.add(config_key(cfg))
        self.n_suggested += 1
        return cfg

    def on_trial_complete(self, trial_id, config, result):
        if result.get("status") not in ("complete", "pruned") or not config:
            return
        if not within_budget(result.get(self.objective.cost, 0.0), self.objective):
            return  # over the cost budget: not a point to build on
        try:
            values = self.oriented(self.values(result))
        except (KeyError, TypeError, ValueError):
            return
        if not all(math.isfinite(v) for v in values):
            return
        self.history.append((dict(config), values))
        self.learn(dict(config), values, result)

    # helpers ----------------------------------------------------------------------------------
    def oriented(self, values: tuple) -> tuple:
        """Objective values turned so that larger is better for every one."""
        return tuple(v if m == "max" else -v for v, m in zip(values, self.objective.modes))

    def _random_unseen(self) -> dict | None:
        for _ in range(MAX_DUPLICATE_TRIES):
            cfg = self.space.sample(self.rng)
            if config_key(cfg) not in self.seen:
                return cfg
        return None

    def random_config(self) -> dict:
        return self.space.sample(self.rng)

    @staticmethod
    def dominates(a: tuple, b: tuple) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    def improves(self, new: tuple, old: tuple) -> bool:
        """Single objective: a higher value; several: Pareto dominance."""
        return new[0] > old[0] if len(new) == 1 else self.dominates(new, old)

    def rank_order(self, values: list[tuple]) -> np.ndarray:
        """Indices of ``values`` from best to worst: by value for one objective; by non-dominated
        rank, then crowding distance (larger first) for several."""
        if not values:
            return np.zeros(0, dtype=int)
        v = np.asarray(values, dtype=float)
        if v.shape[1] == 1:
            return np.argsort(-v[:, 0], kind="stable")
        return pareto_order(v, ["max"] * v.shape[1])

    def archive(self) -> list[int]:
        """Indices into ``history`` of the non-dominated trials (the best one for one objective)."""
        if not self.history:
            return []
        v = np.asarray([h[1] for h in self.history], dtype=float)
        if v.shape[1] == 1:
            return [int(np.argmax(v[:, 0]))]
        return list(np.flatnonzero(nondominated_ranks(v, ["max"] * v.shape[1]) == 0))
