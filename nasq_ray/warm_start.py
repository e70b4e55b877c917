"""Warm start from the value range: configs whose bit-widths policy ``auto`` would choose, proposed
to the searcher before its own suggestions (``search.warm_start: N`` / ``--warm-start N``).

For each of ``N`` architectures sampled with the run's seed, the float network runs on a few
training batches (as under policy ``auto``, :func:`nasq_ray.trial.calibrate`) and every layer gets
the smallest width whose SQNR reaches ``quant.auto_sqnr_db``. Those widths are written into the
config's own bit entries: per layer, or the widest layer of a block (policy ``block``) or of the
network (``uniform``), rounded up to a width the space allows. Searchers then start from networks
whose bits already fit their value ranges, and model-based ones learn from them like any trial.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .errors import ConfigError
from .space import AutoBits, SearchSpace
from .trial import calibrate


def auto_bits_config(space: SearchSpace, cfg: dict, x: np.ndarray | torch.Tensor, seed: int = 0) -> dict:
    """``cfg`` with its bit entries set to what calibration on ``x`` chooses (see the module doc)."""
    x = torch.as_tensor(x)
    spec = space.decode(cfg)
    layers = tuple(L for L in spec.quant.layers if space.bits_key(L) is not None)
    auto = AutoBits(space.auto_sqnr_db, space.bits_candidates("w_bits"), space.bits_candidates("a_bits"), layers)
    chosen = calibrate(replace(spec, auto_bits=auto), x, seed).quant.layers
    out = {**cfg, **space.bit_entries({L: chosen[L] for L in layers})}
    return space.validate(out)


def warm_start_configs(space: SearchSpace, n: int, x: np.ndarray | torch.Tensor, seed: int = 0) -> list[dict]:
    """``n`` sampled architectures with auto-chosen bits (``x``: training inputs), distinct configs,
    deterministic given ``seed``."""
    if n <= 0:
        return []
    if space.is_abstract:
        raise ConfigError("search.warm_start: a tabular space trains no network to calibrate; use 0")
    if space.policy == "auto":
        raise ConfigError("search.warm_start: space policy 'auto' already chooses every trial's bits; use 0")
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for _ in range(20 * n):
        cfg = auto_bits_config(space, space.sample(rng), x, seed)
        if cfg not in out:
            out.append(cfg)
        if len(out) == n:
            break
    return out
