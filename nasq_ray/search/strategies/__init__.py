"""Search strategies by name: built-ins plus plug-ins from the ``nasq_ray.searchers`` entry-point group.

A searcher plug-in is a factory called as ``factory(space=..., objective=..., seed=..., **kwargs)``
returning a :class:`BaseStrategy` or a raw Ray Tune ``Searcher``.
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import unknown_name
from ...plugins import call_factory, installed, load_plugin
from ._base import FINISHED, BaseStrategy
from ._dnas import DNASStrategy
from ._ehvi import EHVIStrategy
from ._evolution import EvolutionStrategy
from ._given import GivenStrategy
from ._grid import GridStrategy
from ._hawq import HawqStrategy
from ._local import AnnealStrategy, GreedyStrategy
from ._optuna import CONSTRAINT_ATTR, GPStrategy, NSGA2Strategy, TPEStrategy, define_by_run
from ._random import RandomStrategy

SEARCHERS: dict[str, Callable] = {}
ENTRY_POINT_GROUP = "nasq_ray.searchers"
MULTI_OBJECTIVE_ONLY = {"nsga2"}


def register_searcher(name: str, factory: Callable | None = None):
    """Register a searcher factory under ``name`` (usable as a decorator). Twice is an error."""

    def deco(f):
        if name in SEARCHERS:
            raise ValueError(f"searcher '{name}' is already registered")
        SEARCHERS[name] = f
        return f

    return deco(factory) if factory is not None else deco


register_searcher("random", RandomStrategy)
register_searcher("tpe", TPEStrategy)
register_searcher("nsga2", NSGA2Strategy)
register_searcher("gp", GPStrategy)
register_searcher("grid", GridStrategy)
register_searcher("evolution", EvolutionStrategy)
register_searcher("greedy", GreedyStrategy)
register_searcher("ehvi", EHVIStrategy)
register_searcher("anneal", AnnealStrategy)
register_searcher("dnas", DNASStrategy)
register_searcher("hawq", HawqStrategy)
register_searcher("given", GivenStrategy)


def plugin_searchers() -> dict[str, object]:
    """Installed plug-ins (entry points), not yet loaded."""
    return installed(ENTRY_POINT_GROUP)


def searcher_names() -> list[str]:
    return sorted(set(SEARCHERS) | set(plugin_searchers()))


def get_searcher(name: str) -> Callable:
    if name in SEARCHERS:
        return SEARCHERS[name]
    eps = plugin_searchers()
    if name in eps:
        return load_plugin(eps[name], "search.searcher")
    raise unknown_name("searcher", name, searcher_names())


def make_searcher(name: str, space, objective, seed: int = 0, budget: int | None = None, cost_model=None,
                  sensitivity=None, **kwargs):
    """Instantiate the searcher ``name``; bad keyword arguments raise a ConfigError naming them.

    ``budget`` (the number of trials), ``cost_model`` (a config's exact cost before training, from
    the trial kind) and ``sensitivity`` (per-layer sensitivities, a callable computing them: only
    a factory naming it has them computed) are passed to factories that accept them.
    """
    offered = {k: v for k, v in (("budget", budget), ("cost_model", cost_model), ("sensitivity", sensitivity))
               if v is not None}
    return call_factory(get_searcher(name), kwargs, "searcher_args", f"searcher '{name}'",
                        required=dict(space=space, objective=objective, seed=seed), offered=offered,
                        plugin=None if name in SEARCHERS else "search.searcher")


__all__ = [
    "CONSTRAINT_ATTR", "FINISHED", "BaseStrategy", "SEARCHERS", "define_by_run", "get_searcher", "make_searcher",
    "register_searcher", "searcher_names",
]
