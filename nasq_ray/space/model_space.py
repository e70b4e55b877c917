"""The search space of a user's own model: derived from the model, shaped by a space file.

The model gives the layers (every Conv2d / Linear it runs, grouped or depthwise too) and the
groups of coupled channels (torch-pruning's dependency graph); the space file
(``search_spaces/own_model.yaml`` by default) says what may be chosen for them:

* ``quant`` - ``w_bits`` / ``a_bits`` under a policy (``layer``: a pair per layer, named after the
  layer, ``conv1.w_bits``; ``block``: one per top-level child module, ``layer1.w_bits``;
  ``uniform``: ``quant.w_bits``; ``auto``: chosen per trial from the value range),
  ``pin_first_last``, ``include`` / ``exclude`` globs over layer names (excluded layers stay float),
  ``logit_bits`` and the quantizer options, as in generated spaces (``merge_bits`` is not available:
  a user model's merges are its own code).
* ``prune`` - ``keep``: the keep ratios of every group (``<first layer>.keep``; 1.0 alone: no
  pruning), ``importance`` (``l2`` or ``taylor``), ``exclude`` globs (a group holding an excluded
  layer's output channels is not pruned; the layers giving the network's output never are).
* ``distill`` - ``alpha`` and ``temperature`` of the distillation loss from the float model,
  ``(1 - alpha) CE + alpha T^2 KL(teacher_T || student_T)``; alpha 0 trains without a teacher.
* ``train`` - learning rate, optimizer, weight decay, batch size, momentum, as in generated spaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..quant import FLOAT_BITS, LayerBits, QuantConfig
from ..quant.options import QUANT_OPTIONS
from .parse import DEFAULT_AUTO_SQNR_DB, _Parser, _TRAIN_KEYS, _is_number, _values
from .search_space import SearchSpace
from .specs import AutoBits, DistillSpec, ModelTrialSpec, TrainSpec

if TYPE_CHECKING:
    from ..models.pruning import PruneGroup
    from ..models.user import LayerInfo

MODEL_TOP_KEYS = ("name", "description", "quant", "prune", "distill", "train")
MODEL_QUANT_KEYS = ("w_bits", "a_bits", "logit_bits", "policy", "pin_first_last", "auto_sqnr_db", "include",
                    "exclude", *QUANT_OPTIONS)
PRUNE_KEYS = ("keep", "importance", "exclude")
DISTILL_KEYS = ("alpha", "temperature")
DEFAULT_SPACE = "own_model"


def model_space_keys(raw: Mapping, source: str) -> None:
    """Refuse a space file written for generated networks (stages, head, input) with a user model."""
    for key in raw:
        if key not in MODEL_TOP_KEYS:
            raise ConfigError(f"space: {source}: '{key}' describes a generated network; with --model the network is "
                              f"yours and a space file may hold only {', '.join(MODEL_TOP_KEYS)} "
                              f"(e.g. search_spaces/{DEFAULT_SPACE}.yaml)")


def _globs(p: _Parser, path: str, raw) -> list[str]:
    if raw is None:
        return []
    raw = [raw] if isinstance(raw, str) else raw
    if not isinstance(raw, list) or not all(isinstance(g, str) and g for g in raw):
        raise p.err(path, f"{raw!r} is not allowed; allowed: a list of glob patterns over layer names, e.g. ['layer1.*']")
    return raw


class ModelSpace(SearchSpace):
    """A :class:`SearchSpace` over a user's model: per-layer (or block, or network) bits, a keep
    ratio per group of coupled channels, distillation and training values. Everything sampling,
    validation, mutation and the searchers use is inherited; decoding gives a :class:`ModelTrialSpec`.
    """

    def __init__(self, raw: Mapping, layers: Sequence[LayerInfo], groups: Sequence[PruneGroup],
                 input_shape: tuple[int, ...], num_classes: int, source: str = "<space>"):
        from ..models.user import match_globs

        p = _Parser(source)
        model_space_keys(raw, source)
        self.source = source
        self.name = str(raw.get("name", DEFAULT_SPACE))
        self.description = str(raw.get("description", ""))
        self.params, self._by_name, self.constants = [], {}, {}
        self.table, self.n_stages, self.input_kind = None, 0, "model"
        self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)
        self.auto_sqnr_db = DEFAULT_AUTO_SQNR_DB
        self.model_layers = list(layers)
        names = [L.name for L in layers]
        q = p.keys("quant", raw.get("quant") or {}, MODEL_QUANT_KEYS)
        self._parse_policy(p, q)
        included = match_globs(names, _globs(p, "quant.include", q.get("include", ["*"])), "quant.include")
        included -= match_globs(names, _globs(p, "quant.exclude", q.get("exclude")), "quant.exclude")
        self.quantized = [n for n in names if n in included]  # forward order
        self._info = {L.name: L for L in layers}
        self.bits_domains = {
            "w_bits": p.domain("quant.w_bits", q.get("w_bits", FLOAT_BITS), p.bits),
            "a_bits": p.domain("quant.a_bits", q.get("a_bits", FLOAT_BITS), p.bits),
        }
        self._governs: dict[str, list[str]] = {}
        for layer in self.quantized:
            key = self.bits_key(layer)
            if key is not None and key not in self._governs:
                self._governs[key] = []
                for kind, dom in self.bits_domains.items():
                    self._slot(f"{key}.{kind}", dom, "quant")
            if key is not None:
                self._governs[key].append(layer)
        self._slot("quant.logit_bits", p.domain("quant.logit_bits", q.get("logit_bits", FLOAT_BITS), p.bits), "quant")
        for key, allowed in QUANT_OPTIONS.items():
            self._slot(f"quant.{key}", p.domain(f"quant.{key}", q.get(key, allowed[0]), p.name_in(allowed)), "quant")
        self._add_prune(p, raw.get("prune") or {}, groups, names)
        d = p.keys("distill", raw.get("distill") or {}, DISTILL_KEYS)
        self._slot("distill.alpha", p.domain("distill.alpha", d.get("alpha", 0.0), self._fraction(p)), "train")
        self._slot("distill.temperature", p.domain("distill.temperature", d.get("temperature", 4.0), p.positive),
                   "train")
        self._add_train(p, raw.get("train") or {})

    @staticmethod
    def _fraction(p: _Parser):
        def check(path, v):
            if not (_is_number(v) and 0 <= v <= 1):
                raise p.err(path, f"{v!r} is not allowed; allowed: numbers in [0, 1]")
        return check

    def _add_prune(self, p: _Parser, raw, groups: Sequence[PruneGroup], names: list[str]) -> None:
        from ..models.pruning import IMPORTANCES
        from ..models.user import match_globs

        raw = p.keys("prune", raw, PRUNE_KEYS)
        keep = p.domain("prune.keep", raw.get("keep", 1.0), self._keep_check(p))
        importance = raw.get("importance", "l2")
        p.name_in(IMPORTANCES)("prune.importance", importance)
        self.importance = importance
        excluded = match_globs(names, _globs(p, "prune.exclude", raw.get("exclude")), "prune.exclude")
        self.groups = [g for g in groups if not excluded & set(g.outputs)]
        order = {n: i for i, n in enumerate(names)}
        self._group_layers = {g.name: sorted({*g.outputs, *g.inputs}, key=lambda n: order.get(n, len(order)))
                              for g in self.groups}
        for g in self.groups:
            self._slot(f"{g.name}.keep", keep, "arch")

    @staticmethod
    def _keep_check(p: _Parser):
        def check(path, v):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise p.err(path, f"{v!r} is not allowed; allowed: keep ratios in (0, 1], e.g. [1.0, 0.75, 0.5]")
        return check

    # what the parameters govern ------------------------------------------------------------
    def governs(self, name: str) -> list[str]:
        """The layers a parameter decides for (bits: the layers sharing the pair; keep: every layer
        whose channels the group changes; others: none)."""
        key, _, last = name.rpartition(".")
        if last in ("w_bits", "a_bits"):
            return list(self._governs.get(key, []))
        if last == "keep":
            return list(self._group_layers.get(key, []))
        return []

    def group(self, name: str) -> PruneGroup:
        return next(g for g in self.groups if g.name == name)

    # structure ---------------------------------------------------------------------------
    def violation(self, cfg: Mapping) -> str:
        return ""

    def layers(self, cfg: Mapping | None = None) -> list[str]:
        """Every Conv2d / Linear layer of the model in forward order (float ones included)."""
        return [L.name for L in self.model_layers]

    def pinned(self, layer: str) -> bool:
        info = self._info.get(layer)
        return self.pin_bits is not None and info is not None and layer in self.quantized and (info.first or info.last)

    def bits_key(self, layer: str) -> str | None:
        if layer not in self.quantized or self.pinned(layer) or self.policy == "auto":
            return None
        if self.policy == "uniform":
            return "quant"
        return self._info[layer].block if self.policy == "block" else layer

    def _layer_bits(self, view: Mapping, layer: str) -> LayerBits:
        if layer not in self.quantized:
            return LayerBits(FLOAT_BITS, FLOAT_BITS)
        return super()._layer_bits(view, layer)

    def decode(self, cfg: Mapping) -> ModelTrialSpec:
        cfg = self.validate(cfg)
        view = self.view(cfg)
        layers = self.layers()
        quant = QuantConfig(layers={L: self._layer_bits(view, L) for L in layers}, logit_bits=view["quant.logit_bits"],
                            **{key: view[f"quant.{key}"] for key in QUANT_OPTIONS})
        auto = None
        if self.policy == "auto":
            free = tuple(L for L in self.quantized if not self.pinned(L))
            if free:
                auto = AutoBits(self.auto_sqnr_db, self.bits_candidates("w_bits"), self.bits_candidates("a_bits"), free)
        return ModelTrialSpec(
            keep={g.name: float(view[f"{g.name}.keep"]) for g in self.groups},
            quant=quant,
            train=TrainSpec(**{k: view[f"train.{k}"] for k in _TRAIN_KEYS}),
            distill=DistillSpec(float(view["distill.alpha"]), float(view["distill.temperature"])),
            auto_bits=auto,
        )

    def uniform_config(self, w_bits: int, a_bits: int, base: Mapping | None = None) -> dict:
        """A config of the unpruned model with every searched layer at ``w_bits`` / ``a_bits`` (each
        rounded up to a width its parameter allows), the other values from ``base`` or the
        defaults of :meth:`default_config`."""
        cfg = dict(base) if base is not None else self.default_config()
        for g in self.groups:
            if self.param(f"{g.name}.keep") is not None:  # a single keep ratio is a constant, not a parameter
                cfg[f"{g.name}.keep"] = max(_values(self._value_domain(f"{g.name}.keep")))
        bits = {L: LayerBits(w_bits, a_bits) for L in self.quantized}
        return self.validate({**cfg, **self.bit_entries(bits)})

    def default_config(self) -> dict:
        """A config of the space's first-listed or middle values: keep ratios 1 (no pruning), the
        widest bits, the first of each choice, the (log-)middle of each range."""
        import math

        from .domains import Choice, Int, Ordinal

        def pick(prm, view):
            d = prm.domain
            if isinstance(d, Ordinal):
                return max(d.values) if prm.group in ("quant", "arch") else d.values[0]
            if isinstance(d, Choice):
                return d.values[0]
            mid = math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2
            return int(round(mid)) if isinstance(d, Int) else float(mid)

        return self.walk(pick)

    def __repr__(self) -> str:
        return (f"ModelSpace({self.name!r}, {len(self.params)} params, {len(self.quantized)} quantized layers, "
                f"{len(self.groups)} prunable groups)")
