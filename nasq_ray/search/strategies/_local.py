"""Local search strategies over one-move neighbourhoods: ``greedy`` and ``anneal``.

``greedy`` is local search (coordinate moves): from the incumbent it tries untried neighbours (one
parameter changed), most promising first by a linear model of the finished trials, and moves as
soon as one is better; when every neighbour has been tried it restarts from a random config. With
several objectives it is Pareto local search: it explores the neighbourhoods of the current
non-dominated set, taking the move with the largest predicted hypervolume improvement.

``anneal`` is simulated annealing over the same moves: a random neighbour of the current config
is accepted if better, else with probability ``exp(delta / T)``; T falls geometrically from
``t_start`` to ``t_end`` over the budget. ``delta`` is the relative score change for one objective;
with several it is minus the normalized distance by which the candidate falls behind the
non-dominated set (0 when it joins it).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError
from ...objective import hypervolume
from ._history import HistoryStrategy, config_key
from ._surrogate import Encoder, ridge_predict


class GreedyStrategy(HistoryStrategy):
    """Greedy local search over one-move neighbourhoods.

    ``model="linear"`` (default) ranks the untried moves by a ridge-regression model of the
    finished trials and takes the most promising one (for several objectives: the largest predicted
    hypervolume improvement of the non-dominated set), with probability ``epsilon`` a random one;
    ``model="none"`` tries them in random order. ``reference`` fixes the hypervolume reference point
    (objective values, e.g. ``[0.9, 5.0]`` for (accuracy, size_kb)); by default it is the current
    non-dominated set's nadir plus 10% of its range.
    """

    def __init__(self, space, objective, seed=0, budget=None, n_initial: int | None = None, model: str = "linear",
                 epsilon: float = 0.1, reference: list | None = None):
        super().__init__(space, objective, seed, budget)
        if model not in ("linear", "none"):
            raise ConfigError(f"searcher_args: model={model!r} is not allowed; allowed: linear, none")
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"searcher_args: epsilon={epsilon!r} is not allowed; allowed: numbers in [0, 1]")
        if reference is not None and len(reference) != len(objective.metrics):
            raise ConfigError(f"searcher_args: reference needs {len(objective.metrics)} values "
                              f"({', '.join(objective.metrics)}), got {reference!r}")
        self.n_initial = n_initial if n_initial is not None else min(20, max(5, (budget or 100) // 5))
        self.model, self.epsilon = model, epsilon
        self.reference = None if reference is None else self.oriented(tuple(float(v) for v in reference))
        self.encode = Encoder(space) if model == "linear" else None
        self.incumbent: tuple[dict, tuple] | None = None  # one objective: the current descent's point
        self.restart_key: tuple | None = None  # the random config a stuck descent restarts from

    def propose(self):
        if self.n_suggested < self.n_initial or not self.history:
            return self.random_config()
        if len(self.objective.metrics) == 1:
            sources = [self.incumbent[0]] if self.incumbent else []
        else:
            sources = [self.history[i][0] for i in self.archive()]
        cands: dict[tuple, dict] = {}
        for cfg in sources:
            for n in self.space.neighbors(cfg, self.rng):
                if config_key(n) not in self.seen:
                    cands.setdefault(config_key(n), n)
        if not cands:  # stuck: every move tried without improvement -> restart from a random config
            cfg = self.random_config()
            self.restart_key = config_key(cfg)
            return cfg
        pool = list(cands.values())
        if self.encode is None or self.rng.random() < self.epsilon:
            return pool[int(self.rng.integers(len(pool)))]
        gain = self._predicted_gain(pool)
        if gain.max() <= 0 and len(self.objective.metrics) > 1:
            return pool[int(self.rng.integers(len(pool)))]
        best = np.flatnonzero(gain >= gain.max() - 1e-12)
        return pool[int(self.rng.choice(best))]

    def _predicted_gain(self, pool: list[dict]) -> np.ndarray:
        X = self.encode.matrix([h[0] for h in self.history])
        Y = np.asarray([h[1] for h in self.history], dtype=float)
        P = ridge_predict(X, Y, self.encode.matrix(pool))
        if Y.shape[1] == 1:
            return P[:, 0]
        front = Y[self.archive()]
        if self.reference is not None:
            ref = np.asarray(self.reference)
        else:
            span = np.maximum(front.max(axis=0) - front.min(axis=0), 1e-12)
            ref = front.min(axis=0) - 0.1 * span
        modes = ["max"] * Y.shape[1]
        base = hypervolume(front, ref, modes)
        return np.array([hypervolume(np.vstack([front, p]), ref, modes) - base for p in P])

    def learn(self, config, values, result):
        if len(values) > 1:
            return
        restart = config_key(config) == self.restart_key
        if self.incumbent is None or restart or self.improves(values, self.incumbent[1]):
            self.incumbent = (config, values)
            if restart:
                self.restart_key = None


class AnnealStrategy(HistoryStrategy):
    def __init__(self, space, objective, seed=0, budget=None, t_start: float = 0.05, t_end: float = 0.001):
        super().__init__(space, objective, seed, budget)
        if not t_start > 0 or not t_end > 0:
            raise ConfigError(f"searcher_args: t_start={t_start}, t_end={t_end}: temperatures must be > 0")
        self.t_start, self.t_end = t_start, t_end
        self.current: tuple[dict, tuple] | None = None

    def temperature(self) -> float:
        horizon = max(2, self.budget or 100)
        frac = min(1.0, len(self.history) / (horizon - 1))
        return self.t_start * (self.t_end / self.t_start) ** frac

    def propose(self):
        if self.current is None:
            return self.random_config()
        return self.space.mutate(self.current[0], self.rng)

    def _delta(self, new: tuple, cur: tuple) -> float:
        if len(new) == 1:
            return (new[0] - cur[0]) / max(abs(cur[0]), 1e-12)
        v = np.asarray([h[1] for h in self.history], dtype=float)
        span = np.maximum(v.max(axis=0) - v.min(axis=0), 1e-12)
        front = v[self.archive()]
        # how far behind the front: for each front point the largest normalized shortfall; the least of those
        shortfall = np.min(np.max((front - np.asarray(new)) / span, axis=1))
        return -max(0.0, float(shortfall))

    def learn(self, config, values, result):
        if self.current is None:
            self.current = (config, values)
            return
        delta = self._delta(values, self.current[1])
        if delta >= 0 or self.rng.random() < math.exp(delta / self.temperature()):
            self.current = (config, values)
