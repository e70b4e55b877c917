"""Gradient-based search (DNAS / EdMIPS style) inside one trial.

A super-network relaxes, for the macro-architecture a trial was given (channels, depth,
connections, head, training hyperparameters), every block's op choice and every layer's
weight/activation bit choice: an op is the softmax-weighted sum of all candidate ops' outputs,
a layer convolves a softmax-weighted sum of its input quantized at each candidate activation
width with a weighted sum of its weight quantized at each candidate weight width (EdMIPS's
composite convolution). Weights and architecture logits are trained alternately on two halves of
the training split with the loss ``cross-entropy + cost_weight * E[cost] / E0[cost]``, where
``E[cost]`` is the exact expected cost (the objective's cost metric: size or BitOPs) under the
current (Gumbel-softmax, temperature annealed from ``tau`` to ``tau / 10``) choice probabilities.
Then the most probable op and bits are taken, and that discrete network is retrained from scratch
with fake-quant by the ordinary trial, which reports as every trial does.

The searcher ``dnas`` (``search/strategies/_dnas.py``) suggests the macro-architecture and DNAS's own
hyperparameters (``dnas.cost_weight``, ``dnas.tau``); Tune searches those.
"""

from __future__ import annotations

import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ArrayBatches
from ..cost import FLOAT_BITS, LayerShape, layer_cost, layer_size_bits
from ..models import build_model, get_op, trace_layers
from ..models.blocks import Block, branch_channels
from ..quant import ActFakeQuant, LayerBits, fake_quant_weight, is_float
from ..space.domains import Choice, Ordinal
from ..space.search_space import SearchSpace
from .training import make_optimizer
from ..errors import ConfigError
from ..objective import COMPUTED_COST_METRICS, LATENCY_METRIC
from .base import DNAS_PREFIX, Reporter
from .trained import TrainedTrial, TrialContext, run_trial



def _probs(logits: torch.Tensor, tau: float, hard_sample: bool) -> torch.Tensor:
    if hard_sample:  # training: a relaxed sample (Gumbel-softmax)
        return F.gumbel_softmax(logits, tau=tau, hard=False)
    return F.softmax(logits / tau, dim=-1)


class _Relaxed(nn.Module):
    """Shared state of the relaxed modules: the temperature and whether to sample."""

    tau: float = 1.0
    sample: bool = True


class MixedActQuant(_Relaxed):
    """Softmax-weighted sum of an input quantized at each candidate width."""

    def __init__(self, choices: tuple[int, ...]):
        super().__init__()
        self.choices = tuple(choices)
        self.logits = nn.Parameter(torch.zeros(len(choices)))
        self.quant = nn.ModuleList(ActFakeQuant(b) for b in choices)

    def probs(self) -> torch.Tensor:
        return _probs(self.logits, self.tau, self.sample and self.training)

    def forward(self, x):
        p = self.probs()
        return sum(p[k] * q(x) for k, q in enumerate(self.quant))


class _MixedLayer(_Relaxed):
    def _init_mixed(self, w_choices, a_choices):
        self.w_choices = tuple(w_choices)
        self.w_logits = nn.Parameter(torch.zeros(len(self.w_choices)))
        self.act = MixedActQuant(a_choices)

    def mixed_weight(self):
        p = _probs(self.w_logits, self.tau, self.sample and self.training)
        return sum(p[k] * (self.weight if is_float(b) else fake_quant_weight(self.weight, b))
                   for k, b in enumerate(self.w_choices))


class MixedConv2d(_MixedLayer, nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(self.act(x), self.mixed_weight(), self.bias)


class MixedLinear(_MixedLayer, nn.Linear):
    def forward(self, x):
        return F.linear(self.act(x), self.mixed_weight(), self.bias)


def _mixed_from(mod: nn.Module, w_choices, a_choices) -> nn.Module:
    if isinstance(mod, nn.Conv2d):
        new = MixedConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride,
                          padding=mod.padding, dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None)
    else:
        new = MixedLinear(mod.in_features, mod.out_features, bias=mod.bias is not None)
    new.load_state_dict(mod.state_dict())
    new._init_mixed(w_choices, a_choices)
    return new


class MixedOp(_Relaxed):
    """Softmax-weighted sum of candidate ops (all map ``in_ch`` -> ``out_ch`` at ``stride``)."""

    def __init__(self, names: tuple[str, ...], in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.names = tuple(names)
        self.cands = nn.ModuleList(get_op(n)(in_ch, out_ch, stride) for n in names)
        self.logits = nn.Parameter(torch.zeros(len(names)))

    def probs(self) -> torch.Tensor:
        return _probs(self.logits, self.tau, self.sample and self.training)

    def forward(self, x):
        p = self.probs()
        return sum(p[k] * op(x) for k, op in enumerate(self.cands))


def _domain_values(space: SearchSpace, name: str, fallback) -> tuple:
    prm = space.param(name)
    if prm is not None and isinstance(prm.domain, (Choice, Ordinal)):
        return prm.domain.values
    value = space.constants.get(name, fallback)
    return (value,)


class SuperNet(nn.Module):
    """The relaxed network around the macro-architecture of ``config``."""

    def __init__(self, space: SearchSpace, config: dict, seed: int = 0):
        super().__init__()
        self.space = space
        spec = space.decode(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = build_model(spec.arch, None, seed=seed)
            view = space.view(config)
            self.mixed_ops: dict[str, MixedOp] = {}
            for i, stage in enumerate(spec.arch.stages):
                for j, b in enumerate(stage):
                    block: Block = getattr(self.net, f"s{i}")[j]
                    ca, cb = branch_channels(b.connection, b.merge, b.out_ch)
                    ops = _domain_values(space, f"s{i}.b{j}.op", b.op)
                    if len(ops) > 1:
                        block.op = MixedOp(ops, b.in_ch, ca, b.stride)
                        self.mixed_ops[f"s{i}.b{j}.op"] = block.op
                    if b.connection == "parallel":
                        ops_b = _domain_values(space, f"s{i}.b{j}.op_b", b.op_b)
                        if len(ops_b) > 1:
                            block.par = MixedOp(ops_b, b.in_ch, cb, b.stride)
                            self.mixed_ops[f"s{i}.b{j}.op_b"] = block.par
            w_choices = _bits_choices(space, "w_bits")
            a_choices = _bits_choices(space, "a_bits")
            for path, mod in list(self.net.named_modules()):
                if type(mod) in (nn.Conv2d, nn.Linear):
                    parent_path, _, attr = path.rpartition(".")
                    setattr(self.net.get_submodule(parent_path) if parent_path else self.net, attr,
                            _mixed_from(mod, w_choices, a_choices))
            logit_choices = _domain_values(space, "quant.logit_bits", view.get("quant.logit_bits", FLOAT_BITS))
            self.net.logit_quant = MixedActQuant(logit_choices)
        self._cost_tables = None

    # relaxation state -----------------------------------------------------------------------
    def relaxed_modules(self):
        return [m for m in self.modules() if isinstance(m, _Relaxed)]

    def set_temperature(self, tau: float, sample: bool = True) -> None:
        for m in self.relaxed_modules():
            m.tau, m.sample = tau, sample

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.endswith("logits")]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.endswith("logits")]

    def forward(self, x):
        return self.net(x)

    # expected cost ---------------------------------------------------------------------------
    def _layer_tables(self, metric: str):
        """Per mixed layer: (layer, the MixedOp candidates it sits in, cost matrix [w choice x a choice])."""
        if self._cost_tables is None:
            shapes = {s.name: s for s in trace_layers(self.net, self.space.input_shape)}
            tables = []
            for path, mod in self.net.named_modules():
                if not isinstance(mod, _MixedLayer):
                    continue
                s = shapes[path]
                owners = []
                for op_path, op in self.mixed_ops.items():
                    prefix = _module_path(self.net, op) + ".cands."
                    if path.startswith(prefix):
                        owners.append((op, int(path[len(prefix):].split(".")[0])))
                tables.append((mod, owners, s))
            self._cost_tables = tables
        out = []
        for mod, owners, s in self._cost_tables:
            mat = torch.tensor([[_cost(s, w, a, metric) for a in mod.act.choices] for w in mod.w_choices],
                               dtype=torch.float32)
            out.append((mod, owners, mat))
        return out

    def expected_cost(self, metric: str) -> torch.Tensor:
        """The exact expectation of the cost metric under the current choice probabilities."""
        total = torch.zeros(())
        for mod, owners, mat in self._layer_tables(metric):
            pw = F.softmax(mod.w_logits / mod.tau, dim=-1)
            pa = F.softmax(mod.act.logits / mod.act.tau, dim=-1)
            c = pw @ mat @ pa
            for op, k in owners:
                c = c * F.softmax(op.logits / op.tau, dim=-1)[k]
            total = total + c
        if metric in ("size_bits", "size_kb"):
            logit = self.net.logit_quant
            p = F.softmax(logit.logits / logit.tau, dim=-1)
            extra = torch.tensor([0.0 if is_float(b) else 2.0 * FLOAT_BITS for b in logit.choices])
            total = total + (p @ extra) / (8000.0 if metric == "size_kb" else 1.0)
        return total

    # the discrete network ---------------------------------------------------------------------
    def derive(self, config: dict) -> dict:
        """The config with every relaxed choice at its most probable value."""
        decided = {k: v for k, v in config.items() if not k.startswith(DNAS_PREFIX)}
        dropped = []  # module-path prefixes of candidate ops that lost
        for name, op in self.mixed_ops.items():
            k = int(op.logits.argmax())
            decided[name] = op.names[k]
            base = _module_path(self.net, op)
            dropped += [f"{base}.cands.{i}." for i in range(len(op.names)) if i != k]
        bits = {_param_path(path): LayerBits(mod.w_choices[int(mod.w_logits.argmax())],
                                             mod.act.choices[int(mod.act.logits.argmax())])
                for path, mod in self.net.named_modules()
                if isinstance(mod, _MixedLayer) and not any(path.startswith(d) for d in dropped)}
        decided.update(self.space.bit_entries(bits))  # a width shared by layers: the widest they chose
        lq = self.net.logit_quant
        decided["quant.logit_bits"] = lq.choices[int(lq.logits.argmax())]
        names = set(self.space.names)
        # keep what the space searches; parameters of ops not chosen fall away in complete()
        decided = {k: v for k, v in decided.items() if k in names}
        return self.space.complete(decided, 0)


def _bits_choices(space: SearchSpace, kind: str) -> tuple[int, ...]:
    dom = space.bits_domains[kind]
    return dom.values if isinstance(dom, (Choice, Ordinal)) else (dom,)


def _cost(s: LayerShape, w: int, a: int, metric: str) -> float:
    shape = LayerShape(**{**s.__dict__, "w_bits": w, "a_bits": a})
    c = layer_cost(shape)
    if metric == "bitops":
        return float(c.bitops)
    if metric == "macs":
        return float(c.macs)
    size = float(layer_size_bits(shape))
    return size / 8000.0 if metric == "size_kb" else size


def _module_path(root: nn.Module, target: nn.Module) -> str:
    for name, mod in root.named_modules():
        if mod is target:
            return name
    raise KeyError("module not in network")


def _param_path(module_path: str) -> str:
    """``s1.b0.op.cands.2.conv`` -> ``s1.b0.op.conv``: the layer's name in the derived network."""
    parts = module_path.split(".")
    out, k = [], 0
    while k < len(parts):
        if parts[k] == "cands":
            k += 2
            continue
        out.append(parts[k])
        k += 1
    return ".".join(out)


def run_dnas_trial(config: dict, ctx: TrialContext, report: Reporter, state: dict | None = None) -> dict:
    """Search ops and bits with a super-network, then retrain the derived network as a normal trial."""
    torch.set_num_threads(ctx.threads)
    cost_weight = float(config.get("dnas.cost_weight", 0.1))
    tau0 = float(config.get("dnas.tau", 2.0))
    epochs = int(config.get("dnas.search_epochs", max(2, ctx.max_epochs // 2)))
    arch_lr = float(config.get("dnas.arch_lr", 3e-3))
    space = ctx.space
    base = {k: v for k, v in config.items() if not k.startswith(DNAS_PREFIX)}
    if state is not None and "derived" in state:  # resumed during retraining: skip the search
        derived, search_s = state["derived"], state.get("dnas_search_s", 0.0)
    else:
        t0 = time.perf_counter()
        derived = search(space, base, ctx, cost_weight, tau0, epochs, arch_lr)
        search_s = time.perf_counter() - t0
    extra = {"derived_config": json.dumps(derived, sort_keys=True), "dnas_search_s": search_s,
             "dnas_cost_weight": cost_weight, "dnas_tau": tau0}

    def forward(metrics, payload):
        if payload is not None:
            payload = {**payload, "derived": derived, "dnas_search_s": search_s}
        report({**metrics, **extra}, payload)

    final = run_trial(derived, ctx, forward, state if state is not None and "model" in state else None)
    return {**final, **extra}


def search(space: SearchSpace, config: dict, ctx: TrialContext, cost_weight: float, tau0: float, epochs: int,
           arch_lr: float) -> dict:
    """Train the super-network of ``config`` and return the derived discrete config (deterministic
    given ``ctx.seed``: the Gumbel noise is drawn from torch's global generator, seeded here)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        return _search(space, config, ctx, cost_weight, tau0, epochs, arch_lr)


def _search(space: SearchSpace, config: dict, ctx: TrialContext, cost_weight: float, tau0: float, epochs: int,
            arch_lr: float) -> dict:
    net = SuperNet(space, config, seed=ctx.seed).to(ctx.device)
    spec = space.decode(config)
    w_opt = make_optimizer(_ParamsOnly(net.weight_parameters()), spec.train)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999))
    x, y = ctx.train.tensors
    gen = torch.Generator().manual_seed(ctx.seed)
    perm = torch.randperm(len(y), generator=gen)
    half = len(y) // 2
    wa, ar = perm[:half], perm[half:]
    metric = ctx.objective.cost
    net.train()
    with torch.no_grad():
        net.set_temperature(tau0, sample=False)
        ref = float(net.expected_cost(metric)) or 1.0
    bs = spec.train.batch_size
    for e in range(epochs):
        tau = tau0 * (0.1 ** (e / max(1, epochs - 1)))
        net.set_temperature(tau, sample=True)
        wo = wa[torch.randperm(len(wa), generator=gen)]
        ao = ar[torch.randperm(len(ar), generator=gen)]
        for k in range(0, min(len(wo), len(ao)), bs):
            wi, ai = wo[k:k + bs], ao[k:k + bs]
            if len(wi) < 2 or len(ai) < 2:
                continue
            loss = F.cross_entropy(net(x[wi]), y[wi])
            if not math.isfinite(float(loss.detach())):
                break
            w_opt.zero_grad(set_to_none=True)
            loss.backward()
            w_opt.step()
            a_loss = F.cross_entropy(net(x[ai]), y[ai]) + cost_weight * net.expected_cost(metric) / ref
            a_opt.zero_grad(set_to_none=True)
            a_loss.backward()
            a_opt.step()
    return net.derive(config)


class _ParamsOnly(nn.Module):
    """``make_optimizer`` takes a module; this one holds just the given parameters."""

    def __init__(self, params):
        super().__init__()
        self.params = nn.ParameterList(params)


class DNASTrial(TrainedTrial):
    """Trials that search ops and bits with a differentiable super-network, then train the derived
    network like a ``trained`` trial (its config is what results show)."""

    name = "dnas"

    def run(self, config: dict, context: TrialContext, report: Reporter, state: dict | None = None) -> dict:
        return run_dnas_trial(config, context, report, state)

    def cost_model(self, prepared):
        return None  # the network is derived while the trial runs: its cost is not known before

    def check(self, cfg, prepared) -> None:
        if cfg.objective.cost == LATENCY_METRIC:
            raise ConfigError(f"objective.cost: dnas trials differentiate a cost computed from layer shapes and bits, "
                              f"and {LATENCY_METRIC} is measured; allowed: {', '.join(COMPUTED_COST_METRICS)}")
        if (cfg.search.searcher or "tpe") != "dnas":
            raise ConfigError(f"trial: dnas trials take the dnas searcher's configs (dnas.* options); "
                              f"got searcher '{cfg.search.searcher or 'tpe'}'; use --searcher dnas")
        if not isinstance(prepared.context.train, ArrayBatches):
            raise ConfigError("data: dnas trials split the training data into weight and architecture halves held in "
                              "memory; use a built-in dataset, not a data factory")

    def record(self, config: dict, metrics: dict) -> tuple[dict, dict]:
        extra = {k: v for k, v in config.items() if k.startswith(DNAS_PREFIX)}
        if "derived_config" in metrics:
            config = json.loads(metrics["derived_config"])
        return config, extra

