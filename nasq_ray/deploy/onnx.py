"""ONNX export of a trained fake-quant model, with QuantizeLinear / DequantizeLinear (opset 21).

What the fake-quant model computes, written with ONNX's quantization operators so that a runtime
(onnxruntime) can execute it with integer kernels:

* **weights** are stored as integers, the very integers of the packed file: INT4 for 4 bits or
  fewer, INT8 up to 8, INT16 up to 16, each followed by a ``DequantizeLinear`` with the weight's
  scales (per output channel, ``axis=0``; one scale for per-tensor weights). Float (32-bit) layers
  keep float weights.
* **BatchNorm folding**: a BatchNorm that directly follows a Conv/Linear is folded into it. The
  weight scales absorb it (``scale' = scale * gamma / sqrt(var + eps)`` per output channel), so the
  stored integers do not change; the bias absorbs the shift. Biases stay float32 (an ``Add`` after
  the layer), as fake-quant computes them and the cost model counts them: given as the Conv's bias
  input, onnxruntime rounds a bias to int32 at (input scale x weight scale), which at 2-3 bits moved
  logits by 0.1 and changed 29 of 180 test predictions of a model in our tests.
* **activations** at static ranges: ``QuantizeLinear`` -> ``DequantizeLinear`` with the layer's
  scale and zero point, UINT8/INT8 storage (16-bit types above 8 bits). A grid narrower than the
  storage type (e.g. 4 bits in UINT8) is enforced by a ``Clip`` to the grid's real range before
  quantizing, so the integers are exactly the fake-quant integers.
* **dynamic activations** (per-sample ranges) are computed in the graph with float operators
  (``ReduceMin``/``ReduceMax``, ``Round``, ``Min``/``Max``): ONNX's ``DynamicQuantizeLinear`` is
  8-bit and per tensor only.

The network is read with ``torch.fx`` (blocks and heads are plain Python); a module or function it
does not know is refused with its name, never silently dropped.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import NasqError
from ..quant.fake_quant import is_float
from ..quant.learned import LSQAct, PACTAct
from ..quant.modules import ActFakeQuant, QuantConv2d, QuantLinear

OPSET = 21
_ACT_QUANTS = (ActFakeQuant, LSQAct, PACTAct)
_EPS = 1e-8


class ExportError(NasqError):
    """The model holds something the ONNX export cannot write."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.Linear, *_ACT_QUANTS)) or super().is_leaf_module(m, qualname)


def _weight_dtype(bits: int):
    import ml_dtypes

    return ml_dtypes.int4 if bits <= 4 else np.int8 if bits <= 8 else np.int16


def _act_dtype(qmin: int, qmax: int):
    if qmin < 0:
        return (np.int8, -128, 127) if qmax <= 127 else (np.int16, -32768, 32767)
    return (np.uint8, 0, 255) if qmax <= 255 else (np.uint16, 0, 65535)


class _Graph:
    """ONNX nodes and initializers under construction."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self._n = [], [], 0
        self.integers: dict[str, tuple[str, str, str]] = {}  # DequantizeLinear output -> its (integers, scale, zp)
        self.dequantized: dict[tuple, str] = {}  # (tensor, quantizer grid) -> that tensor quantized to that grid

    def prune(self, outputs: list[str]) -> None:
        """Drop the nodes nothing uses (DequantizeLinears bypassed by an integer-side reshape)."""
        used, kept = set(outputs), []
        for node in reversed(self.nodes):
            if any(o in used for o in node.output):
                kept.append(node)
                used.update(node.input)
        self.nodes = kept[::-1]
        self.inits = [i for i in self.inits if i.name in used]

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value, hint: str, dtype=np.float32) -> str:
        name = self.name(hint)
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _bn_fold(bn: nn.Module, out_ch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multiplier and shift of a BatchNorm in inference form (float64)."""
    g = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
    shift = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * g
    return g.reshape(out_ch), shift.reshape(out_ch)


def _grid_key(x: str, q: nn.Module) -> tuple:
    """Tensor ``x`` quantized by the static quantizer ``q``: equal keys, equal integers."""
    scale, zero_point = (float(v) for v in q.qparams())
    qmin, qmax = (int(v) for v in q.grid())
    return x, np.float32(scale).item(), int(zero_point), qmin, qmax


def _act_quant(g: _Graph, x: str, q: nn.Module, where: str, rank: int) -> str:
    """The activation quantizer ``q`` applied to tensor ``x`` (of ``rank`` dimensions)."""
    if is_float(q.bits):
        return x
    if getattr(q, "dynamic", False):
        return _dynamic_quant(g, x, q, rank)
    if not bool(q.initialized):
        raise ExportError(f"{where}: its activation range was never observed (the model is untrained)")
    key = _grid_key(x, q)
    if key in g.dequantized:  # quantized alike already: by the layer before (requantized), or for another
        return g.dequantized[key]  # consumer (onnxruntime fuses an op only when a single Q reads its output)
    scale, zero_point = (float(v) for v in q.qparams())
    qmin, qmax = (int(v) for v in q.grid())
    dtype, lo, hi = _act_dtype(qmin, qmax)
    if (qmin, qmax) != (lo, hi):  # a grid narrower than the storage type: clip to its real range
        x = g.op("Clip", [x, g.const(np.float32((qmin - zero_point) * scale), "lo"),
                          g.const(np.float32((qmax - zero_point) * scale), "hi")])
    s, z = g.const(np.float32(scale), "a_scale"), g.const(int(zero_point), "a_zp", dtype)
    q_out = g.op("QuantizeLinear", [x, s, z], "q")
    dq = g.op("DequantizeLinear", [q_out, s, z], "dq")
    g.integers[dq] = (q_out, s, z)
    g.dequantized[key] = dq
    return dq


def _integer_reshape(g: _Graph, x: str, shape: list[int]) -> str:
    """``x`` (a DequantizeLinear output) reshaped on the integer side (Q -> Reshape -> DQ), where the
    QDQ fusions expect it."""
    q_out, s, z = g.integers[x]
    reshaped = g.op("Reshape", [q_out, g.const(np.array(shape, np.int64), "shape", np.int64)])
    dq = g.op("DequantizeLinear", [reshaped, s, z], "dq")
    g.integers[dq] = (reshaped, s, z)
    return dq


def _dynamic_quant(g: _Graph, x: str, q: ActFakeQuant, rank: int) -> str:
    """Per-sample min/max quantization in float operators (see ``fake_quant.dynamic_qparams``)."""
    bits = q.bits
    axes = g.const(np.arange(1, rank, dtype=np.int64), "axes", np.int64)
    zero = g.const(np.float32(0.0), "zero")
    lo = g.op("Min", [g.op("ReduceMin", [x, axes], keepdims=1), zero])
    hi = g.op("Max", [g.op("ReduceMax", [x, axes], keepdims=1), zero])
    eps = g.const(np.float32(_EPS), "eps")
    if q.scheme == "symmetric":
        neg = g.op("Less", [lo, zero])
        qs = 2 ** (bits - 1) - 1
        qmax = g.op("Where", [neg, g.const(np.float32(qs), "q"), g.const(np.float32(2**bits - 1), "q")])
        qmin = g.op("Where", [neg, g.const(np.float32(-qs), "q"), zero])
        scale = g.op("Max", [g.op("Div", [g.op("Max", [g.op("Neg", [lo]), hi]), qmax]), eps])
        zp = zero
    else:
        qmin, qmax = zero, g.const(np.float32(2**bits - 1), "qmax")
        scale = g.op("Max", [g.op("Div", [g.op("Sub", [hi, lo]), qmax]), eps])
        zp = g.op("Min", [g.op("Max", [g.op("Neg", [g.op("Round", [g.op("Div", [lo, scale])])]), qmin]), qmax])
    rounded = g.op("Round", [g.op("Mul", [x, g.op("Reciprocal", [scale])])])
    clamped = g.op("Max", [g.op("Min", [rounded, g.op("Sub", [qmax, zp])]), g.op("Sub", [qmin, zp])])
    return g.op("Mul", [clamped, scale], "dyn_q")


def _layer(g: _Graph, x: str, mod: nn.Module, name: str, bn: nn.Module | None, integer: bool = False) -> str:
    """A Conv2d/Linear (fake-quant or float), its input quantizer and an optional folded BatchNorm.
    ``integer``: written for onnxruntime's integer kernels (weights in INT8, the bias an INT32 input
    at input scale x weight scale; the caller requantizes the output)."""
    if isinstance(mod, (QuantConv2d, QuantLinear)):
        x = _act_quant(g, x, mod.act_quant, name, 4 if isinstance(mod, nn.Conv2d) else 2)
    out_ch = mod.weight.shape[0]
    mult, shift = _bn_fold(bn, out_ch) if bn is not None else (np.ones(out_ch), np.zeros(out_ch))
    bias = mod.bias.detach().double().numpy() if mod.bias is not None else np.zeros(out_ch)
    bias = (bias * mult + shift).astype(np.float32)
    w_bits = getattr(mod, "w_bits", 32)
    if isinstance(mod, (QuantConv2d, QuantLinear)) and not is_float(w_bits):
        q, scale = mod.integer_weight()
        scale = scale.detach().double().reshape(-1).numpy()
        if bn is not None or scale.size > 1:
            scale = np.broadcast_to(scale, (out_ch,)) * mult
        q = q.reshape(*q.shape, 1, 1) if integer and isinstance(mod, nn.Linear) else q
        w_int = g.const(q.numpy().astype(np.int64), f"{name}.weight_int", _weight_dtype(w_bits))
        attrs = {"axis": 0} if scale.size > 1 else {}
        w_scale = scale.astype(np.float32).reshape(-1) if scale.size > 1 else np.float32(scale.item())
        weight = g.op("DequantizeLinear", [w_int, g.const(w_scale, f"{name}.w_scale")], f"{name}.weight", **attrs)
    else:
        w = mod.weight.detach().double().numpy()
        w = w * mult.reshape((-1,) + (1,) * (w.ndim - 1))
        weight = g.const(w.astype(np.float32), f"{name}.weight")
    inputs = [x, weight]
    if integer:  # the bias as onnxruntime's integer kernels take it: INT32 at input scale x weight scale
        b_scale = np.float32(mod.act_quant.qparams()[0]) * np.atleast_1d(w_scale).astype(np.float32)
        b_int = np.round(bias.astype(np.float64) / b_scale.astype(np.float64))
        if np.abs(b_int).max(initial=0) < 2**31 - 1:
            b_scale = np.broadcast_to(b_scale, (out_ch,)).astype(np.float32)
            inputs.append(g.op("DequantizeLinear", [g.const(b_int, f"{name}.bias_int", np.int32),
                                                    g.const(b_scale, f"{name}.b_scale")], f"{name}.bias", axis=0))
        else:
            integer = False  # a bias beyond INT32 at this scale stays a float Add
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            raise ExportError(f"{name}: padding {mod.padding!r} / {mod.padding_mode} is not supported; allowed: "
                              "numeric zero padding")
        ph, pw = mod.padding
        y = g.op("Conv", inputs, name, kernel_shape=list(mod.kernel_size), strides=list(mod.stride),
                 pads=[ph, pw, ph, pw], dilations=list(mod.dilation), group=mod.groups)
        bias = bias.reshape(1, out_ch, 1, 1)
    elif integer:  # as a 1x1 Conv on (N, C, 1, 1): onnxruntime 1.32 fuses QDQ Conv, not QDQ Gemm (nor MatMul + bias)
        inputs[0] = _integer_reshape(g, x, [0, -1, 1, 1])
        y = g.op("Conv", inputs, name, kernel_shape=[1, 1])  # its output is flattened back once requantized
    else:
        y = g.op("Gemm", inputs, name, transB=1, alpha=1.0, beta=1.0)
    if integer or (mod.bias is None and bn is None):
        return y
    # A separate Add keeps the bias in float32, as fake-quant computes it and the cost model counts
    # it; as the Conv's third input onnxruntime would round it to int32 at input scale x weight scale.
    return g.op("Add", [y, g.const(bias, f"{name}.bias")], f"{name}.add_bias")


_RELUS = (("call_function", torch.relu), ("call_function", F.relu), ("call_method", "relu"))


def _is_relu(node: fx.Node, modules: dict) -> bool:
    return (node.op, node.target) in _RELUS or isinstance(modules.get(node.target) if node.op == "call_module"
                                                         else None, nn.ReLU)


def _is_flatten(node: fx.Node) -> bool:
    return (node.op, node.target) in (("call_method", "flatten"), ("call_function", torch.flatten))


def _describe(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "output":
        return "the model's output"
    return getattr(node.target, "__name__", str(node.target))


FLOAT_BY_CHOICE = "measured faster on a float kernel"


def _integer_plan(graph: fx.Graph, modules: dict, folded: dict,
                  float_layers: frozenset[str] = frozenset()) -> tuple[dict, dict[str, str]]:
    """Which layers can run on onnxruntime's integer kernels (x86: UINT8 activations, INT8 weights,
    the output requantized at once) and, for the others, why not.

    A layer qualifies when it is 8/8 (its input quantizer static with an unsigned 8-bit grid, its
    weights 8 bits: at narrower widths the INT32 bias, rounded at input scale x weight scale, would
    move outputs by whole steps), and its output reaches, through its folded BatchNorm, a ReLU, max
    pooling and reshapes only (each used once: quantization commutes with them exactly), the input
    quantizer of the next layer or layers (all to the same grid) or the logit quantizer, static,
    exactly 8 bits unsigned. The output is then
    requantized right after the layer (after its ReLU) with that quantizer: the same integers the
    fake-quant model computes, so onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear.

    ``float_layers``: qualifying layers still written for a float kernel (``latency.faster_float_layers``
    finds the ones whose model runs faster so).

    Returns ``(requantize, reasons)``: fx node -> the quantizer to apply after it; layer name -> why
    it stays a float kernel ("" for the ones written for integer kernels)."""
    requantize, reasons = {}, {}
    for node in graph.nodes:
        mod = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        why = _why_float(mod)
        if not why:
            after, q = _requant_point(node, modules, folded)
            if isinstance(q, str):
                why = q
            elif _unsigned_8bit_static(q):
                why = f"output quantizer {_unsigned_8bit_static(q)}"
            elif str(node.target) in float_layers:
                why = FLOAT_BY_CHOICE
            else:
                requantize[after] = (q, isinstance(mod, nn.Linear))
        reasons[str(node.target)] = why
    return requantize, reasons


def _unsigned_8bit_static(q: nn.Module | None) -> str:
    """'' when ``q`` quantizes statically to an unsigned 8-bit grid, else what it does instead."""
    if q is None or is_float(q.bits):
        return "float"
    if getattr(q, "dynamic", False):
        return "dynamic range"
    if not bool(getattr(q, "initialized", True)):
        return "range never observed"
    qmin, qmax = (int(v) for v in q.grid())
    if qmin < 0:
        return "signed (INT8; onnxruntime fuses signed activations on ARM only)"
    if qmax != 255:
        return f"{q.bits} bits"
    return ""


def _same_grid(a: nn.Module | None, b: nn.Module) -> bool:
    """Whether static quantizers ``a`` and ``b`` give the same integers (the quantizers of two
    consumers of one tensor observe the same values, so their ranges agree)."""
    if a is b:
        return True
    if a is None or getattr(a, "dynamic", False) or getattr(b, "dynamic", False) or a.bits != b.bits:
        return False
    return a.qparams() == b.qparams() and a.grid() == b.grid()


def _consumer_quant(user: fx.Node, modules: dict) -> nn.Module | None:
    mod = modules.get(user.target) if user.op == "call_module" else None
    if isinstance(mod, (QuantConv2d, QuantLinear)):
        return mod.act_quant
    return mod if isinstance(mod, _ACT_QUANTS) else None


def _requant_point(layer: fx.Node, modules: dict, folded: dict) -> tuple[fx.Node, nn.Module | str]:
    """Where the layer's output can be requantized (the layer or its ReLU) and with which quantizer;
    or ``(node, reason)`` when the path to the next quantizer is not one quantization commutes with."""
    node, after = layer, layer
    while True:
        if len(node.users) > 1:  # several consumers: fine when all quantize it to the same integers
            quants = [_consumer_quant(u, modules) for u in node.users]
            if all(q is not None and _same_grid(q, quants[0]) for q in quants):
                return after, quants[0]
            return after, f"output used by {len(node.users)} nodes"
        if not node.users:
            return after, "output unused"
        user = next(iter(node.users))
        mod = modules.get(user.target) if user.op == "call_module" else None
        if mod is not None and folded.get(node) is mod:
            node = after = user  # its BatchNorm, folded
        elif _is_relu(user, modules) and after is node:
            node = after = user
        elif isinstance(mod, (nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)) or _is_flatten(user):
            node = user  # max pooling and reshapes commute with quantization: requantize before them
        elif _consumer_quant(user, modules) is not None:
            return after, _consumer_quant(user, modules)
        else:
            return after, f"output feeds {_describe(user, modules)}, not a quantizer"


def _why_float(mod: nn.Module) -> str:
    """Why the layer itself (its input and weights) cannot run on integer kernels ("" if it can)."""
    if not isinstance(mod, (QuantConv2d, QuantLinear)):
        return "float layer (32 bits)"
    why = _unsigned_8bit_static(mod.act_quant)
    if why:
        return f"input {why}"
    if mod.w_bits != 8:  # narrower weights: the INT32 bias would round at a coarse input x weight scale
        return f"weights {mod.w_bits} bits"
    return ""


def _single_user_layer(node: fx.Node, modules: dict) -> bool:
    return (node.op == "call_module" and isinstance(modules.get(node.target), (nn.Conv2d, nn.Linear))
            and len(node.users) == 1)


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int = OPSET, integer_kernels: bool = True,
            float_layers: frozenset[str] = frozenset()):
    """An ``onnx.ModelProto`` computing what ``model`` computes in evaluation mode.

    ``integer_kernels`` (the default): layers that qualify (see ``integer_plan``) are written in the
    form onnxruntime fuses into integer kernels (QLinearConv; a Linear as a 1x1 convolution): INT8
    weights, INT32 bias,
    the output requantized at once; the others as with ``False``: float kernels on the exact
    integers (a float bias kept in float32). The INT32 bias is the float bias rounded to input scale x
    weight scale: at most half a step of the accumulator, so an output step may move where the
    value sat on a rounding boundary. ``float_layers``: qualifying layers written for float kernels
    all the same."""
    was_training = model.training
    try:
        return _to_onnx(model.eval(), input_shape, opset, integer_kernels, frozenset(float_layers))
    finally:
        model.train(was_training)


def float_onnx(model: nn.Module, input_shape: tuple[int, ...]):
    """The same network in float (its float weights, no quantizers): what an export is compared with."""
    import copy

    from ..quant import dequantize_

    return to_onnx(dequantize_(copy.deepcopy(model)), input_shape)


def integer_plan(model: nn.Module, float_layers: frozenset[str] = frozenset()) -> dict[str, str]:
    """Layer name -> why it stays a float kernel in the export ("" for the layers written for
    onnxruntime's integer kernels); ``float_layers`` as in ``to_onnx``."""
    graph_module = fx.GraphModule(model, _Tracer().trace(model))
    modules = dict(graph_module.named_modules())
    return _integer_plan(graph_module.graph, modules, _folded(graph_module.graph, modules), frozenset(float_layers))[1]


def _folded(graph: fx.Graph, modules: dict) -> dict[fx.Node, nn.Module]:
    """Layer node -> the BatchNorm folded into it."""
    folded = {}
    for node in graph.nodes:
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and _single_user_layer(node.args[0], modules):
            folded[node.args[0]] = mod
    return folded


def _to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int, integer_kernels: bool,
             float_layers: frozenset[str]):
    import onnx
    from onnx import TensorProto, helper

    graph_module = fx.GraphModule(model, _Tracer().trace(model))
    modules = dict(graph_module.named_modules())
    g = _Graph()
    env: dict[fx.Node, str] = {}
    folded = _folded(graph_module.graph, modules)
    requantize, reasons = (_integer_plan(graph_module.graph, modules, folded, float_layers) if integer_kernels
                           else ({}, {}))

    def arg(a):
        if isinstance(a, fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return [arg(v) for v in a]
        return a

    out_name = None
    for node in graph_module.graph.nodes:
        where = str(node.target)
        if node.op == "placeholder":
            env[node] = "input"
        elif node.op == "output":
            out_name = env[node.args[0]]
        elif node.op == "call_module":
            mod = modules[node.target]
            x = arg(node.args[0])
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and node.args[0] in folded:
                env[node] = x  # already applied by the layer it follows
            elif isinstance(mod, (nn.Conv2d, nn.Linear)):
                env[node] = _layer(g, x, mod, where, folded.get(node), integer=reasons.get(where) == "")
            elif isinstance(mod, nn.BatchNorm2d):
                env[node] = g.op("BatchNormalization", [x, g.const(mod.weight.detach(), "bn_scale"),
                                                        g.const(mod.bias.detach(), "bn_bias"),
                                                        g.const(mod.running_mean, "bn_mean"),
                                                        g.const(mod.running_var, "bn_var")], where, epsilon=mod.eps)
            elif isinstance(mod, nn.ReLU):
                env[node] = g.op("Relu", [x], where)
            elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
                k, s, p = (_pair(v) for v in (mod.kernel_size, mod.stride, mod.padding))
                attrs = dict(kernel_shape=k, strides=s, pads=p + p, ceil_mode=int(mod.ceil_mode))
                if isinstance(mod, nn.AvgPool2d):
                    attrs["count_include_pad"] = int(mod.count_include_pad)
                elif _pair(mod.dilation) != [1, 1]:
                    raise ExportError(f"{where}: dilated max pooling is not supported")
                env[node] = g.op("MaxPool" if isinstance(mod, nn.MaxPool2d) else "AveragePool", [x], where, **attrs)
            elif isinstance(mod, nn.AdaptiveAvgPool2d) and _pair(mod.output_size) == [1, 1]:
                env[node] = g.op("GlobalAveragePool", [x], where)
            elif isinstance(mod, (nn.Identity, nn.Dropout)):
                env[node] = x
            elif isinstance(mod, nn.Flatten) and mod.end_dim == -1:
                env[node] = g.op("Flatten", [x], where, axis=mod.start_dim)
            elif isinstance(mod, _ACT_QUANTS):
                env[node] = _act_quant(g, x, mod, where, 2)
            else:
                raise ExportError(f"{where}: module {type(mod).__name__} has no ONNX export; allowed: Conv2d, Linear, "
                                  "BatchNorm, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Identity, "
                                  "Dropout and the activation quantizers")
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            env[node] = g.op("Add", [arg(node.args[0]), arg(node.args[1])])
        elif node.op == "call_function" and node.target is torch.cat:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            env[node] = g.op("Concat", arg(node.args[0]), axis=dim)
        elif (node.op, node.target) in _RELUS:
            env[node] = g.op("Relu", [arg(node.args[0])])
        elif _is_flatten(node):
            start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
            env[node] = g.op("Flatten", [arg(node.args[0])], axis=start)
        elif node.op == "call_method" and node.target == "mean":
            dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            keep = node.kwargs.get("keepdim", False)
            dims = [dims] if isinstance(dims, int) else list(dims)
            env[node] = g.op("ReduceMean", [arg(node.args[0]), g.const(np.array(dims, np.int64), "axes", np.int64)],
                             keepdims=int(keep))
        else:
            raise ExportError(f"{node.op} '{node.target}' has no ONNX export")
        if node in requantize:  # an integer layer's output, requantized at once by the next quantizer
            q, linear = requantize[node]
            env[node] = _act_quant(g, env[node], q, where, 4)
            if linear:  # a Linear written as a 1x1 Conv: back to (N, C)
                env[node] = _integer_reshape(g, env[node], [0, -1])
            g.dequantized[_grid_key(env[node], q)] = env[node]  # the next quantizer finds it done
    example = torch.zeros((1, *input_shape))
    with torch.no_grad():
        n_out = model(example).shape[1]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])
    g.nodes.append(helper.make_node("Identity", [out_name], ["logits"], name="logits"))
    g.prune(["logits"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_out])
    proto = helper.make_model(helper.make_graph(g.nodes, "nasq_ray", [inp], [out], g.inits),
                              opset_imports=[helper.make_opsetid("", opset)], producer_name="nasq-ray")
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(t) for t in v]


def run_onnx(proto, x: np.ndarray, batch_size: int = 256, optimize: bool = True) -> np.ndarray:
    """The logits onnxruntime computes for ``x`` (float32, batch first). ``optimize`` (the default)
    lets onnxruntime fuse the Q/DQ pairs into integer kernels (QLinearConv, ...), which requantize
    in integers and so may differ from fake-quant in the last step; ``False`` runs the graph as
    written (float arithmetic on the same integers: equal to fake-quant up to float rounding)."""
    from .runtime import session

    sess = session(proto.SerializeToString(), optimize=optimize)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.concatenate([sess.run(["logits"], {"input": x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])
