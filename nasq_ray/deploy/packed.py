"""The bit-packed export: exactly ``w_bits`` per weight plus what ``size_bits`` counts, restored bit-exactly.
"""

from __future__ import annotations

import io
import json
import struct
import numpy as np
import torch
from torch import nn
from ..models.builder import batchnorm_after
from ..quant.fake_quant import is_float, signed_range
from ..quant.modules import QuantConv2d, QuantLinear


MAGIC = b"NQW1"


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned integers < 2**bits, ``bits`` bits each, least significant bit first."""
    codes = np.asarray(codes, dtype=np.uint32).ravel()
    planes = (codes[:, None] >> np.arange(bits, dtype=np.uint32)) & 1
    return np.packbits(planes.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    return (flat.reshape(count, bits).astype(np.uint32) << np.arange(bits, dtype=np.uint32)).sum(axis=1)


def _f32(t) -> bytes:
    return np.asarray(torch.as_tensor(t).detach().cpu(), dtype=np.float32).ravel().tobytes()


def _dynamic(act_quant: nn.Module) -> bool:
    return bool(getattr(act_quant, "dynamic", False))


def _act_qparams(layer: nn.Module) -> tuple[float, float]:
    q = layer.act_quant
    return q.qparams() if hasattr(q, "qparams") else (1.0, 0.0)


def pack_model(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The packed weights file of a (fake-quant) model."""
    bn_of = batchnorm_after(model, input_shape)
    body = io.BytesIO()
    layers = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        entry = {"name": name, "kind": "conv" if isinstance(mod, nn.Conv2d) else "linear",
                 "shape": list(mod.weight.shape), "w_bits": int(getattr(mod, "w_bits", 32)),
                 "a_bits": int(getattr(mod, "a_bits", 32)),
                 "w_quantizer": getattr(mod, "w_quantizer", None), "parts": {}}

        def put(part: str, data: bytes) -> None:
            entry["parts"][part] = [body.tell(), len(data)]
            body.write(data)

        quantized = isinstance(mod, (QuantConv2d, QuantLinear))
        if quantized and not is_float(mod.w_bits):
            q, scale = mod.integer_weight()
            codes = (q > 0).to(torch.int64) if mod.w_bits == 1 else (q + signed_range(mod.w_bits)[1]).to(torch.int64)
            put("weight", pack_codes(codes.numpy(), mod.w_bits))
            put("scale", _f32(scale))
        else:
            put("weight", _f32(mod.weight))
        if mod.bias is not None:
            put("bias", _f32(mod.bias))
        bn = bn_of.get(name)
        if bn is not None:
            bn_scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            put("bn", _f32(bn_scale) + _f32(bn.bias.detach() - bn.running_mean * bn_scale))
            entry["bn_channels"] = bn.num_features
        if quantized and not is_float(mod.a_bits):
            entry["a_mode"] = "dynamic" if _dynamic(mod.act_quant) else "static"
            if not _dynamic(mod.act_quant):
                put("act", _f32(_act_qparams(mod)))
                entry["a_grid"] = list(mod.act_quant.grid())
        layers.append(entry)
    header = {"format": "nasq-ray packed weights 1", "layers": layers}
    logit = getattr(model, "logit_quant", None)
    if logit is not None and hasattr(logit, "qparams") and not is_float(logit.bits) and not _dynamic(logit):
        header["logit"] = [body.tell(), 8]
        body.write(_f32(logit.qparams()))
    head = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + body.getvalue()


def unpack(data: bytes) -> tuple[dict, bytes]:
    """Header and body of a packed weights file."""
    if data[:4] != MAGIC:
        raise ValueError("not a nasq-ray packed weights file (bad magic)")
    (n,) = struct.unpack("<I", data[4:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def body_bits(data: bytes) -> int:
    return len(unpack(data)[1]) * 8


def restored_weights(data: bytes) -> dict[str, torch.Tensor]:
    """Layer name -> the weight the packed file describes (the fake-quant weight, bit for bit)."""
    header, body = unpack(data)
    out = {}
    for layer in header["layers"]:
        shape, bits = layer["shape"], layer["w_bits"]
        start, size = layer["parts"]["weight"]
        raw = body[start:start + size]
        if is_float(bits):
            out[layer["name"]] = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy()).reshape(shape)
            continue
        count = int(np.prod(shape))
        codes = torch.from_numpy(unpack_codes(raw, bits, count).astype(np.int64)).reshape(shape)
        q = (codes * 2 - 1) if bits == 1 else codes - signed_range(bits)[1]
        s0, n0 = layer["parts"]["scale"]
        scale = torch.from_numpy(np.frombuffer(body[s0:s0 + n0], dtype=np.float32).copy())
        scale = scale.reshape((-1,) + (1,) * (len(shape) - 1))  # per channel, or one per tensor
        out[layer["name"]] = q.to(torch.float32) * scale
    return out


def fake_quant_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Layer name -> the weight the fake-quant forward pass uses."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (QuantConv2d, QuantLinear)):
            with torch.no_grad():
                out[name] = mod.quantized_weight().detach().clone()
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            out[name] = mod.weight.detach().clone()
    return out
