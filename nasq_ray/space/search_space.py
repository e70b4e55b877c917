"""One joint search space: architecture, per-layer bit-widths and training hyperparameters.

A space file (``search_spaces/*.yaml``) describes a network as stages of blocks plus a fully
connected head. :class:`SearchSpace` turns it into an ordered list of :class:`Param` s, each with a
domain and, where it is conditional, the reason it exists (a block exists only when the stage's
``repeats`` reach it; a layer's bit-widths exist only when its block holds that layer). Every
consumer walks the same list: random sampling, the Optuna define-by-run function, validation of a
given config, mutation, and decoding into a :class:`TrialSpec` for the model builder.

Configs are flat dicts keyed by parameter name, for example::

    {"s0.channels": 16, "s0.b0.op": "conv3x3", "s0.b0.op.conv.w_bits": 4, ..., "train.lr": 0.01}

Bit-width parameters are named ``<module path>.w_bits`` / ``<module path>.a_bits``: the module path
is the layer's name in the built model. The space's ``quant.policy`` decides how many there are:
one pair per layer (``layer``, the default), per block (``block``: ``s1.b0.w_bits``), one for the
network (``uniform``: ``quant.w_bits``) or none (``auto``: chosen per layer at trial start by
:mod:`nasq_ray.quant.auto_bits`). ``quant.pin_first_last`` fixes the first and last layers' width
and removes their parameters.

"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path
from typing import Any
import numpy as np
from ..errors import ConfigError, SearchSpaceError, as_sizes, did_you_mean, is_int
from ..models.blocks import block_layer_names
from ..quant import FLOAT_BITS, LayerBits, QuantConfig
from ..quant.options import QUANT_OPTIONS
from .specs import ArchSpec, AutoBits, BlockSpec, TrainSpec, TrialSpec
from .domains import Param
from .parse import SpaceParser, DEFAULT_AUTO_SQNR_DB, _BLOCK_OF_LAYER, _Parser, _QUANT_KEYS, _TOP_KEYS, _TRAIN_KEYS, _halvings, _values
from .files import read_space_yaml, resolve_space_path


MAX_REJECTIONS = 500


def _sizes(p: _Parser, field: str, shape) -> tuple[int, ...]:
    sizes = as_sizes(shape)
    if sizes is None:
        raise p.err(field, f"{shape!r} is not allowed; allowed: a tuple of positive integers, such as (1, 8, 8) "
                           "for images (C, H, W) or (64,) for flat data")
    return sizes


def rng_of(seed, field: str = "seed") -> np.random.Generator:
    """A NumPy generator from a seed (an integer >= 0), a generator, or None; anything else is refused
    with one line, not NumPy's SeedSequence error."""
    if seed is None or isinstance(seed, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)):
        return np.random.default_rng(seed)
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"{field}: {seed!r} is not allowed; allowed: an integer >= 0, a numpy Generator, or None")
    return np.random.default_rng(seed)


class SearchSpace(SpaceParser):
    """A parsed, validated search space bound to an input shape and a number of classes.

    Build one with :meth:`from_yaml` (a shipped name such as ``"digits_small"`` or a path).
    """

    def __init__(self, raw: Mapping, input_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None, source: str = "<space>"):
        p = _Parser(source)
        self.source = source
        if any(k in raw for k in ("prune", "distill")):
            raise SearchSpaceError(f"{source}: the space describes a user's own model (prune, distill sections): "
                                   "give the model with --model MODULE:CALLABLE, or a generated space with stages")
        raw = p.keys("", raw, _TOP_KEYS)
        self.name = str(raw.get("name", Path(source).stem))
        self.description = str(raw.get("description", ""))
        self.params: list[Param] = []
        self._by_name: dict[str, Param] = {}
        self.constants: dict[str, Any] = {}
        self.policy = "layer"
        self.pin_bits: int | None = None
        self.auto_sqnr_db = DEFAULT_AUTO_SQNR_DB
        self._input_rels: set[str] = set()  # layers of block s0.b0 that read the network input
        self._unpinned_possible = False  # some configuration holds a layer with searched bits
        self._unpinned_always = False  # every configuration does
        self.table = self._parse_table(p, raw.get("table"))
        if "params" in raw:
            self._init_abstract(p, raw)
            return
        self.input_kind = raw.get("input", "image")
        if self.input_kind not in ("image", "flat"):
            raise p.err("input", f"'{self.input_kind}' is not allowed; allowed: image, flat")
        shape = input_shape if input_shape is not None else raw.get("input_shape")
        if shape is None:
            raise p.err("input_shape", "not given: the space file or the dataset must say the input shape")
        self.input_shape = _sizes(p, "input_shape", shape)
        self.num_classes = num_classes if num_classes is not None else raw.get("num_classes", 0)
        if not is_int(self.num_classes) or self.num_classes < 2:
            raise p.err("num_classes", f"{self.num_classes!r} is not allowed; allowed: integers >= 2")
        self.num_classes = int(self.num_classes)

        stages = raw.get("stages") or []
        if self.input_kind == "flat" and stages:
            raise p.err("stages", "a space with input: flat has no conv stages; use input: image")
        if self.input_kind == "image":
            if len(self.input_shape) != 3:
                raise SearchSpaceError(
                    f"{source}: space '{self.name}' needs image input (C, H, W); the data has shape "
                    f"{self.input_shape}: use a flat space such as mlp.yaml")
            if not stages:
                raise p.err("stages", "an image space needs at least one stage")
        if not isinstance(stages, list):
            raise p.err("stages", "expected a list of stages")
        self.n_stages = len(stages)
        q = p.keys("quant", raw.get("quant") or {}, _QUANT_KEYS)
        self._parse_policy(p, q)
        self.bits_domains = {
            "w_bits": p.domain("quant.w_bits", q.get("w_bits", FLOAT_BITS), p.bits),
            "a_bits": p.domain("quant.a_bits", q.get("a_bits", FLOAT_BITS), p.bits),
        }
        for i, st in enumerate(stages):
            self._add_stage(p, i, st)
        self._add_head(p, raw.get("head") or {})
        if self.policy == "uniform" and self._unpinned_possible:
            self._bits_slots("quant", None if self._unpinned_always else ("uniform",))
        self._slot("quant.logit_bits", p.domain("quant.logit_bits", q.get("logit_bits", FLOAT_BITS), p.bits), "quant")
        self._slot("quant.merge_bits", p.domain("quant.merge_bits", q.get("merge_bits", FLOAT_BITS), p.bits), "quant")
        for key, names in QUANT_OPTIONS.items():
            self._slot(f"quant.{key}", p.domain(f"quant.{key}", q.get(key, names[0]), p.name_in(names)), "quant")
        self._add_train(p, raw.get("train") or {})
        self._check_feasible()

    # lookups -------------------------------------------------------------------------------
    def param(self, name: str) -> Param | None:
        """The searched parameter called ``name`` (None for constants and unknown names)."""
        return self._by_name.get(name)

    def _value_domain(self, name: str):
        return self._by_name[name].domain if name in self._by_name else self.constants[name]

    def _shape_str(self) -> str:
        return "x".join(map(str, self.input_shape))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def is_flat(self) -> bool:
        """True when no parameter is conditional: the space is a plain product of domains."""
        return all(p.when is None for p in self.params)

    def view(self, cfg: Mapping) -> ChainMap:
        return ChainMap(dict(cfg), self.constants)

    def block_args(self, view: Mapping, i: int, j: int) -> BlockSpec:
        out_ch = view[f"s{i}.channels"]
        if j == 0:
            in_ch = view[f"s{i - 1}.channels"] if i > 0 else self.input_shape[0]
            stride = view[f"s{i}.stride"]
        else:
            in_ch, stride = out_ch, 1
        conn = view[f"s{i}.b{j}.conn"]
        par = conn == "parallel"
        return BlockSpec(
            op=view[f"s{i}.b{j}.op"], connection=conn,
            op_b=view[f"s{i}.b{j}.op_b"] if par else None,
            merge=view[f"s{i}.b{j}.merge"] if par else None,
            in_ch=in_ch, out_ch=out_ch, stride=stride,
        )

    def is_active(self, prm: Param, view: Mapping) -> bool:
        """Whether ``prm`` exists given the values decided before it."""
        w = prm.when
        if w is None:
            return True
        try:
            kind = w[0]
            if kind == "block":
                return view[f"s{w[1]}.repeats"] > w[2]
            if kind == "parallel":
                return view[f"s{w[1]}.repeats"] > w[2] and view[f"s{w[1]}.b{w[2]}.conn"] == "parallel"
            if kind == "layer":
                i, j, rel = w[1], w[2], w[3]
                if view[f"s{i}.repeats"] <= j:
                    return False
                b = self.block_args(view, i, j)
                return rel in block_layer_names(b.op, b.connection, b.op_b, b.merge, b.in_ch, b.out_ch, b.stride)
            if kind == "bits":
                i, j = w[1], w[2]
                if view[f"s{i}.repeats"] <= j:
                    return False
                b = self.block_args(view, i, j)
                names = block_layer_names(b.op, b.connection, b.op_b, b.merge, b.in_ch, b.out_ch, b.stride)
                return any(not self.pinned(f"s{i}.b{j}.{n}") for n in names)
            if kind == "uniform":
                return any(not self.pinned(L) for L in self.layers(view))
            if kind == "head":
                return view["head.layers"] > w[1]
            if kind == "sgd":
                return view["train.optimizer"] == "sgd"
        except KeyError:
            return False
        raise AssertionError(f"unknown condition {w}")

    def describe_when(self, prm: Param) -> str:
        w = prm.when
        if w is None:
            return "always"
        kind = w[0]
        if kind == "block":
            return f"s{w[1]}.repeats > {w[2]}"
        if kind == "parallel":
            return f"s{w[1]}.b{w[2]}.conn == parallel"
        if kind == "layer":
            return f"block s{w[1]}.b{w[2]} holds layer '{w[3]}'"
        if kind == "bits":
            return f"block s{w[1]}.b{w[2]} holds a layer that is not pinned"
        if kind == "uniform":
            return "the network holds a layer that is not pinned"
        if kind == "head":
            return f"head.layers > {w[1]}"
        return "train.optimizer == sgd"

    def governs(self, name: str) -> list[str]:
        """The layers a bit parameter decides for (``--show-space``): the layer it is named after, the
        layers of a block (``s1.b0.*``), or every layer not pinned; other parameters govern none."""
        key, _, last = name.rpartition(".")
        if last not in ("w_bits", "a_bits"):
            return []
        if key == "quant":
            return ["every layer not pinned"]
        return [f"{key}.*"] if _BLOCK_OF_LAYER.match(key + ".") and key.count(".") == 1 else [key]

    # walking ------------------------------------------------------------------------------------
    def walk(self, ask) -> dict:
        """Decide every active parameter in order with ``ask(param, view) -> value``; return the config."""
        cfg: dict = {}
        view = ChainMap(cfg, self.constants)
        for prm in self.params:
            if self.is_active(prm, view):
                cfg[prm.name] = ask(prm, view)
        return cfg

    def sample(self, rng: np.random.Generator | int | None = None) -> dict:
        """A random valid configuration (uniform per parameter, invalid ones rejected)."""
        rng = rng_of(rng, "rng")
        reason = ""
        for _ in range(MAX_REJECTIONS):
            cfg = self.walk(lambda prm, view: prm.domain.sample(rng))
            reason = self.violation(cfg)
            if not reason:
                return cfg
        raise SearchSpaceError(f"{self.source}: no valid configuration in {MAX_REJECTIONS} samples: {reason}")

    def complete(self, cfg: Mapping, rng: np.random.Generator | int | None = None) -> dict:
        """Keep the values of ``cfg`` that are still active, sample those that became active."""
        rng = rng_of(rng, "rng")
        return self.walk(lambda prm, view: cfg[prm.name] if prm.name in cfg and prm.domain.contains(cfg[prm.name])
                         else prm.domain.sample(rng))

    # moves (for local search, annealing and evolution) -----------------------------------------
    @staticmethod
    def param_kind(name: str) -> str:
        """What a parameter decides: ``op``, ``width``, ``depth``, ``connection``, ``bits``, ``train``,
        or ``param`` (an abstract space's plain parameter)."""
        last = name.rsplit(".", 1)[-1]
        if name.startswith(("train.", "distill.")):
            return "train"
        if last in ("w_bits", "a_bits", "logit_bits", "merge_bits"):
            return "bits"
        if last in ("op", "op_b"):
            return "op"
        if last in ("channels", "width", "keep"):  # keep: a user model's pruning ratio of a channel group
            return "width"
        if last in ("repeats", "layers"):
            return "depth"
        if last in ("conn", "merge", "pool", "stride"):
            return "connection"
        return "param"

    def move(self, cfg: Mapping, name: str, value, rng: np.random.Generator | int | None = None) -> dict | None:
        """``cfg`` with one parameter changed (newly active parameters sampled, inactive ones dropped);
        None if the result is an invalid network."""
        new = self.complete({**cfg, name: value}, rng)
        return None if self.violation(new) else new

    def neighbors(self, cfg: Mapping, rng: np.random.Generator | int | None = None) -> list[dict]:
        """Every valid config one move away: one active parameter set to one of its domain's
        neighbouring values (adjacent for ordered domains, any other value for categorical ones)."""
        rng = rng_of(rng, "rng")
        out = []
        for prm in self.params:
            if prm.name in cfg:
                for v in prm.domain.neighbors(cfg[prm.name]):
                    new = self.move(cfg, prm.name, v, rng)
                    if new is not None:
                        out.append(new)
        return out

    def mutate(self, cfg: Mapping, rng: np.random.Generator | int | None = None, tries: int = 50) -> dict:
        """A random one-move change of ``cfg``: first a kind of decision (op, width, depth,
        connection, bits, train) uniformly among those present, then one such parameter, then a
        neighbouring value. Conditional parameters follow: a new block gets sampled values."""
        rng = rng_of(rng, "rng")
        by_kind: dict[str, list[Param]] = {}
        for prm in self.params:
            if prm.name in cfg and prm.domain.neighbors(cfg[prm.name]):
                by_kind.setdefault(self.param_kind(prm.name), []).append(prm)
        if not by_kind:
            return dict(cfg)
        kinds = sorted(by_kind)
        for _ in range(tries):
            group = by_kind[kinds[int(rng.integers(len(kinds)))]]
            prm = group[int(rng.integers(len(group)))]
            options = prm.domain.neighbors(cfg[prm.name])
            new = self.move(cfg, prm.name, options[int(rng.integers(len(options)))], rng)
            if new is not None:
                return new
        return dict(cfg)

    def validate(self, cfg: Mapping) -> dict:
        """Check a user-given config: every active parameter present and allowed, nothing extra,
        and the network feasible. Returns the config with only active parameters."""
        if not isinstance(cfg, Mapping):
            raise SearchSpaceError("config: expected a mapping of parameter names to values (such as space.sample(0)), "
                                   f"got {type(cfg).__name__}")
        def ask(prm: Param, view):
            if prm.name not in cfg:
                raise SearchSpaceError(f"config: missing parameter '{prm.name}' ({prm.domain.describe()})")
            v = cfg[prm.name]
            if not prm.domain.contains(v):
                raise SearchSpaceError(f"config: parameter '{prm.name}' = {v!r} is not allowed; allowed: {prm.domain.describe()}")
            return v

        out = self.walk(ask)
        extra = [k for k in cfg if k not in out]
        if extra:
            k = extra[0]
            if k in self._by_name:
                raise SearchSpaceError(f"config: parameter '{k}' is inactive here (it exists when {self.describe_when(self._by_name[k])})")
            raise SearchSpaceError(f"config: unknown parameter '{k}'{did_you_mean(k, self._by_name)}")
        reason = self.violation(out)
        if reason:
            raise SearchSpaceError(f"config: invalid architecture: {reason}")
        return out

    # constraints ---------------------------------------------------------------------------------
    def _spatial_violation(self, strides: list[int]) -> str:
        h = min(self.input_shape[1:])
        for i, s in enumerate(strides):
            if s > 1:
                if h < s:
                    n_ok = sum(1 for _ in _halvings(min(self.input_shape[1:])))
                    return (f"stage s{i} downsamples a {h}x{h} feature map by {s}; input "
                            f"{self._shape_str()} allows at most {n_ok} stride-2 stages")
                h = -(-h // s)
        return ""

    def violation(self, cfg: Mapping) -> str:
        """Why ``cfg`` describes an impossible network, or ``""`` when it is fine."""
        if self.input_kind != "image":
            return ""
        view = self.view(cfg)
        return self._spatial_violation([view[f"s{i}.stride"] for i in range(self.n_stages)])

    # decoding -------------------------------------------------------------------------------------
    def layers(self, cfg: Mapping) -> list[str]:
        """Module paths of every quantizable layer of ``cfg``'s network, in forward order."""
        view = self.view(cfg)
        out = []
        for i in range(self.n_stages):
            for j in range(view[f"s{i}.repeats"]):
                b = self.block_args(view, i, j)
                out += [f"s{i}.b{j}.{n}" for n in
                        block_layer_names(b.op, b.connection, b.op_b, b.merge, b.in_ch, b.out_ch, b.stride)]
        out += [f"head.fc{k}" for k in range(view["head.layers"])]
        return out + ["head.out"]

    @property
    def is_abstract(self) -> bool:
        """True for a space of plain parameters (``params:``): configs index a table, not a network."""
        return self.input_kind == "none"

    def decode(self, cfg: Mapping) -> TrialSpec:
        """Turn a (validated) config into the plain-data spec of network, bit-widths and training."""
        if self.is_abstract:
            raise SearchSpaceError(f"space '{self.name}' is abstract (a 'params' space): it describes no network; "
                                   "use it with a table (--table)")
        cfg = self.validate(cfg)
        view = self.view(cfg)
        stages = tuple(
            tuple(self.block_args(view, i, j) for j in range(view[f"s{i}.repeats"]))
            for i in range(self.n_stages)
        )
        head = tuple(view[f"head.fc{k}.width"] for k in range(view["head.layers"]))
        arch = ArchSpec(self.input_shape, self.num_classes, stages, head, view.get("head.pool", "avg"))
        layers = self.layers(cfg)
        quant = QuantConfig(
            layers={L: self._layer_bits(view, L) for L in layers},
            logit_bits=view["quant.logit_bits"],
            merge_bits=view["quant.merge_bits"],
            **{key: view[f"quant.{key}"] for key in QUANT_OPTIONS},
        )
        train = TrainSpec(**{k: view[f"train.{k}"] for k in _TRAIN_KEYS})
        auto = None
        if self.policy == "auto" and any(not self.pinned(L) for L in layers):
            auto = AutoBits(self.auto_sqnr_db, self.bits_candidates("w_bits"), self.bits_candidates("a_bits"),
                            tuple(L for L in layers if not self.pinned(L)))
        return TrialSpec(arch, quant, train, auto)

    def pinned(self, layer: str) -> bool:
        """Whether ``layer`` has the fixed width ``quant.pin_first_last`` (and no bit parameters):
        the last layer ``head.out`` and the layers that read the network input (in an image space
        the first layer of each branch of block ``s0.b0`` and its shortcut ``skip``, in a flat space
        ``head.fc0``, or ``head.out`` when there is no hidden layer)."""
        if self.pin_bits is None:
            return False
        if layer == "head.out":
            return True
        if self.n_stages == 0:
            return layer == "head.fc0"
        return layer.startswith("s0.b0.") and layer[len("s0.b0."):] in self._input_rels

    def bits_candidates(self, kind: str) -> tuple[int, ...]:
        """The widths ``quant.w_bits`` / ``quant.a_bits`` (``kind``) allows, ascending."""
        return tuple(sorted(_values(self.bits_domains[kind])))

    def bits_key(self, layer: str) -> str | None:
        """Where ``layer``'s bits live under the policy: ``KEY`` of the entries ``KEY.w_bits`` /
        ``KEY.a_bits`` (the layer, its block or ``quant``); None for a pinned layer and under ``auto``."""
        if self.pinned(layer) or self.policy == "auto":
            return None
        if self.policy == "uniform":
            return "quant"
        if self.policy == "block" and (m := _BLOCK_OF_LAYER.match(layer)):
            return m[1]
        return layer

    def bit_entries(self, bits: Mapping[str, LayerBits]) -> dict:
        """Per-layer widths written as this space's bit parameters: a layer's own pair, or the widest
        of a block's layers (policy ``block``) or of the network's (``uniform``), rounded up to a width
        the parameter allows (its widest when none is as wide). Pinned layers, policy ``auto`` and
        constant widths give no entry."""
        out = {}
        for kind in ("w_bits", "a_bits"):
            need: dict[str, int] = {}
            for layer, b in bits.items():
                key = self.bits_key(layer)
                if key is not None:
                    need[key] = max(need.get(key, 0), getattr(b, kind))
            for key, width in need.items():
                prm = self.param(f"{key}.{kind}")
                if prm is None:
                    continue  # a constant width: nothing to choose
                allowed = sorted(_values(prm.domain))
                out[prm.name] = next((v for v in allowed if v >= width), allowed[-1])
        return out

    def _layer_bits(self, view: Mapping, layer: str) -> LayerBits:
        """``layer``'s bits under the policy: pinned, its own, its block's, the network's, or a
        32/32 placeholder for policy ``auto``."""
        if self.pinned(layer):
            return LayerBits(self.pin_bits, self.pin_bits)
        key = self.bits_key(layer)
        if key is None:
            return LayerBits(FLOAT_BITS, FLOAT_BITS)
        return LayerBits(view[f"{key}.w_bits"], view[f"{key}.a_bits"])

    # io ---------------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, name_or_path: str | Path, input_shape: tuple[int, ...] | None = None,
                  num_classes: int | None = None) -> SearchSpace:
        """Load a shipped space by name (``digits_small``) or a YAML file by path."""
        path = resolve_space_path(name_or_path)
        return cls(read_space_yaml(path), input_shape, num_classes, source=str(path))

    def __repr__(self) -> str:
        where = "abstract" if self.is_abstract else f"input {self._shape_str()}"
        return f"SearchSpace({self.name!r}, {len(self.params)} params, {where})"


def load_space(name_or_path: str | Path, input_shape: tuple[int, ...] | None = None,
               num_classes: int | None = None) -> SearchSpace:
    """Load a search space: a shipped name (``digits_small``, ``cifar_cnn``, ``mlp``, ...) or a path."""
    return SearchSpace.from_yaml(name_or_path, input_shape, num_classes)
