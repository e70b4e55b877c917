"""Parameter domains of a search space: Choice, Ordinal (bit-widths, channel counts), Int, Float, and
:class:`Param` (a named domain, with the condition under which it exists).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np


def _member(v, values: tuple) -> bool:
    """``v in values`` without Python's ``24.0 == 24`` and ``True == 1``: an integer choice takes an
    integer (a float would reach torch as a channel count), a bool only a bool."""
    for x in values:
        if x == v and isinstance(v, bool) == isinstance(x, bool):
            if isinstance(x, (int, np.integer)) and not isinstance(x, bool) and not isinstance(v, (int, np.integer)):
                continue
            return True
    return False


@dataclass(frozen=True)
class Choice:
    """Unordered categorical choice (op names, connections, optimizers)."""

    values: tuple

    def sample(self, rng: np.random.Generator):
        return self.values[int(rng.integers(len(self.values)))]

    def contains(self, v) -> bool:
        return _member(v, self.values)

    def neighbors(self, v) -> list:
        return [x for x in self.values if x != v]

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))


@dataclass(frozen=True)
class Ordinal:
    """Ordered choice (bit-widths, channel counts): neighbouring values are neighbours to a searcher."""

    values: tuple

    def sample(self, rng: np.random.Generator):
        return self.values[int(rng.integers(len(self.values)))]

    def contains(self, v) -> bool:
        return _member(v, self.values)

    def index(self, v) -> int:
        return self.values.index(v)

    def neighbors(self, v) -> list:
        i = self.values.index(v)
        return [self.values[k] for k in (i - 1, i + 1) if 0 <= k < len(self.values)]

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False

    def sample(self, rng: np.random.Generator):
        if self.log:
            return int(min(self.high, max(self.low, round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))))
        return int(rng.integers(self.low, self.high + 1))

    def contains(self, v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and self.low <= v <= self.high

    def neighbors(self, v) -> list:
        step = max(1, round(v * 0.25)) if self.log else 1
        return [x for x in (v - step, v + step) if self.low <= x <= self.high]

    def describe(self) -> str:
        return f"an integer in [{self.low}, {self.high}]" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False

    def sample(self, rng: np.random.Generator):
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def contains(self, v) -> bool:
        return isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and self.low <= v <= self.high

    def neighbors(self, v) -> list:
        if self.log:
            cand = (v / 2.0, v * 2.0)
        else:
            span = (self.high - self.low) / 10.0
            cand = (v - span, v + span)
        return [min(self.high, max(self.low, float(x))) for x in cand if x != v]

    def describe(self) -> str:
        return f"a number in [{self.low}, {self.high}]" + (" (log)" if self.log else "")


Domain = Choice | Ordinal | Int | Float


@dataclass(frozen=True)
class Param:
    """One searchable parameter. ``when`` is None (always active) or a condition tuple:
    ``("block", i, j)``, ``("parallel", i, j)``, ``("layer", i, j, rel_path)``, ``("bits", i, j)``
    (the block holds a layer that is not pinned), ``("uniform",)`` (the network does), ``("head", k)``,
    ``("sgd",)``."""

    name: str
    domain: Domain
    group: str  # "arch", "quant" or "train"
    when: tuple | None = None


def optuna_distribution(domain: Domain, ordinal_as_index: bool = False):
    """The Optuna distribution of a domain. Ordinal values are stored as themselves, or as their
    index (``ordinal_as_index``: the form the Optuna strategies ask for, so that neighbouring widths
    are neighbours to TPE)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(domain, Ordinal) and ordinal_as_index:
        return IntDistribution(0, len(domain.values) - 1)
    if isinstance(domain, (Choice, Ordinal)):
        return CategoricalDistribution(list(domain.values))
    if isinstance(domain, Int):
        return IntDistribution(domain.low, domain.high, log=domain.log)
    if isinstance(domain, Float):
        return FloatDistribution(domain.low, domain.high, log=domain.log)
    raise TypeError(f"unknown domain {domain!r}")
