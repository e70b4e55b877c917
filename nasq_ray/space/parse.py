"""Reading a space file's mapping: field checks with the field's path in every error, the keys and
defaults a space file may hold, and :class:`SpaceParser`, which turns the mapping into parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from ..errors import SearchSpaceError, did_you_mean, unknown_name
from ..quant import ALLOWED_BITS, check_bits
from ..quant.options import QUANT_OPTIONS
from .domains import Choice, Domain, Float, Int, Ordinal
import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from ..models._registry import OPS
from ..models.blocks import CONNECTIONS, MERGES, block_layer_names
from .specs import OPTIMIZERS
from .domains import Param


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    """A number that is not nan or infinite (YAML's ``.nan``, ``.inf``), nor an int too large for a float."""
    try:
        return _is_number(v) and math.isfinite(v)
    except OverflowError:
        return False


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
                self.finite(path, v)
            if all(_is_number(v) for v in raw):
                return Ordinal(tuple(sorted(set(raw))))
            if all(isinstance(v, str) for v in raw):
                return Choice(tuple(dict.fromkeys(raw)))
            if any(isinstance(v, bool) for v in raw):
                raise self.err(path, f"{raw} holds true/false, which YAML makes of unquoted yes, no, on, off, true "
                                     "and false; quote them ('yes') for names")
            raise self.err(path, f"mix of numbers and names in {raw}; use one kind")
        if isinstance(raw, dict):
            self.keys(path, raw, ("low", "high", "log"))
            if "low" not in raw or "high" not in raw:
                raise self.err(path, "a range needs both 'low' and 'high'")
            lo, hi, log = raw["low"], raw["high"], raw.get("log", False)
            if not (_is_number(lo) and _is_number(hi)):
                raise self.err(path, f"range low={lo!r} high={hi!r}: expected numbers with low <= high")
            for v in (lo, hi):
                check(path, v)
                self.finite(path, v)
            if lo > hi:
                raise self.err(path, f"range low={lo!r} high={hi!r}: expected numbers with low <= high")
            if not isinstance(log, bool):
                raise self.err(f"{path}.log", f"{log!r} is not allowed; allowed: true, false")
            if not _is_finite(hi - lo):
                raise self.err(path, f"range low={lo!r} high={hi!r} is too wide; allowed: high - low a finite number")
            if log and lo <= 0:
                raise self.err(path, f"a log range needs low > 0, got {lo}")
            if isinstance(lo, int) and isinstance(hi, int):
                return Int(lo, hi, bool(log))
            return Float(float(lo), float(hi), bool(log))
        if raw is None:
            raise self.err(path, "missing value")
        check(path, raw)
        self.finite(path, raw)
        return raw

    # value checks ------------------------------------------------------------------------
    def positive_int(self, path, v):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise self.err(path, f"{v!r} is not allowed; allowed: integers >= 1")

    def non_negative_int(self, path, v):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise self.err(path, f"{v!r} is not allowed; allowed: integers >= 0")

    def finite(self, path, v):
        """Every number of a domain (a choice, a range's end, a fixed value) is finite: nan or inf
        would reach training (a loss of nan) or sampling (an overflow)."""
        if _is_number(v) and not _is_finite(v):
            raise self.err(path, f"{v!r} is not allowed; allowed: finite numbers")

    def non_negative(self, path, v):
        if not _is_finite(v) or v < 0:
            raise self.err(path, f"{v!r} is not allowed; allowed: finite numbers >= 0")

    def positive(self, path, v):
        if not _is_finite(v) or v <= 0:
            raise self.err(path, f"{v!r} is not allowed; allowed: finite numbers > 0")

    def momentum(self, path, v):
        if not _is_finite(v) or not 0 <= v < 1:
            raise self.err(path, f"{v!r} is not allowed; allowed: numbers in [0, 1), e.g. 0.9")

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


_QUANT_KEYS = ("w_bits", "a_bits", "logit_bits", "merge_bits", "policy", "pin_first_last", "auto_sqnr_db", *QUANT_OPTIONS)


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


class SpaceParser:
    """The reading half of :class:`~nasq_ray.space.search_space.SearchSpace`: turns a space file's
    stages, head, quantization and training sections into the ordered parameter list (a mixin;
    ``SearchSpace.__init__`` drives it)."""

    def _parse_policy(self, p: _Parser, q: Mapping) -> None:
        """``quant.policy``, ``quant.pin_first_last`` and ``quant.auto_sqnr_db``: fixed values, never searched."""
        policy = q.get("policy", "layer")
        if isinstance(policy, (list, dict)):
            raise p.err("quant.policy", f"{policy!r}: give one policy name, not a choice (each policy gives the "
                                        f"space different parameters); allowed: {', '.join(QUANT_POLICIES)}")
        p.name_in(QUANT_POLICIES)("quant.policy", policy)
        self.policy = policy
        pin = q.get("pin_first_last")
        if isinstance(pin, (list, dict)):
            raise p.err("quant.pin_first_last", f"{pin!r}: give one bit-width (pinned layers are not searched), "
                                                f"or leave it out; allowed: {ALLOWED_BITS}")
        if pin is not None:
            p.bits("quant.pin_first_last", pin)
        self.pin_bits = pin
        if "auto_sqnr_db" in q:
            db = q["auto_sqnr_db"]  # used by policy auto and by the warm start (search.warm_start)
            if not _is_number(db) or not math.isfinite(db) or db <= 0:
                raise p.err("quant.auto_sqnr_db", f"{db!r} is not allowed; allowed: a number of dB > 0, e.g. 30")
            self.auto_sqnr_db = float(db)

    def _init_abstract(self, p: _Parser, raw: Mapping) -> None:
        """A space of plain named parameters (``params:``): no network to build, for tabular trials."""
        for key in ("input", "input_shape", "num_classes", "stages", "head", "quant", "train"):
            if key in raw:
                raise p.err(key, "a space with 'params' is abstract (no network); remove this key")
        params = raw["params"]
        if not isinstance(params, dict) or not params:
            raise p.err("params", "expected a mapping of parameter names to choice lists or ranges")
        self.input_kind = "none"
        self.input_shape = ()
        self.num_classes = 0
        self.n_stages = 0
        for name, value in params.items():
            self._slot(str(name), p.domain(f"params.{name}", value, lambda path, v: None), "arch")

    @staticmethod
    def _parse_table(p: _Parser, raw) -> dict | None:
        """The space's default table for tabular trials: ``{path, acc, cost}`` (path relative to the file)."""
        if raw is None:
            return None
        raw = p.keys("table", raw, ("path", "acc", "cost"))
        if "path" not in raw:
            raise p.err("table.path", "missing; give the table file")
        if not isinstance(raw["path"], str) or not raw["path"].strip():
            raise p.err("table.path", f"{raw['path']!r} is not allowed; allowed: the path of a CSV file (relative to "
                                      "the space file)")
        for key in ("acc", "cost"):
            if raw.get(key) is not None and not (isinstance(raw[key], str) and raw[key]):
                raise p.err(f"table.{key}", f"{raw[key]!r} is not allowed; allowed: a column name of the table")
        path = Path(raw["path"])
        if not path.is_absolute() and p.source not in ("<space>",):
            path = Path(p.source).resolve().parent / path
        return {"path": str(path), "acc": raw.get("acc"), "cost": raw.get("cost")}

    # construction -----------------------------------------------------------------------
    def _slot(self, name: str, value, group: str, when: tuple | None = None) -> None:
        if isinstance(value, (Choice, Ordinal, Int, Float)):
            self.params.append(Param(name, value, group, when))
            self._by_name[name] = self.params[-1]
        else:
            self.constants[name] = value

    def _add_stage(self, p: _Parser, i: int, st: Any) -> None:
        path = f"stages[{i}]"
        st = p.keys(path, st, _STAGE_KEYS)
        for req in ("channels", "ops"):
            if req not in st:
                raise p.err(f"{path}.{req}", "missing; every stage needs 'channels' and 'ops'")
        d = {
            "channels": p.domain(f"{path}.channels", st["channels"], p.positive_int),
            "stride": p.domain(f"{path}.stride", st.get("stride", 1), p.positive_int),
            "repeats": p.domain(f"{path}.repeats", st.get("repeats", 1), p.positive_int),
            "ops": p.domain(f"{path}.ops", st["ops"], p.name_in(OPS)),
            "connections": p.domain(f"{path}.connections", st.get("connections", "sequential"), p.name_in(CONNECTIONS)),
        }
        d["branch_ops"] = p.domain(f"{path}.branch_ops", st.get("branch_ops", st["ops"]), p.name_in(OPS))
        d["merge"] = p.domain(f"{path}.merge", st.get("merge", "sum"), p.name_in(MERGES))
        for key in ("ops", "connections", "branch_ops", "merge"):
            if isinstance(d[key], Ordinal):
                raise p.err(f"{path}.{key}", "expected names, got numbers")
        merges = _values(d["merge"])
        conns = _values(d["connections"])
        if "parallel" in conns and "concat" in merges and min(_values(d["channels"])) < 2:
            raise p.err(f"{path}.channels", "concat of parallel branches needs channels >= 2")
        s = f"s{i}"
        self._slot(f"{s}.channels", d["channels"], "arch")
        self._slot(f"{s}.stride", d["stride"], "arch")
        self._slot(f"{s}.repeats", d["repeats"], "arch")
        max_rep = max(_values(d["repeats"]))
        min_rep = min(_values(d["repeats"]))
        if i == 0:
            self._input_rels = self._first_layers(d)
        for j in range(max_rep):
            b = f"{s}.b{j}"
            when = None if j < min_rep else ("block", i, j)
            self._slot(f"{b}.op", d["ops"], "arch", when)
            self._slot(f"{b}.conn", d["connections"], "arch", when)
            if "parallel" in conns:
                self._slot(f"{b}.op_b", d["branch_ops"], "arch", ("parallel", i, j))
                self._slot(f"{b}.merge", d["merge"], "arch", ("parallel", i, j))
            rels = [rel for rel in self._possible_layers(d, i, j) if not self.pinned(f"{b}.{rel}")]
            if self.policy == "layer":
                for rel in rels:
                    always = j < min_rep and self._always(d, i, j, lambda names, rel=rel: rel in names)
                    self._bits_slots(f"{b}.{rel}", None if always else ("layer", i, j, rel))
            if rels:  # some choice puts a layer with searched bits into this block
                always = j < min_rep and self._always(
                    d, i, j, lambda names, b=b: any(not self.pinned(f"{b}.{n}") for n in names))
                self._unpinned_possible = True
                self._unpinned_always |= always
                if self.policy == "block":
                    self._bits_slots(b, None if always else ("bits", i, j))

    def _possible_layers(self, d: dict, i: int, j: int) -> list[str]:
        """Every layer any choice could put into block j of stage i (each is conditional)."""
        names: list[str] = []
        for op in _values(d["ops"]):
            for n in OPS[op].layer_names(1, 2, 2):  # shapes chosen so that projections appear
                names.append(f"op.{n}")
        if "parallel" in _values(d["connections"]):
            for op in _values(d["branch_ops"]):
                for n in OPS[op].layer_names(1, 2, 2):
                    names.append(f"par.{n}")
        if "residual" in _values(d["connections"]):
            names.append("skip")
        return list(dict.fromkeys(names))

    def _first_layers(self, d: dict) -> set[str]:
        """Layers of a stage-0 first block that read the network input: the first layer of each
        branch's op (``op.conv``, ``op.dw``, ``op.proj``, ``par.*`` likewise) and the shortcut ``skip``.

        Decided by name: a layer name that comes first in any of the stage's ops counts as first.
        """
        first = {f"op.{names[0]}" for op in _values(d["ops"]) if (names := OPS[op].layer_names(1, 2, 2))}
        if "parallel" in _values(d["connections"]):
            first |= {f"par.{names[0]}" for op in _values(d["branch_ops"])
                      if (names := OPS[op].layer_names(1, 2, 2))}
        return first | {"skip"}

    def _always(self, d: dict, i: int, j: int, holds) -> bool:
        """Whether every combination of choices gives block j a layer list for which ``holds(names)``
        is true (then what depends on it is unconditional)."""
        outs = _values(d["channels"])
        if j == 0:
            ins = _values(self._value_domain(f"s{i - 1}.channels")) if i > 0 else (self.input_shape[0],)
            strides = _values(d["stride"])
        else:
            ins, strides = None, (1,)
        for op, conn, op_b, merge, out_ch, stride in itertools.product(
                _values(d["ops"]), _values(d["connections"]), _values(d["branch_ops"]), _values(d["merge"]),
                outs, strides):
            for in_ch in (ins or (out_ch,)):
                if not holds(block_layer_names(op, conn, op_b, merge, in_ch, out_ch, stride)):
                    return False
        return True

    def _bits_slots(self, layer: str, when: tuple | None) -> None:
        for kind, dom in self.bits_domains.items():
            self._slot(f"{layer}.{kind}", dom, "quant", when)

    def _add_head(self, p: _Parser, head: Any) -> None:
        head = p.keys("head", head, _HEAD_KEYS)
        if self.input_kind == "image":
            pool = p.domain("head.pool", head.get("pool", "avg"), p.name_in(HEAD_POOLS))
            if isinstance(pool, Ordinal):
                raise p.err("head.pool", "expected names, got numbers")
            self._slot("head.pool", pool, "arch")
        elif "pool" in head:
            raise p.err("head.pool", "a flat space has no feature map to pool; remove it")
        layers = p.domain("head.hidden_layers", head.get("hidden_layers", 0), p.non_negative_int)
        width = p.domain("head.hidden", head.get("hidden", 64), p.positive_int)
        self._slot("head.layers", layers, "arch")
        max_layers = max(_values(layers))
        min_layers = min(_values(layers))
        for k in range(max_layers):
            when = None if k < min_layers else ("head", k)
            self._slot(f"head.fc{k}.width", width, "arch", when)
            self._head_layer(f"head.fc{k}", when)
        self._head_layer("head.out", None)

    def _head_layer(self, layer: str, when: tuple | None) -> None:
        """Bit parameters of a head layer: its own pair under policies ``layer`` and ``block``."""
        if self.pinned(layer):
            return
        self._unpinned_possible = True
        self._unpinned_always |= when is None
        if self.policy in ("layer", "block"):
            self._bits_slots(layer, when)

    def _add_train(self, p: _Parser, t: Any) -> None:
        t = p.keys("train", t, _TRAIN_KEYS)
        t = {**_TRAIN_DEFAULTS, **t}
        self._slot("train.lr", p.domain("train.lr", t["lr"], p.positive), "train")
        opt = p.domain("train.optimizer", t["optimizer"], p.name_in(OPTIMIZERS))
        self._slot("train.optimizer", opt, "train")
        self._slot("train.weight_decay", p.domain("train.weight_decay", t["weight_decay"], p.non_negative), "train")
        self._slot("train.batch_size", p.domain("train.batch_size", t["batch_size"], p.positive_int), "train")
        uses_sgd = "sgd" in _values(opt)
        mom = p.domain("train.momentum", t["momentum"], p.momentum)
        self._slot("train.momentum", mom, "train", ("sgd",) if isinstance(opt, Choice) and uses_sgd else None)

    def _check_feasible(self) -> None:
        """A space whose every configuration downsamples too far is an error, not an empty search."""
        if self.input_kind != "image":
            return
        min_strides = [min(_values(self._value_domain(f"s{i}.stride"))) for i in range(self.n_stages)]
        reason = self._spatial_violation(min_strides)
        if reason:
            raise SearchSpaceError(f"{self.source}: no valid architecture for input {self._shape_str()}: {reason}")
