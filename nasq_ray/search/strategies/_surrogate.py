"""A small surrogate model for strategies: configs encoded as feature vectors, ridge regression.

Encoding: a categorical or ordered choice becomes a one-hot block over its values (all zero when
the parameter is inactive); a numeric range becomes its position in [0, 1] (log-scaled for log
ranges) and an "active" flag. Cost metrics (MACs, BitOPs, size) are close to additive in these
features, and accuracy reasonably so, which is all a move-ranking model needs.
"""

from __future__ import annotations

import math

import numpy as np

from ...space.domains import Choice, Ordinal
from ...space.search_space import SearchSpace


class Encoder:
    def __init__(self, space: SearchSpace):
        self.space = space
        self.blocks = []
        for p in space.params:
            d = p.domain
            if isinstance(d, (Choice, Ordinal)):
                self.blocks.append((p.name, "onehot", {v: k for k, v in enumerate(d.values)}))
            else:
                self.blocks.append((p.name, "numeric", d))
        self.width = sum(len(b[2]) if b[1] == "onehot" else 2 for b in self.blocks)

    def __call__(self, cfg: dict) -> np.ndarray:
        out = np.zeros(self.width)
        k = 0
        for name, kind, info in self.blocks:
            if kind == "onehot":
                if name in cfg and cfg[name] in info:
                    out[k + info[cfg[name]]] = 1.0
                k += len(info)
            else:
                if name in cfg:
                    d = info
                    lo, hi, v = (math.log(d.low), math.log(d.high), math.log(cfg[name])) if d.log else (d.low, d.high, cfg[name])
                    out[k] = (v - lo) / (hi - lo) if hi > lo else 0.0
                    out[k + 1] = 1.0
                k += 2
        return out

    def matrix(self, cfgs: list[dict]) -> np.ndarray:
        return np.stack([self(c) for c in cfgs]) if cfgs else np.zeros((0, self.width))


def ridge_predict(X: np.ndarray, Y: np.ndarray, F: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """Fit ridge regression of each column of ``Y`` on ``X`` (centred), predict rows of ``F``."""
    mu = Y.mean(axis=0)
    A = X.T @ X + lam * np.eye(X.shape[1])
    W = np.linalg.solve(A, X.T @ (Y - mu))
    return F @ W + mu
