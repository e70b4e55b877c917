"""Plug-ins: entry points by group, and calling a plug-in's factory with the keywords it takes.

Three groups: ``nasq_ray.searchers``, ``nasq_ray.schedulers`` and ``nasq_ray.trials``; each
registry lists its built-ins beside the installed entry points of its group.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from .errors import ConfigError, NasqError, one_line


def installed(group: str) -> dict[str, EntryPoint]:
    """The installed plug-ins of ``group`` by name (not yet loaded)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load_plugin(ep: EntryPoint, field: str):
    """The object a plug-in's entry point names; one that cannot be imported raises a ``ConfigError``
    naming ``field``, the plug-in and its entry point (the import's traceback: ``--verbose``)."""
    try:
        return ep.load()
    except Exception as e:  # noqa: BLE001 - whatever the plug-in's import raises is the plug-in's fault
        raise ConfigError(f"{field}: the plug-in '{ep.name}' (entry point {ep.value} of {ep.group}, from "
                          f"{ep.dist.name if ep.dist else 'an unknown package'}) cannot be loaded: {one_line(e)}") from e


def call_plugin(factory: Callable, field: str, label: str, *args, **kwargs):
    """``factory(*args, **kwargs)`` for a plug-in (``label``, e.g. ``searcher 'mine'``): what it raises
    (but a nasq-ray error, which already names its field) becomes a ``ConfigError`` naming ``field``."""
    try:
        return factory(*args, **kwargs)
    except NasqError:
        raise
    except Exception as e:  # noqa: BLE001 - a plug-in that cannot start: its error, in one line
        raise ConfigError(f"{field}: the plug-in {label} failed: {one_line(e)}") from e


class Lazy:
    """An offered keyword computed only for a factory that names it (an expensive one)."""

    def __init__(self, make: Callable):
        self.make = make

    def __call__(self):
        return self.make()


def _value_kind(value) -> str | None:
    """What a keyword's default says its values are: a boolean, a number, or (None) anything."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return None


def check_args(factory: Callable, user_args: dict, field: str, label: str, skip: tuple[str, ...] = ()) -> None:
    """User keywords that ``factory`` does not name (unless it takes ``**kwargs``), and values whose
    kind differs from the keyword's default (a number, a boolean), raise a ``ConfigError`` naming
    ``field``, the keyword and what is allowed: the factory would otherwise fail later, inside Ray or
    Optuna, with a traceback. ``skip``: keywords the caller fills in itself."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    named = {k: p for k, p in params.items() if k not in skip and k != "self"
             and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    unknown = sorted(set(user_args) - set(named))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"{field}: {label} does not accept {unknown}; allowed: {', '.join(named) or 'none'}")
    for k, v in user_args.items():
        expected = _value_kind(named[k].default) if k in named else None
        if expected and _value_kind(v) != expected:
            raise ConfigError(f"{field}: {k}={v!r} is not allowed; allowed: {expected} ({label})")


def call_factory(factory: Callable, user_args: dict, field: str, label: str, required: dict | None = None,
                 offered: dict | None = None, plugin: str | None = None):
    """``factory(**required, **<those of offered it names>, **user_args)``: an offered keyword goes
    only to a factory that names it (a ``**kwargs`` of the factory's is for the user's arguments).
    Arguments the factory does not take raise a ``ConfigError`` naming ``field`` and ``label``
    (e.g. ``searcher 'tpe'``). ``plugin``: the field naming a plug-in's factory, whose errors are
    then one line (see :func:`call_plugin`)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = dict(required or {})
    kwargs.update({k: v() if isinstance(v, Lazy) else v for k, v in (offered or {}).items()
                   if k in params and k not in user_args})
    check_args(factory, user_args, field, label, skip=tuple(kwargs))
    try:
        inspect.signature(factory).bind(**kwargs, **user_args)
    except TypeError as e:
        raise ConfigError(f"{field}: {label} does not accept {sorted(user_args)}: {e}") from None
    except ValueError:
        pass  # no signature to check against: the call itself will tell
    if plugin:
        return call_plugin(factory, plugin, label, **kwargs, **user_args)
    return factory(**kwargs, **user_args)
