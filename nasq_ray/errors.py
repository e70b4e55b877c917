"""Errors raised for bad user input.

Every error that a user can cause by what they type (a config key, a search space, a data path, a
CLI flag) is a :class:`NasqError`. The CLI prints its message as one line and exits with code 2; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import numbers
from collections.abc import Iterable


class NasqError(Exception):
    """Bad user input. The message names the field, the value received and what is allowed."""


class ConfigError(NasqError):
    """An experiment config value or CLI flag is invalid."""


class OneLineParser(argparse.ArgumentParser):
    """The commands' argument parser: a bad flag is one line and exit code 2 (argparse's own code),
    not argparse's usage block above it. Flags are taken whole, never by a prefix (``--num-samp``):
    an abbreviation that works today would change meaning when a flag sharing its prefix is added."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class SearchSpaceError(NasqError):
    """A search-space file or a config sampled from it is invalid."""


class UnknownNameError(NasqError):
    """A name (op, searcher, scheduler, dataset, ...) is not registered."""


class DataError(NasqError):
    """A dataset is missing or not in the expected format."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` when ``name`` is close to one of ``valid``, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(field: str, name: object, valid: Iterable[str]) -> UnknownNameError:
    """Build the standard error for an unknown name, listing the valid ones."""
    valid = sorted(str(v) for v in valid)
    return UnknownNameError(
        f"{field}: unknown name '{name}'{did_you_mean(str(name), valid)}; allowed: {', '.join(valid)}"
    )


def is_int(x) -> bool:
    """An integer (NumPy's too), not a bool: what a count, a seed or a size must be."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x) -> bool:
    """A real number (NumPy's too), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def as_sizes(shape) -> tuple[int, ...] | None:
    """``shape`` as a non-empty tuple of positive ints, or None where it is not one: ``(1, 8.7, 8)``,
    ``"188"`` and ``(0, 8, 8)`` are not, rather than rounded or read digit by digit."""
    if isinstance(shape, (str, bytes, dict)):
        return None
    try:
        items = list(shape)
    except TypeError:
        return None
    ok = items and all(is_int(s) and s >= 1 for s in items)
    return tuple(int(s) for s in items) if ok else None


def one_line(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an error raised by code not nasq-ray's (a plug-in, a user's Dataset), on one
    line and cut to ``limit`` characters (the type alone for an empty message)."""
    text = " ".join(str(e).split())[:limit]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def unwritable(e: OSError) -> str:
    """One line for a folder or file a command cannot write (read-only, missing, full)."""
    where = e.filename or "its output"
    return f"cannot write '{where}' ({e.strerror or type(e).__name__}); allowed: a folder this user can write"
