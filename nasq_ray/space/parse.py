"""Reading a space file's mapping: field checks with the field's path in every error, and the keys
and defaults a space file may hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from ..errors import SearchSpaceError, did_you_mean, unknown_name
from ..quant import ALLOWED_BITS, check_bits
from ..quant.options import QUANT_OPTIONS
from .domains import Choice, Domain, Float, Int, Ordinal


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def err(self, path: str, msg: str) -> SearchSpaceError:
        return SearchSpaceError(f"{self.source}: {path}: {msg}")

    def keys(self, path: str, raw: Any, allowed: tuple[str, ...]) -> dict:
        if not isinstance(raw, dict):
            raise self.err(path, f"expected a mapping with keys {', '.join(allowed)}, got {type(raw).__name__}")
        for k in raw:
            if k not in allowed:
                raise self.err(f"{path}.{k}" if path else k,
                               f"unknown key{did_you_mean(str(k), allowed)}; allowed: {', '.join(allowed)}")
        return raw

    def domain(self, path: str, raw: Any, check) -> Domain | Any:
        """A YAML value as a domain: list -> Choice/Ordinal, {low, high, log} -> Int/Float, scalar -> fixed."""
        if isinstance(raw, list):
            if not raw:
                raise self.err(path, "empty choice list; give at least one value")
            for v in raw:
                check(path, v)
            if all(_is_number(v) for v in raw):
                return Ordinal(tuple(sorted(set(raw))))
            if all(isinstance(v, str) for v in raw):
                return Choice(tuple(dict.fromkeys(raw)))
            raise self.err(path, f"mix of numbers and names in {raw}; use one kind")
        if isinstance(raw, dict):
            self.keys(path, raw, ("low", "high", "log"))
            if "low" not in raw or "high" not in raw:
                raise self.err(path, "a range needs both 'low' and 'high'")
            lo, hi, log = raw["low"], raw["high"], raw.get("log", False)
            if not (_is_number(lo) and _is_number(hi)) or lo > hi:
                raise self.err(path, f"range low={lo!r} high={hi!r}: expected numbers with low <= high")
            check(path, lo)
            check(path, hi)
            if log and lo <= 0:
                raise self.err(path, f"a log range needs low > 0, got {lo}")
            if isinstance(lo, int) and isinstance(hi, int):
                return Int(lo, hi, bool(log))
            return Float(float(lo), float(hi), bool(log))
        if raw is None:
            raise self.err(path, "missing value")
        check(path, raw)
        return raw

    # value checks ------------------------------------------------------------------------
    def positive_int(self, path, v):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise self.err(path, f"{v!r} is not allowed; allowed: integers >= 1")

    def non_negative_int(self, path, v):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise self.err(path, f"{v!r} is not allowed; allowed: integers >= 0")

    def non_negative(self, path, v):
        if not _is_number(v) or v < 0:
            raise self.err(path, f"{v!r} is not allowed; allowed: numbers >= 0")

    def positive(self, path, v):
        if not _is_number(v) or v <= 0:
            raise self.err(path, f"{v!r} is not allowed; allowed: numbers > 0")

    def bits(self, path, v):
        try:
            check_bits(path, v)
        except SearchSpaceError:
            raise self.err(path, f"bit-width {v!r} is not allowed; allowed: {ALLOWED_BITS}") from None

    def name_in(self, allowed):
        def check(path, v):
            if v not in allowed:
                raise self.err(path, str(unknown_name("", v, allowed)).split(": ", 1)[1])
        return check


_STAGE_KEYS = ("channels", "repeats", "stride", "ops", "connections", "branch_ops", "merge")


_HEAD_KEYS = ("pool", "hidden_layers", "hidden")


HEAD_POOLS = ("avg", "flatten")


# How bit-widths are searched: a pair of parameters per layer, per block, for the whole network, or
# none (chosen per layer from calibration data at trial start).
QUANT_POLICIES = ("layer", "block", "uniform", "auto")


DEFAULT_AUTO_SQNR_DB = 30.0


_QUANT_KEYS = ("w_bits", "a_bits", "logit_bits", "policy", "pin_first_last", "auto_sqnr_db", *QUANT_OPTIONS)


_TRAIN_KEYS = ("lr", "optimizer", "weight_decay", "batch_size", "momentum")


_TOP_KEYS = ("name", "description", "input", "input_shape", "num_classes", "stages", "head", "quant", "train",
             "params", "table")


_TRAIN_DEFAULTS = {"lr": 0.01, "optimizer": "adam", "weight_decay": 0.0, "batch_size": 64, "momentum": 0.9}


_BLOCK_OF_LAYER = re.compile(r"^(s\d+\.b\d+)\.")


def _values(d) -> tuple:
    if isinstance(d, (Choice, Ordinal)):
        return d.values
    if isinstance(d, Int):
        return tuple(range(d.low, d.high + 1))
    if isinstance(d, Float):
        return (d.low, d.high)
    return (d,)


def _halvings(h: int) -> Iterator[int]:
    while h >= 2:
        h = -(-h // 2)
        yield h
