"""``ehvi``: Bayesian optimization with the cost known before training.

Accuracy is unknown until a trial trains; the cost is not: every built-in trial kind gives it before
the trial runs (``cost_model``: the untrained network measured, or a table's cost column). So only
accuracy is modelled, by a Gaussian process on the configs' one-hot encoding (kernel
``exp(-h / l)``, ``h`` the number of parameters whose values differ; ``l`` and the noise by marginal
likelihood over a small grid, refitted every ``refit_every`` suggestions), fitted on accuracies
clipped from below at their ``clip_q`` quantile (a broken config, e.g. a disconnected cell at 10%,
would otherwise set the model's scale). The next config maximizes the exact two-dimensional expected
hypervolume improvement (accuracy Gaussian, cost exact) over a pool of the unseen one-move neighbours
of every non-dominated trial plus ``n_random`` random configs; the reference point is the worst value
seen of each objective minus ``ref_margin`` x its range. The first ``n_initial`` configs are spread
evenly over the cost range of a random pool. Trials still running count as seen and join the front
at their predicted accuracy. Without a cost model the cost is predicted by ridge regression (exact for
additive costs); a single-objective run maximizes the expected improvement of the score instead.

Where the cost model is slow (a network built and measured: ~60 ms), exact costs are computed for
the ``exact_top`` candidates the predicted costs rank best, not for the whole pool. With
``objective.max_cost`` candidates known to be over it are left out of the pool.

Measured on NAS-Bench-201 (``benchmarks/strategies.py``): see BENCHMARKS.md.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.special import ndtr

from ...errors import ConfigError
from ...objective import pareto_mask, within_budget
from ._history import HistoryStrategy, config_key
from ._surrogate import Encoder, ridge_predict

FAST_COST_S = 0.002  # a cost model faster than this per config is asked for every candidate


def _integral_sf(z):
    """G with G'(z) = 1 - Phi(z) and G(+inf) = 0."""
    return z * (1.0 - ndtr(z)) - np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def ehvi_2d(front, ref, mu, sd, y2) -> np.ndarray:
    """Expected hypervolume improvement of candidates over ``front`` ((m, 2), both objectives
    maximized) up to ``ref``; candidate i has y1 ~ N(mu_i, sd_i) and a known y2_i."""
    f = np.asarray(front, float).reshape(-1, 2)
    f = f[(f[:, 0] > ref[0]) & (f[:, 1] > ref[1])]
    keep, best = [], -np.inf
    for i in np.argsort(-f[:, 0], kind="stable"):  # the non-dominated ones, by y1 descending
        if f[i, 1] > best:
            keep.append(i)
            best = f[i, 1]
    f = f[keep][::-1]  # y1 ascending, y2 descending
    lows = np.r_[ref[0], f[:, 0]]
    highs = np.r_[f[:, 0], np.inf]
    covered = np.r_[f[:, 1], ref[1]]  # for y1 in [lows_k, highs_k] the front covers y2 up to covered_k
    width = np.maximum(0.0, np.asarray(y2, float)[:, None] - covered[None, :])
    mu = np.asarray(mu, float)[:, None]
    sd = np.maximum(np.asarray(sd, float), 1e-12)[:, None]
    zb = (highs[None, :] - mu) / sd
    finite = np.isfinite(zb)
    g_hi = np.where(finite, _integral_sf(np.where(finite, zb, 0.0)), 0.0)
    mass = sd * (g_hi - _integral_sf((lows[None, :] - mu) / sd))  # integral of P(y1 > t) dt over the interval
    return (width * mass).sum(axis=1)


def expected_improvement(mu, sd, best: float) -> np.ndarray:
    sd = np.maximum(np.asarray(sd, float), 1e-12)
    z = (np.asarray(mu, float) - best) / sd
    return sd * (z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))


class HammingGP:
    """A Gaussian process over one-hot encodings with kernel ``exp(-h / l)``."""

    GRID_L = (0.5, 1.0, 2.0, 4.0, 8.0)
    GRID_NOISE = (1e-3, 1e-2, 1e-1, 0.3)

    def __init__(self):
        self.hyper: tuple[float, float] | None = None

    @staticmethod
    def _kernel(A, B, length):
        h = 0.5 * (np.sum(A * A, 1)[:, None] + np.sum(B * B, 1)[None, :] - 2 * A @ B.T)
        return np.exp(-np.maximum(h, 0.0) / length)

    def fit(self, X, y, refit: bool = True) -> HammingGP:
        self.X, self.m, self.s = X, y.mean(), y.std() + 1e-12
        z, n = (y - self.m) / self.s, len(y)
        if refit or self.hyper is None:
            best = None
            for length in self.GRID_L:
                K0 = self._kernel(X, X, length)
                for noise in self.GRID_NOISE:
                    try:
                        L = np.linalg.cholesky(K0 + noise * np.eye(n))
                    except np.linalg.LinAlgError:
                        continue
                    a = np.linalg.solve(L.T, np.linalg.solve(L, z))
                    ll = -0.5 * z @ a - np.log(np.diag(L)).sum()
                    if best is None or ll > best[0]:
                        best = (ll, length, noise)
            self.hyper = best[1:]
        length, noise = self.hyper
        self.L = np.linalg.cholesky(self._kernel(X, X, length) + noise * np.eye(n))
        self.alpha = np.linalg.solve(self.L.T, np.linalg.solve(self.L, z))
        return self

    def predict(self, F) -> tuple[np.ndarray, np.ndarray]:
        Ks = self._kernel(F, self.X, self.hyper[0])
        v = np.linalg.solve(self.L, Ks.T)
        var = np.maximum(1.0 - np.sum(v * v, 0), 1e-12)
        return self.m + self.s * (Ks @ self.alpha), self.s * np.sqrt(var)


class EHVIStrategy(HistoryStrategy):
    def __init__(self, space, objective, seed=0, budget=None, cost_model=None, n_initial: int = 10,
                 n_random: int = 500, ref_margin: float = 0.6, clip_q: float = 0.1, refit_every: int = 5,
                 exact_top: int = 16):
        super().__init__(space, objective, seed, budget)
        if n_initial < 3 or n_random < 0 or ref_margin < 0 or not 0 <= clip_q < 1 or refit_every < 1 or exact_top < 1:
            raise ConfigError(f"searcher_args: n_initial={n_initial}, n_random={n_random}, ref_margin={ref_margin}, "
                              f"clip_q={clip_q}, refit_every={refit_every}, exact_top={exact_top}: need n_initial >= 3, "
                              "n_random >= 0, ref_margin >= 0, 0 <= clip_q < 1, refit_every >= 1, exact_top >= 1")
        self.cost_model = cost_model
        self.n_initial, self.n_random, self.ref_margin = n_initial, n_random, ref_margin
        self.clip_q, self.refit_every, self.exact_top = clip_q, refit_every, exact_top
        self.multi = len(objective.metrics) == 2
        self.encode = Encoder(space)
        self.gp = HammingGP()
        self.pending: dict[tuple, dict] = {}  # suggested, not finished yet
        self.init_queue: list[dict] = []
        self.costs: dict[tuple, float | None] = {}  # exact costs asked so far
        self.cost_seconds = [0.0, 0]  # time spent in the cost model, calls
        self.n_fit = 0

    # state: the cost model is the run's (a table can be large); it is not part of the saved state
    def get_state(self) -> dict:
        return {k: v for k, v in super().get_state().items() if k != "cost_model"}

    # costs -----------------------------------------------------------------------------------------
    def _exact(self, cfg: dict) -> float | None:
        key = config_key(cfg)
        if key not in self.costs:
            t0 = time.perf_counter()
            value = self.cost_model(cfg)
            self.cost_seconds[0] += time.perf_counter() - t0
            self.cost_seconds[1] += 1
            self.costs[key] = None if value is None else float(value)
        return self.costs[key]

    def _fast_model(self) -> bool:
        return self.cost_seconds[1] == 0 or self.cost_seconds[0] / self.cost_seconds[1] < FAST_COST_S

    def _predicted(self, cfgs: list[dict]) -> np.ndarray:
        """Oriented costs predicted by ridge regression on the finished trials' costs."""
        costs = [(h[0], h[1][1]) for h in self.history]
        if not costs:
            return np.zeros(len(cfgs))
        X = self.encode.matrix([c for c, _ in costs])
        Y = np.asarray([[v] for _, v in costs], float)
        return ridge_predict(X, Y, self.encode.matrix(cfgs), lam=1e-3)[:, 0]

    def _oriented_costs(self, cfgs: list[dict], exact: bool) -> np.ndarray:
        """-cost of each config (costs are minimized; oriented values are larger-is-better): exact
        where asked for (``exact``) and known, else predicted."""
        out = self._predicted(cfgs)
        if self.cost_model is not None and exact:
            for k, c in enumerate(cfgs):
                v = self._exact(c)
                if v is not None:
                    out[k] = -v
        return out

    def _over_budget(self, cfg: dict) -> bool:
        if self.objective.max_cost is None or self.cost_model is None:
            return False
        v = self._exact(cfg)
        return v is not None and not within_budget(v, self.objective)

    # proposals -------------------------------------------------------------------------------------
    def _initial(self) -> dict:
        if not self.init_queue:
            if self.cost_model is None or not self.multi:
                self.init_queue = [self.random_config() for _ in range(self.n_initial)]
            else:  # spread evenly over the cost range of a random pool (small when the cost model is slow)
                first = self.random_config()
                self._exact(first)  # times the cost model before the pool's size is chosen
                size = 50 * self.n_initial if self._fast_model() else 3 * self.n_initial
                pool = {config_key(first): first}
                for _ in range(size - 1):
                    c = self.random_config()
                    pool.setdefault(config_key(c), c)
                pool = [c for k, c in pool.items() if k not in self.seen and not self._over_budget(c)]
                pool = [c for c in pool if self._exact(c) is not None] or [self.random_config()]
                oc = self._oriented_costs(pool, exact=True)
                used: set[int] = set()
                for t in np.linspace(oc.min(), oc.max(), min(self.n_initial, len(pool))):
                    d = np.abs(oc - t)
                    d[list(used)] = np.inf
                    j = int(self.rng.choice(np.flatnonzero(d <= d.min() + 1e-12)))
                    used.add(j)
                    self.init_queue.append(pool[j])
        return self.init_queue.pop(0)

    def propose(self):
        if self.n_suggested < self.n_initial or len(self.history) < 3:
            return self._initial()
        cfgs = [h[0] for h in self.history]
        y = np.array([h[1][0] for h in self.history], float)
        yfit = np.maximum(y, np.quantile(y, self.clip_q)) if self.clip_q else y
        self.gp.fit(self.encode.matrix(cfgs), yfit, refit=self.n_fit % self.refit_every == 0)
        self.n_fit += 1
        pend = list(self.pending.values())
        if self.multi:
            pts = np.stack([y, [h[1][1] for h in self.history]], 1)
            if pend:  # trials in flight, at their predicted accuracy and their cost
                pm, _ = self.gp.predict(self.encode.matrix(pend))
                pts = np.vstack([pts, np.stack([pm, self._oriented_costs(pend, exact=True)], 1)])
            archive = np.flatnonzero(pareto_mask(pts, ("max", "max")))
            sources = [(cfgs + pend)[i] for i in archive]
        else:
            sources = [cfgs[int(np.argmax(y))]]
        cands: dict[tuple, dict] = {}
        for src in sources:
            for n in self.space.neighbors(src, self.rng):
                cands.setdefault(config_key(n), n)
        for _ in range(self.n_random):
            c = self.random_config()
            cands.setdefault(config_key(c), c)
        pool = [c for k, c in cands.items() if k not in self.seen]
        if not pool:
            return self.random_config()
        mu, sd = self.gp.predict(self.encode.matrix(pool))
        if not self.multi:
            gain = expected_improvement(mu, sd, float(y.max()))
            return self._best(pool, gain)
        ref = pts.min(0) - self.ref_margin * np.maximum(pts.max(0) - pts.min(0), 1e-12)
        front = pts[archive]
        if self.cost_model is None:
            return self._best(pool, ehvi_2d(front, ref, mu, sd, self._oriented_costs(pool, exact=False)))
        if not self._fast_model():  # exact costs for the candidates the predicted costs rank best
            gain = ehvi_2d(front, ref, mu, sd, self._oriented_costs(pool, exact=False))
            top = np.argsort(-gain)[: self.exact_top]
            pool, mu, sd = [pool[i] for i in top], mu[top], sd[top]
        keep = [k for k, c in enumerate(pool) if not self._over_budget(c)]
        if not keep:
            return self.random_config()
        pool, mu, sd = [pool[k] for k in keep], mu[keep], sd[keep]
        return self._best(pool, ehvi_2d(front, ref, mu, sd, self._oriented_costs(pool, exact=True)))

    def _best(self, pool: list[dict], gain: np.ndarray) -> dict:
        return pool[int(self.rng.choice(np.flatnonzero(gain >= gain.max() - 1e-15)))]

    # bookkeeping of trials in flight ------------------------------------------------------------------
    def suggest(self, trial_id):
        cfg = super().suggest(trial_id)
        if isinstance(cfg, dict):
            self.pending[config_key(cfg)] = cfg
        return cfg

    def on_trial_complete(self, trial_id, config, result):
        if config:
            self.pending.pop(config_key(config), None)
        super().on_trial_complete(trial_id, config, result)
