"""Space domains as Ray Tune domains: one converter, for a flat space's ``param_space`` and for the
training hyperparameters PBT perturbs."""

from __future__ import annotations

from ray import tune

from ..errors import ConfigError
from ..space.domains import Choice, Domain, Float, Int, Ordinal
from ..space.search_space import SearchSpace

PBT_MUTABLE = ("train.lr", "train.weight_decay", "train.momentum", "train.batch_size")


def tune_domain(d: Domain):
    """The Ray Tune domain of a space domain (Choice and Ordinal as categorical choices)."""
    if isinstance(d, (Choice, Ordinal)):
        return tune.choice(list(d.values))
    if isinstance(d, Int):
        return tune.lograndint(d.low, d.high + 1) if d.log else tune.randint(d.low, d.high + 1)
    if isinstance(d, Float):
        return tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)
    raise TypeError(f"unknown domain {d!r}")


def to_param_space(space: SearchSpace) -> dict:
    """A plain Ray Tune ``param_space`` for a flat space (no conditional parameters)."""
    from ..space import SearchSpace

    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space: expected a SearchSpace (nasq_ray.load_space(...)), got {type(space).__name__}")
    if not space.is_flat:
        cond = next(p for p in space.params if p.when is not None)
        raise ConfigError(f"space '{space.name}' is conditional ('{cond.name}' exists only when "
                          f"{space.describe_when(cond)}): use its Optuna define-by-run function instead")
    return {p.name: tune_domain(p.domain) for p in space.params}


def pbt_mutations(space: SearchSpace | None) -> dict:
    """Tune domains of the training hyperparameters PBT may perturb while a model trains
    (categorical ones as lists: PBT then moves to a neighbouring value, in the space's order)."""
    params = {p.name: p for p in (space.params if space is not None else [])}
    out = {}
    for name in PBT_MUTABLE:
        p = params.get(name)
        if p is None or p.when is not None:
            continue
        out[name] = list(p.domain.values) if isinstance(p.domain, (Choice, Ordinal)) else tune_domain(p.domain)
    if not out:
        raise ConfigError(f"scheduler: pbt perturbs training hyperparameters, and space '{getattr(space, 'name', '?')}' "
                          f"searches none of {', '.join(PBT_MUTABLE)}; use another scheduler")
    return out
