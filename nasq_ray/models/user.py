"""A user's own model: made by their factory (``--model MODULE:CALLABLE``), given their trained float
weights (``--weights``, read with ``torch.load(weights_only=True)``: a file from elsewhere cannot
run code), and traced to find what the search space is built from: every Conv2d / Linear layer in
forward order, which of them read the network's input and which give its output.

Tracing: ``torch.fx`` where the model traces (its graph says which layers the input reaches before
any other layer, and which reach the output after none), forward hooks where it does not (``trace:
auto``); ``trace: fx`` insists on torch.fx (the ONNX export needs it), ``trace: hooks`` uses hooks
alone. :class:`OwnNet` wraps the model with the logit quantizer (the values entering the loss).
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from dataclasses import dataclass

import torch
from torch import fx, nn

from ..errors import ConfigError
from ..user_code import UserCallable

TRACE_MODES = ("auto", "fx", "hooks")
WEIGHT_KEYS = ("state_dict", "model")  # where a checkpoint dict may hold the state dict


class OwnNet(nn.Module):
    """A user's network ``net`` followed by ``logit_quant`` (the values that enter the loss): the
    shape ``quantize_`` and the cost model expect. Layer names inside are ``net.<user's name>``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.logit_quant: nn.Module = nn.Identity()

    def forward(self, x):
        return self.logit_quant(self.net(x))


@dataclass(frozen=True)
class LayerInfo:
    """One Conv2d / Linear layer of a user's model, in forward order."""

    name: str
    kind: str  # conv | linear
    block: str  # the top-level child module holding it (policy ``block``)
    first: bool  # reads the network input (before any other Conv/Linear)
    last: bool  # gives the network output (no Conv/Linear after it)
    in_ch: int
    out_ch: int
    groups: int


def make_model(factory: UserCallable, seed: int | None = None) -> nn.Module:
    """The user's model; with ``seed`` its initial weights are drawn from torch's generator seeded with
    it (and torch's global random state is left as it was), so a run's float model is reproducible."""
    if seed is None:
        model = factory()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory: {factory.label} returned {type(model).__name__}; expected a torch.nn.Module")
    return model


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: a ``torch.save``d state dict, or a dict holding one under
    ``state_dict`` or ``model``. Read with ``weights_only=True``; a ``module.`` prefix (DataParallel)
    is dropped. Weights that are not finite are refused."""
    from pathlib import Path

    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"model.weights: '{p}' is a folder; expected a file written by "
                          "torch.save(model.state_dict(), path)")
    if not p.is_file():
        raise ConfigError(f"model.weights: file '{p}' does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before it refuses a file
            warnings.simplefilter("ignore")
            raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError (code in the file), a corrupt file, ...
        text = str(e).strip()
        why = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)  # torch's reason, after its advice
        first = why.group(1).strip() if why else (text.splitlines()[0] if text else "")
        first = re.split(r"(?<=\.)\s", " ".join(first.split()))[0][:200]  # its first sentence
        raise ConfigError(f"model.weights: '{p}' is not a plain weights file (torch.load(weights_only=True) refused it: "
                          f"{type(e).__name__}{': ' + first if first else ''}); save it with "
                          "torch.save(model.state_dict(), path)") from None
    if isinstance(raw, dict):
        for key in WEIGHT_KEYS:
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ConfigError(f"model.weights: '{p}' holds no state dict (a dict of tensors, or a dict holding one under "
                          f"{' or '.join(repr(k) for k in WEIGHT_KEYS)})")
    if all(k.startswith("module.") for k in raw):
        raw = {k[len("module."):]: v for k, v in raw.items()}
    bad = next((k for k, v in raw.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ConfigError(f"model.weights: '{path}': tensor '{bad}' holds NaN or infinite values; expected finite weights")
    return raw


def _listing(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights_(model: nn.Module, state: dict[str, torch.Tensor], where: str = "model.weights") -> None:
    """Load ``state`` into ``model`` strictly; a mismatch names the missing and unexpected keys and
    the mismatched shapes (file against model)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"mismatched shapes: {_listing(shapes, 3)}")
    if problems:
        raise ConfigError(f"{where}: the weights do not fit the model ({'; '.join(problems)})")
    model.load_state_dict(state)


def check_model_on_input(model: nn.Module, x: torch.Tensor, num_classes: int | None = None) -> int:
    """Run ``model`` on a data batch ``x``; the number of outputs it gives per sample. A model that
    fails on the data, or gives no (N, classes) output, is a ConfigError naming both shapes."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    expects = ""
    if isinstance(first, nn.Conv2d):
        expects = f"; its first layer is a Conv2d taking {first.in_channels} input channels (N, {first.in_channels}, H, W)"
    elif isinstance(first, nn.Linear):
        expects = f"; its first layer is a Linear taking {first.in_features} features (N, {first.in_features})"
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as e:  # noqa: BLE001 - any failure of the user's forward on the data is bad input
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model: fails on the data's input of shape {tuple(x.shape)} ({type(e).__name__}: "
                          f"{msg[:200]}){expects}") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model: on the data's input of shape {tuple(x.shape)} it gives {shape}; expected logits of "
                          f"shape ({x.shape[0]}, classes)")
    if not out.is_floating_point():
        raise ConfigError(f"model: gives {out.dtype} outputs; expected float logits of shape ({x.shape[0]}, classes)")
    if num_classes is not None and out.shape[1] < num_classes:
        raise ConfigError(f"model: gives {out.shape[1]} outputs per sample; the data has {num_classes} classes")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("model: none of its parameters requires grad, so nothing can train; leave at least the "
                          "layers to quantize trainable (requires_grad=True)")
    saved = {k: v.clone() for k, v in model.state_dict().items()}  # training mode moves BatchNorm statistics
    try:  # trained in training mode, evaluated in evaluation mode: both must give the same logits
        with torch.no_grad():
            trained = model.train()(x)
    except Exception as e:  # noqa: BLE001 - any failure of the user's forward on the data is bad input
        trained = e
    finally:
        model.load_state_dict(saved)
        model.train(was)
    if not isinstance(trained, torch.Tensor) or trained.shape != out.shape:
        what = (f"{type(trained).__name__}: {' '.join(str(trained).split())[:150]}" if isinstance(trained, Exception)
                else tuple(trained.shape) if isinstance(trained, torch.Tensor) else type(trained).__name__)
        raise ConfigError(f"model: gives {tuple(out.shape)} in evaluation mode but {what} in training mode; expected "
                          "the same logits in both (it is trained in one and evaluated in the other)")
    return int(out.shape[1])


_FLOAT_OK = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def float_only_layers(model: nn.Module) -> list[str]:
    """Modules holding weights of their own that nasq-ray neither quantizes, prunes nor counts in the
    cost (an LSTM, a Conv3d, an Embedding, a bare ``nn.Parameter``): ``"name (Type, n weights)"``."""
    out = []
    for name, mod in model.named_modules():
        own = [p for p in mod.parameters(recurse=False)]
        if own and not isinstance(mod, _FLOAT_OK):
            out.append(f"{name or 'the model itself'} ({type(mod).__name__}, {sum(p.numel() for p in own):,} weights)")
    return out


class _LayerTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.Linear)) or super().is_leaf_module(m, qualname)


def _fx_ends(model: nn.Module) -> tuple[list[str], set[str], set[str]]:
    """Layers in graph order, those the input reaches before any layer, those reaching the output
    after none (torch.fx; raises what fx raises when the model does not trace)."""
    graph = _LayerTracer().trace(model)
    modules = dict(model.named_modules())
    is_layer = lambda n: n.op == "call_module" and isinstance(modules.get(n.target), (nn.Conv2d, nn.Linear))  # noqa: E731
    order = [str(n.target) for n in graph.nodes if is_layer(n)]

    def reach(start, step):
        found, stack, seen = set(), list(start), set()
        while stack:
            node = stack.pop()
            for nxt in step(node):
                if nxt in seen:
                    continue
                seen.add(nxt)
                if is_layer(nxt):
                    found.add(str(nxt.target))
                else:
                    stack.append(nxt)
        return found

    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    outputs = [n for n in graph.nodes if n.op == "output"]
    first = reach(inputs, lambda n: n.users)
    last = reach(outputs, lambda n: [a for a in n.all_input_nodes])
    return list(dict.fromkeys(order)), first, last


def _hook_ends(model: nn.Module, x: torch.Tensor) -> tuple[list[str], set[str], set[str]]:
    """The same from one forward pass with hooks: the layers whose input is the network input (else
    the first to run) and the one whose output is the network output (else the last to run)."""
    names = {m: n for n, m in model.named_modules()}
    order, first, by_output = [], set(), {}

    def hook(mod, inp, out):
        name = names[mod]
        if name not in order:
            order.append(name)
        if inp and inp[0] is x:
            first.add(name)
        by_output[id(out)] = name

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            out = model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    last = {by_output[id(out)]} if id(out) in by_output else ({order[-1]} if order else set())
    return order, first or ({order[0]} if order else set()), last


def trace_model(model: nn.Module, x: torch.Tensor, mode: str = "auto") -> tuple[list[LayerInfo], str]:
    """The model's Conv2d / Linear layers (see :class:`LayerInfo`) and how they were found (``fx``
    or ``hooks``). ``x``: one batch of the data's input."""
    if mode not in TRACE_MODES:
        raise ConfigError(f"model.trace: {mode!r} is not allowed; allowed: {', '.join(TRACE_MODES)}")
    how = "hooks"
    was = model.training
    if mode != "hooks":
        try:
            order, first, last = _fx_ends(model)
            how = "fx"
        except Exception as e:  # noqa: BLE001 - TraceError and whatever the model's Python does under tracing
            if mode == "fx":
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConfigError(f"model.trace: fx: the model does not trace with torch.fx ({type(e).__name__}: "
                                  f"{msg[:200]}); use trace: auto or hooks (the search works, ONNX export does not)"
                                  ) from None
    if how == "hooks":
        order, first, last = _hook_ends(model, x)
    model.train(was)
    modules = dict(model.named_modules())
    ran = set(_hook_ends(model, x)[0]) if how == "fx" else set(order)
    model.train(was)
    layers = []
    for name in order:
        if name not in ran:  # in the graph but not run on this input (a branch never taken)
            continue
        m = modules[name]
        conv = isinstance(m, nn.Conv2d)
        layers.append(LayerInfo(name, "conv" if conv else "linear", name.split(".")[0], name in first, name in last,
                                m.in_channels if conv else m.in_features, m.out_channels if conv else m.out_features,
                                m.groups if conv else 1))
    if not layers:
        raise ConfigError("model: it has no Conv2d or Linear layer that runs on the data's input; nothing to quantize "
                          "or prune")
    return layers, how


def match_globs(names: list[str], patterns: list[str], field_name: str) -> set[str]:
    """The ``names`` matching any of ``patterns`` (fnmatch globs); a pattern matching none is an error."""
    out = set()
    for pat in patterns:
        hit = {n for n in names if fnmatch.fnmatchcase(n, pat)}
        if not hit:
            raise ConfigError(f"{field_name}: '{pat}' matches no Conv2d/Linear layer of the model; its layers: "
                              f"{_listing(names, 8)}")
        out |= hit
    return out
