"""Random search: every config drawn independently and uniformly per parameter."""

from __future__ import annotations

import numpy as np

from ._base import BaseStrategy


class RandomStrategy(BaseStrategy):
    def __init__(self, space, objective, seed=0):
        super().__init__(space, objective, seed)
        self.rng = np.random.default_rng(seed)

    def suggest(self, trial_id):
        return self.space.sample(self.rng)

    def on_trial_complete(self, trial_id, config, result):
        pass
