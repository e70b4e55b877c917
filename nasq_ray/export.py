"""``python -m nasq_ray.export RESULT_DIR [--trial ID | --pareto] [--format onnx|packed]``: the chosen
models as real integers, checked against the fake-quant models the search scored.

Writes, per model, ``OUT/NAME/export/<trial>.onnx`` (with ``--format onnx``, the default): an ONNX
model with QuantizeLinear/DequantizeLinear and integer weights (see ``onnx_export``), run with
onnxruntime on the test split, its accuracy printed beside the fake-quant model's; and
``OUT/NAME/export/<trial>.nqw``: a bit-packed weights file that holds exactly
``w_bits`` bits per weight, plus what the cost model's ``size_bits`` counts beside them (32 bits
each): per-channel weight scales, biases, the following BatchNorm in its inference form (scale and
shift per channel), each quantized layer's input scale and zero point, and the logit quantizer's.
Unpacking gives back the fake-quant weights bit for bit (``unpack`` + ``restored_weights``).

File layout: ``b"NQW1"``, a little-endian uint32 header length, a JSON header (layers in forward
order: name, kind, shape, bits, quantizer, byte offsets of each part), then the body. Integer
weights are stored as unsigned codes ``q + qmax`` (1 bit: ``q > 0``), least significant bit first.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, NasqError
from .models.builder import batchnorm_after
from .quant.fake_quant import is_float, signed_range
from .quant.modules import QuantConv2d, QuantLinear

MAGIC = b"NQW1"


# ------------------------------------------------------------------------------------- bit packing

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


# ------------------------------------------------------------------------------------------- CLI

def _typed(space, row: dict) -> dict:
    """A trial's config from a CSV row, each value in its parameter's type."""
    from .space import Choice, Float, Int, Ordinal

    config = {}
    for name in space.names:
        text = row.get(name, "")
        if text in ("", None):
            continue
        dom = space.param(name).domain
        if isinstance(dom, (Choice, Ordinal)):
            config[name] = next((v for v in dom.values if str(v) == text), text)
        elif isinstance(dom, Int):
            config[name] = int(float(text))
        elif isinstance(dom, Float):
            config[name] = float(text)
    return config


ONNX_TOLERANCE_PP = 0.5  # onnxruntime's test accuracy may differ from fake-quant's by this much


def export_run(result_dir: str | Path, trial: str | None = None, pareto: bool = False,
               fmt: str = "onnx") -> list[dict]:
    """Export the chosen models of a finished run; return one summary dict per model."""
    from .train import accuracy_f1, predict
    from .trial import load_trained
    from .tune import local_experiment_dir, prepare, saved_config

    folder = Path(result_dir).expanduser().resolve()
    cfg = saved_config(folder, "export")
    if not (folder / "trials.csv").is_file():
        raise ConfigError(f"export: '{folder}' holds no finished nasq-ray run (no trials.csv)")
    prep = prepare(cfg)
    if prep.table is not None:
        raise ConfigError("export: a tabular run trained no models; nothing to export")
    space = prep.space
    with open(folder / ("pareto.csv" if pareto else "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    if trial is not None:
        rows = [r for r in rows if r["trial_id"] == trial]
        if not rows:
            raise ConfigError(f"trial: no trial '{trial}' in {folder / 'trials.csv'}")
    elif not pareto:
        best = json.loads((folder / "best.json").read_text())["trial_id"] if (folder / "best.json").is_file() else None
        rows = [r for r in rows if r["trial_id"] == best]
    out_dir = folder / "export"
    out_dir.mkdir(exist_ok=True)
    summaries = []
    experiment = local_experiment_dir(cfg) or folder
    test = prep.dataset.test
    x_test, y_test = torch.from_numpy(np.ascontiguousarray(test.x)), torch.from_numpy(test.y)
    for row in rows:
        checkpoints = sorted((experiment / f"trial_{row['trial_id']}").glob("checkpoint_*/state.pt"))
        if not checkpoints:
            raise ConfigError(f"trial: trial '{row['trial_id']}' has no checkpoint in {experiment}")
        state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
        model = load_trained(space, _typed(space, row), state["model"], seed=cfg.search.seed).eval()
        data = pack_model(model, space.input_shape)
        path = out_dir / f"{row['trial_id']}.nqw"
        path.write_bytes(data)
        expected = int(float(row["size_bits"]))  # the cost model's size, as the search measured it
        restored, fake = restored_weights(data), fake_quant_weights(model)
        exact = all(torch.equal(restored[k], fake[k]) for k in fake)
        body = unpack(data)[1]
        summary = {"trial_id": row["trial_id"], "path": str(path), "body_bits": len(body) * 8,
                   "size_bits": expected, "header_bytes": len(data) - len(body), "exact": exact}
        if fmt == "onnx":
            from .onnx_export import run_onnx, to_onnx

            proto = to_onnx(model, space.input_shape)
            onnx_path = out_dir / f"{row['trial_id']}.onnx"
            onnx_path.write_bytes(proto.SerializeToString())
            with torch.no_grad():
                fq_pred = predict(model, x_test)
            ort_pred = torch.from_numpy(run_onnx(proto, test.x).argmax(axis=1))
            summary.update(onnx_path=str(onnx_path), onnx_bytes=onnx_path.stat().st_size, test_n=len(test),
                           fq_test_acc=accuracy_f1(fq_pred, y_test, space.num_classes)[0],
                           onnx_test_acc=accuracy_f1(ort_pred, y_test, space.num_classes)[0],
                           changed=int((fq_pred != ort_pred).sum()))
        summaries.append(summary)
    return summaries


def _acc_gap_pp(r: dict) -> float:
    return (r["onnx_test_acc"] - r["fq_test_acc"]) * 100


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nasq_ray.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("result_dir", metavar="RESULT_DIR")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--trial", metavar="ID", help="one trial (default: the best trial)")
    which.add_argument("--pareto", action="store_true", help="every model of the Pareto front")
    ap.add_argument("--tolerance-pp", type=float, default=ONNX_TOLERANCE_PP, metavar="PP",
                    help="largest allowed |onnxruntime - fake-quant| test accuracy, in percentage points "
                         f"(default {ONNX_TOLERANCE_PP}); beyond it the command exits 1")
    ap.add_argument("--format", choices=["onnx", "packed"], default="onnx",
                    help="onnx: ONNX Q/DQ model checked in onnxruntime, and the packed weights file (default); "
                         "packed: the packed weights file only")
    args = ap.parse_args(argv)
    if not args.tolerance_pp >= 0:
        print(f"error: --tolerance-pp: {args.tolerance_pp} is not allowed; allowed: a number >= 0", file=sys.stderr)
        return 2
    try:
        rows = export_run(args.result_dir, args.trial, args.pareto, args.format)
    except NasqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    onnx = args.format == "onnx"
    head = f"{'trial':<10} "
    if onnx:
        head += f"{'fake-quant test':>15} {'onnxruntime':>11} {'diff pp':>7} {'changed':>7}  "
    print(head + f"{'packed bits':>12} {'size_bits':>10} {'diff':>7} {'header B':>9}  restored == fake-quant")
    for r in rows:
        line = f"{r['trial_id']:<10} "
        if onnx:
            line += (f"{r['fq_test_acc']:>15.4f} {r['onnx_test_acc']:>11.4f} {_acc_gap_pp(r):>+7.2f} "
                     f"{r['changed']:>7}  ")
        diff = (r["body_bits"] - r["size_bits"]) / r["size_bits"] * 100
        print(line + f"{r['body_bits']:>12,} {r['size_bits']:>10,} {diff:>+6.2f}% {r['header_bytes']:>9}  "
              f"{'yes' if r['exact'] else 'NO'}  {r.get('onnx_path', r['path'])}")
    ok = all(r["exact"] for r in rows)
    if onnx:
        print(f"test split: {rows[0]['test_n'] if rows else 0} samples; changed = test predictions that differ "
              "between onnxruntime and fake-quant")
        off = [r["trial_id"] for r in rows if abs(_acc_gap_pp(r)) > args.tolerance_pp]
        if off:
            print(f"onnxruntime accuracy differs from fake-quant by more than {args.tolerance_pp} pp for: "
                  f"{', '.join(off)}", file=sys.stderr)
        ok = ok and not off
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
