"""Space domains as Ray Tune domains: one converter for ``param_space`` and for PBT's mutations.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..space.domains import Choice, Float, Int, Ordinal
from ..space.search_space import SearchSpace
from ray import tune  # noqa: E402


def to_param_space(space: SearchSpace) -> dict:
    """A plain Ray Tune ``param_space`` for a flat space (no conditional parameters)."""
    if not space.is_flat:
        cond = next(p for p in space.params if p.when is not None)
        raise ConfigError(f"space '{space.name}' is conditional ('{cond.name}' exists only when "
                          f"{space.describe_when(cond)}): use its Optuna define-by-run function instead")
    out = {}
    for p in space.params:
        d = p.domain
        if isinstance(d, (Choice, Ordinal)):
            out[p.name] = tune.choice(list(d.values))
        elif isinstance(d, Int):
            out[p.name] = tune.lograndint(d.low, d.high + 1) if d.log else tune.randint(d.low, d.high + 1)
        elif isinstance(d, Float):
            out[p.name] = tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)
    return out
