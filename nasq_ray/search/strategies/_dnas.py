"""The ``dnas`` searcher: each trial is a gradient-based search (see :mod:`nasq_ray.dnas`).

It suggests the macro-architecture (a random config of the space: channels, depth, connections,
head, training hyperparameters; the ops and bit-widths in it are placeholders that the
super-network relaxes) together with DNAS's own hyperparameters, searched at random over their
ranges: ``dnas.cost_weight`` (log-uniform in ``cost_weight``), ``dnas.tau`` (uniform in ``tau``),
``dnas.search_epochs`` (fixed, default half of the trial's epochs) and ``dnas.arch_lr``.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError
from ...trials.base import DNAS_PREFIX
from ._base import BaseStrategy


class DNASStrategy(BaseStrategy):
    def __init__(self, space, objective, seed=0, cost_weight=(0.01, 2.0), tau=(0.5, 5.0),
                 search_epochs: int | None = None, arch_lr: float = 3e-3):
        super().__init__(space, objective, seed)
        if space.is_abstract:
            raise ConfigError(f"searcher: dnas trains a super-network; space '{space.name}' is abstract "
                              "(a table space); choose another searcher")
        for name, rng in (("cost_weight", cost_weight), ("tau", tau)):
            if len(rng) != 2 or not 0 < rng[0] <= rng[1]:
                raise ConfigError(f"searcher_args: {name}={rng!r} is not allowed; allowed: [low, high] with 0 < low <= high")
        if search_epochs is not None and search_epochs < 1:
            raise ConfigError(f"searcher_args: search_epochs={search_epochs!r} is not allowed; allowed: integers >= 1")
        self.cost_weight, self.tau = tuple(cost_weight), tuple(tau)
        self.search_epochs, self.arch_lr = search_epochs, arch_lr
        self.rng = np.random.default_rng(seed)

    def suggest(self, trial_id):
        cfg = self.space.sample(self.rng)
        lo, hi = math.log(self.cost_weight[0]), math.log(self.cost_weight[1])
        cfg[DNAS_PREFIX + "cost_weight"] = float(math.exp(self.rng.uniform(lo, hi)))
        cfg[DNAS_PREFIX + "tau"] = float(self.rng.uniform(*self.tau))
        cfg[DNAS_PREFIX + "arch_lr"] = float(self.arch_lr)
        if self.search_epochs is not None:
            cfg[DNAS_PREFIX + "search_epochs"] = int(self.search_epochs)
        return cfg

    def on_trial_complete(self, trial_id, config, result):
        pass
