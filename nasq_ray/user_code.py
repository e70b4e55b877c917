"""A user's own code named on the command line: ``MODULE:CALLABLE`` resolved to a callable, and a
picklable reference to it that Ray's workers resolve again in their own processes.

The current directory is importable (as for ``python -m``): ``--model mynet:ResNet8`` finds
``./mynet.py``. A reference remembers the directory it was resolved from, so a worker whose working
directory differs still imports the same module.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

REF_FORMAT = "MODULE:CALLABLE (e.g. mynet:ResNet8, with mynet.py in the current directory or installed)"


def is_ref(value: object) -> bool:
    """Whether ``value`` names user code (``MODULE:CALLABLE``) rather than a built-in name."""
    return isinstance(value, str) and ":" in value and "://" not in value


def _importable_dirs(extra: tuple[str, ...] = ()) -> None:
    for d in (*extra, os.getcwd()):
        if d and os.path.isdir(d) and d not in sys.path:
            sys.path.insert(0, d)


def resolve(ref: str | Callable, field_name: str, search_path: tuple[str, ...] = ()) -> Callable:
    """The callable ``ref`` names (``MODULE:CALLABLE``, dotted attributes allowed after the colon),
    or ``ref`` itself when it is already callable. Errors name ``field_name``."""
    if callable(ref):
        return ref
    if not is_ref(ref):
        raise ConfigError(f"{field_name}: {ref!r} is not allowed; expected {REF_FORMAT}")
    module_name, _, attr = str(ref).partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{field_name}: {ref!r} is not allowed; expected {REF_FORMAT}")
    _importable_dirs(search_path)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - ImportError, or the module's own code failing at import
        raise ConfigError(f"{field_name}: cannot import module '{module_name}' ({type(e).__name__}: {e}); "
                          f"expected {REF_FORMAT}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None)))
            raise ConfigError(f"{field_name}: module '{module_name}' has no attribute '{attr}'; its callables: "
                              f"{', '.join(names[:12]) or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{field_name}: '{ref}' is a {type(obj).__name__}, not a callable")
    return obj


def ref_of(obj: object) -> str | None:
    """``MODULE:QUALNAME`` of a callable that can be imported back by that name, else None."""
    if isinstance(obj, str):
        return obj
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is obj else None


@dataclass(frozen=True)
class UserCallable:
    """A user's callable with its keyword arguments, as plain picklable data: a ``MODULE:CALLABLE``
    reference (resolved again in each process) or, for a Python object that has no importable name,
    the object itself (pickled by value)."""

    target: str | Callable
    kwargs: dict = field(default_factory=dict)
    field_name: str = "factory"
    search_path: tuple[str, ...] = ()

    @classmethod
    def of(cls, target: str | Callable, kwargs: dict | None, field_name: str) -> UserCallable:
        ref = ref_of(target) if callable(target) else target
        resolve(ref if ref is not None else target, field_name)  # check it now, in the driver
        return cls(ref if ref is not None else target, dict(kwargs or {}), field_name, (os.getcwd(),))

    @property
    def label(self) -> str:
        name = self.target if isinstance(self.target, str) else getattr(self.target, "__qualname__", repr(self.target))
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{name}({args})"

    def resolve(self) -> Callable:
        return resolve(self.target, self.field_name, self.search_path)

    def __call__(self, **extra):
        fn = self.resolve()
        try:
            return fn(**self.kwargs, **extra)
        except Exception as e:  # noqa: BLE001 - the user's code failing is bad input, reported in one line
            raise ConfigError(f"{self.field_name}: {self.label} failed ({type(e).__name__}: {e})") from None
