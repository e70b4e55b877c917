"""Grid search: every combination of the parameters' values, each once.

Ranges are discretized (``points`` values; log-spaced for log ranges). By default
(``order="maximin"``) the grid is visited in a space-filling order: each next point is, of
``candidates`` unvisited points drawn at random, the one farthest (most parameters different) from
all points visited so far, so that a budget smaller than the grid still spreads over it.
``order="random"`` visits it in a seeded random order, ``"lexicographic"`` in the natural order. Grids that may hold more
than ``max_enumerate`` points (counting conditional parameters as always present) are not listed
up front: their points are drawn at random, never twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ...space.domains import Choice, Float, Int, Ordinal
from ._base import FINISHED, BaseStrategy
from ._history import config_key


def grid_values(domain, points: int) -> tuple:
    if isinstance(domain, (Choice, Ordinal)):
        return domain.values
    if isinstance(domain, Int):
        if domain.high - domain.low + 1 <= points:
            return tuple(range(domain.low, domain.high + 1))
        grid = np.geomspace(domain.low, domain.high, points) if domain.log else np.linspace(domain.low, domain.high, points)
        return tuple(dict.fromkeys(int(round(v)) for v in grid))
    if isinstance(domain, Float):
        grid = np.geomspace(domain.low, domain.high, points) if domain.log else np.linspace(domain.low, domain.high, points)
        return tuple(float(v) for v in grid)
    raise TypeError(f"unknown domain {domain!r}")


class GridStrategy(BaseStrategy):
    def __init__(self, space, objective, seed=0, order: str = "maximin", points: int = 5,
                 max_enumerate: int = 200_000, candidates: int = 64):
        super().__init__(space, objective, seed)
        if order not in ("maximin", "random", "lexicographic"):
            from ...errors import ConfigError

            raise ConfigError(f"searcher_args: order={order!r} is not allowed; allowed: maximin, random, lexicographic")
        self.rng = np.random.default_rng(seed)
        self.order_kind = order
        self.candidates = candidates
        self.points = points
        self.values = {p.name: grid_values(p.domain, points) for p in space.params}
        # an upper bound (conditional parameters counted as if always active) decides whether to list
        self.size = math.prod(len(v) for v in self.values.values())
        self.order: list[dict] | None = None
        self.next = 0
        self.seen: set[tuple] = set()
        self.chosen: list[dict] = []
        if self.size <= max_enumerate:
            self.order = [c for c in self._enumerate() if not space.violation(c)]
            if order != "lexicographic":
                self.order = [self.order[i] for i in self.rng.permutation(len(self.order))]

    def _enumerate(self, i: int = 0, cfg: dict | None = None) -> Iterator[dict]:
        cfg = {} if cfg is None else cfg
        params = self.space.params
        view = self.space.view(cfg)
        while i < len(params) and not self.space.is_active(params[i], view):
            i += 1
        if i == len(params):
            yield dict(cfg)
            return
        for v in self.values[params[i].name]:
            cfg[params[i].name] = v
            yield from self._enumerate(i + 1, cfg)
            del cfg[params[i].name]

    def _random_point(self) -> dict | None:
        """An unvisited grid point: the next of the shuffled list, or a random one of a large grid."""
        if self.order is not None:
            while self.next < len(self.order):
                self.next += 1
                cfg = self.order[self.next - 1]
                if config_key(cfg) not in self.seen:
                    return cfg
            return None
        for _ in range(1000):
            cfg = self.space.walk(lambda prm, view: self.values[prm.name][int(self.rng.integers(len(self.values[prm.name])))])
            if config_key(cfg) not in self.seen and not self.space.violation(cfg):
                return cfg
        return None

    @staticmethod
    def _distance(a: dict, b: dict) -> int:
        """Hamming distance: how many parameters differ (present in one only counts as differing)."""
        return sum(a.get(k) != b.get(k) for k in set(a) | set(b))

    def suggest(self, trial_id):
        if self.order_kind != "maximin" or not self.chosen:
            cfg = self._random_point()
        else:  # space-filling: of some unvisited points, the one farthest from all visited ones
            cands = [c for c in (self._random_point_peek() for _ in range(self.candidates)) if c is not None]
            if not cands:
                return FINISHED
            far = [min(self._distance(c, v) for v in self.chosen) for c in cands]
            cfg = cands[int(np.argmax(far))]
        if cfg is None:
            return FINISHED
        self.seen.add(config_key(cfg))
        self.chosen.append(cfg)
        return cfg

    def _random_point_peek(self) -> dict | None:
        """A random unvisited grid point, without consuming the shuffled list."""
        if self.order is None:
            return self._random_point()
        remaining = len(self.order) - len(self.seen)
        if remaining <= 0:
            return None
        for _ in range(100):
            cfg = self.order[int(self.rng.integers(len(self.order)))]
            if config_key(cfg) not in self.seen:
                return cfg
        return self._random_point()

    def on_trial_complete(self, trial_id, config, result):
        pass
