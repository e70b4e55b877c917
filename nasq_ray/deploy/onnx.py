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


def _act_quant(g: _Graph, x: str, q: nn.Module, where: str, rank: int) -> str:
    """The activation quantizer ``q`` applied to tensor ``x`` (of ``rank`` dimensions)."""
    if is_float(q.bits):
        return x
    if getattr(q, "dynamic", False):
        return _dynamic_quant(g, x, q, rank)
    if not bool(q.initialized):
        raise ExportError(f"{where}: its activation range was never observed (the model is untrained)")
    scale, zero_point = (float(v) for v in q.qparams())
    qmin, qmax = (int(v) for v in q.grid())
    dtype, lo, hi = _act_dtype(qmin, qmax)
    if (qmin, qmax) != (lo, hi):  # a grid narrower than the storage type: clip to its real range
        x = g.op("Clip", [x, g.const(np.float32((qmin - zero_point) * scale), "lo"),
                          g.const(np.float32((qmax - zero_point) * scale), "hi")])
    s, z = g.const(np.float32(scale), "a_scale"), g.const(int(zero_point), "a_zp", dtype)
    return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z], "q"), s, z], "dq")


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


def _layer(g: _Graph, x: str, mod: nn.Module, name: str, bn: nn.Module | None) -> str:
    """A Conv2d/Linear (fake-quant or float), its input quantizer and an optional folded BatchNorm."""
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
        w_int = g.const(q.numpy().astype(np.int64), f"{name}.weight_int", _weight_dtype(w_bits))
        attrs = {"axis": 0} if scale.size > 1 else {}
        weight = g.op("DequantizeLinear", [w_int, g.const(scale.astype(np.float32).reshape(-1) if scale.size > 1
                                                           else np.float32(scale.item()), f"{name}.w_scale")],
                      f"{name}.weight", **attrs)
    else:
        w = mod.weight.detach().double().numpy()
        w = w * mult.reshape((-1,) + (1,) * (w.ndim - 1))
        weight = g.const(w.astype(np.float32), f"{name}.weight")
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            raise ExportError(f"{name}: padding {mod.padding!r} / {mod.padding_mode} is not supported; allowed: "
                              "numeric zero padding")
        ph, pw = mod.padding
        y = g.op("Conv", [x, weight], name, kernel_shape=list(mod.kernel_size), strides=list(mod.stride),
                 pads=[ph, pw, ph, pw], dilations=list(mod.dilation), group=mod.groups)
        bias = bias.reshape(1, out_ch, 1, 1)
    else:
        y = g.op("Gemm", [x, weight], name, transB=1)
    if mod.bias is None and bn is None:
        return y
    # A separate Add keeps the bias in float32, as fake-quant computes it and the cost model counts
    # it; as the Conv's third input onnxruntime would round it to int32 at input scale x weight scale.
    return g.op("Add", [y, g.const(bias, f"{name}.bias")], f"{name}.add_bias")


def _single_user_layer(node: fx.Node, modules: dict) -> bool:
    return (node.op == "call_module" and isinstance(modules.get(node.target), (nn.Conv2d, nn.Linear))
            and len(node.users) == 1)


def to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int = OPSET):
    """An ``onnx.ModelProto`` computing what ``model`` computes in evaluation mode."""
    was_training = model.training
    try:
        return _to_onnx(model.eval(), input_shape, opset)
    finally:
        model.train(was_training)


def _to_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int):
    import onnx
    from onnx import TensorProto, helper

    graph_module = fx.GraphModule(model, _Tracer().trace(model))
    modules = dict(graph_module.named_modules())
    g = _Graph()
    env: dict[fx.Node, str] = {}
    folded: dict[fx.Node, nn.Module] = {}  # layer node -> the BatchNorm folded into it
    for node in graph_module.graph.nodes:
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and _single_user_layer(node.args[0], modules):
            folded[node.args[0]] = mod

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
                env[node] = _layer(g, x, mod, where, folded.get(node))
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
        elif (node.op, node.target) in (("call_function", torch.relu), ("call_function", F.relu),
                                        ("call_method", "relu")):
            env[node] = g.op("Relu", [arg(node.args[0])])
        elif (node.op, node.target) in (("call_method", "flatten"), ("call_function", torch.flatten)):
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
    example = torch.zeros((1, *input_shape))
    with torch.no_grad():
        n_out = model(example).shape[1]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])
    g.nodes.append(helper.make_node("Identity", [out_name], ["logits"], name="logits"))
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
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.concatenate([sess.run(["logits"], {"input": x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])
