"""Regularized (aging) evolution (Real et al., 2019) over the joint space.

A population of the most recent ``population_size`` finished trials; each child is a one-move
mutation (an op, a width, a depth, a connection, one layer's bits, or a training hyperparameter,
respecting conditional parameters) of the best of ``sample_size`` members drawn at random; the
oldest member leaves. With several objectives the tournament picks by non-dominated rank, then
crowding distance, as NSGA-II does.
"""

from __future__ import annotations

from collections import deque

from ._history import HistoryStrategy


class EvolutionStrategy(HistoryStrategy):
    def __init__(self, space, objective, seed=0, budget=None, population_size: int = 20, sample_size: int = 5):
        super().__init__(space, objective, seed, budget)
        if population_size < 2 or not 1 <= sample_size <= population_size:
            from ...errors import ConfigError

            raise ConfigError(f"searcher_args: population_size={population_size}, sample_size={sample_size}: "
                              "need population_size >= 2 and 1 <= sample_size <= population_size")
        self.population_size = population_size
        self.sample_size = sample_size
        self.population: deque[tuple[dict, tuple]] = deque(maxlen=population_size)

    def propose(self):
        if len(self.population) < self.population_size:
            return self.random_config()
        members = list(self.population)
        pick = self.rng.choice(len(members), self.sample_size, replace=False)
        values = [members[i][1] for i in pick]
        parent = members[int(pick[self.rank_order(values)[0]])][0]
        return self.space.mutate(parent, self.rng)

    def learn(self, config, values, result):
        self.population.append((config, values))
