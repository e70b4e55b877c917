"""Export the trained models of a results folder (packed file and ONNX) and check them against
fake-quant on the test split.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
import torch
from ..errors import ConfigError
from ..results.files import read_trials_table, typed_config
from ..trials.base import CHECKPOINT_FILE, read_checkpoint
from .packed import fake_quant_weights, pack_model, restored_weights, unpack


BENCHMARK_BATCHES = (1, 64)
OWN_PREFIX = "net."  # a user model sits in OwnNet.net: its space names the layers without it
KERNEL_MODES = ("measured", "integer")  # qualifying layers on integer kernels where they measured faster | all
ONNX_TOLERANCE_PP = 0.5  # onnxruntime's test accuracy may differ from fake-quant's by this much


def export_run(result_dir: str | Path, trial: str | None = None, pareto: bool = False,
               fmt: str = "onnx", benchmark: bool = False, kernels: str = "measured") -> list[dict]:
    """Export the chosen models of a finished run; return one summary dict per model. ``benchmark``:
    also onnxruntime latency (1 thread, batch 1 and 64) of the export and of the float model.
    ``kernels``: ``measured`` writes a qualifying layer for integer kernels unless the model measured
    faster with it on a float kernel on this machine (``latency.faster_float_layers``); ``integer``:
    every qualifying layer."""
    if kernels not in KERNEL_MODES:
        raise ConfigError(f"kernels: {kernels!r} is not allowed; allowed: {', '.join(KERNEL_MODES)}")
    from ..config import saved_config
    from ..trials.training import accuracy_f1, predict_batches

    folder = Path(result_dir).expanduser().resolve()
    cfg = saved_config(folder, "export")
    if not (folder / "trials.csv").is_file():
        raise ConfigError(f"export: '{folder}' holds no finished nasq-ray run (no trials.csv: it is written when a "
                          "run ends; wait for a running one, or --resume an interrupted one)")
    rows = read_trials_table(folder / ("pareto.csv" if pareto else "trials.csv"), "export")
    phase = _phases(cfg)
    kind, prep, _ = phase(None)
    space = prep.space
    if space.is_abstract:
        raise ConfigError(f"export: '{folder}' is a run of trial kind '{kind.name}' on an abstract space: its trials "
                          "looked their metrics up and trained no network, so there is no model to export")
    if trial is not None:
        rows = [r for r in rows if r["trial_id"] == trial]
        if not rows:
            raise ConfigError(f"trial: no trial '{trial}' in {folder / 'trials.csv'}")
    elif not pareto:
        best = _best_trial(folder / "best.json")
        rows = [r for r in rows if r["trial_id"] == best]
    if not rows:
        raise ConfigError(f"export: '{folder}' has no finished trial to export (no best trial, empty front)")
    out_dir = folder / "export"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"export: '{out_dir}' is a file; the models are written into a folder of that name: move the "
                          "file away")
    out_dir.mkdir(exist_ok=True)
    summaries = []
    test = prep.test
    if test is None and fmt == "onnx":
        raise ConfigError("export: the run's data has no test split to check the ONNX model on; give the data "
                          "factory a 'test' Dataset, or use --format packed")
    for row in rows:
        kind, prep, experiment = phase(row.get("phase") or None)
        checkpoints = sorted((experiment / f"trial_{row['trial_id']}").glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
        if not checkpoints and kind.model_in_checkpoint:
            raise ConfigError(f"trial: trial '{row['trial_id']}' has no checkpoint in {experiment}")
        if row.get("status") not in (None, "", "complete"):  # said, not refused: the user named it
            print(f"warning: trial {row['trial_id']} is {row['status']} (trained {row.get('epochs') or '?'} of "
                  f"{cfg.search.max_epochs} epochs): exporting its last checkpoint", file=sys.stderr)
        state = read_checkpoint(checkpoints[-1].parent) if checkpoints else None
        model = kind.trained_model(typed_config(prep.space, row), state, prep).eval()
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
            from .onnx import float_onnx, integer_plan, run_onnx, to_onnx
            from .latency import faster_float_layers
            from .runtime import latency_ms, layer_kernels

            floats = faster_float_layers(model, space.input_shape) if kernels == "measured" else frozenset()
            proto = to_onnx(model, space.input_shape, float_layers=floats)
            onnx_path = out_dir / f"{row['trial_id']}.onnx"
            onnx_path.write_bytes(proto.SerializeToString())
            float_path = out_dir / f"{row['trial_id']}.float.onnx"  # the same network in float, for comparison
            float_path.write_bytes(float_onnx(model, space.input_shape).SerializeToString())
            kernels = layer_kernels(proto, integer_plan(model, floats))
            if kind.name == "own_model":  # a user model's layers, named as in its space
                kernels = [replace(k, layer=k.layer.removeprefix(OWN_PREFIX)) for k in kernels]
            summary["kernels"] = kernels
            if benchmark:
                summary["latency_ms"] = {
                    (which, batch): latency_ms(path.read_bytes(), space.input_shape, batch)
                    for which, path in (("float", float_path), ("export", onnx_path)) for batch in BENCHMARK_BATCHES}
            fq_pred, y_test = predict_batches(model, test.eval())
            ort_pred = torch.cat([torch.from_numpy(run_onnx(proto, xb.cpu().numpy()).argmax(axis=1))
                                  for xb, _ in test.eval()])
            summary.update(onnx_path=str(onnx_path), onnx_bytes=onnx_path.stat().st_size, test_n=len(y_test),
                           fq_test_acc=accuracy_f1(fq_pred, y_test, space.num_classes)[0],
                           onnx_test_acc=accuracy_f1(ort_pred, y_test, space.num_classes)[0],
                           changed=int((fq_pred != ort_pred).sum()))
        summaries.append(summary)
    return summaries


def _best_trial(path: Path) -> str | None:
    """The trial best.json names (None without the file)."""
    if not path.is_file():
        return None
    try:
        best = json.loads(path.read_text())["trial_id"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"export: {path} is damaged ({type(e).__name__}); it names the best trial as "
                          "{\"trial_id\": ...}: export one with --trial ID (trials.csv lists them), or --pareto") from None
    return str(best)


def _phases(cfg):
    """``phase(name)``: trial kind, prepared inputs and experiment folder of the trials of a row's
    ``phase`` (None, or a phase the run does not have: the run's own), each phase prepared once,
    when a row first needs it. A one-shot run's rows are of phase 2 (``oneshot``: sub-networks with
    the super-network's weights, in the run's folder) and phase 3 (``finetune``: in its ``finetune/``
    folder); best.json and pareto.csv name phase 3's where it ran."""
    from ..trials import prepare

    configs, default = {None: cfg}, None
    if cfg.search.mode == "oneshot":
        from ..search.oneshot import PHASE3, phase_configs, phase_state

        _, p2, p3 = phase_configs(cfg)
        configs, default = {"oneshot": p2}, "oneshot"
        if (p3.out_dir / "trials.csv").is_file():
            configs[PHASE3] = p3
            if phase_state(cfg.out_dir).get(PHASE3) == "done":  # the folder's files are phase 3's once it ended
                default = PHASE3
    prepared: dict = {}

    def phase(name):
        key = name if name in configs else default
        if key not in prepared:
            pcfg = configs[key]
            kind, prep = prepare(pcfg)
            prepared[key] = kind, prep, Path(pcfg.local_experiment_dir or pcfg.out_dir)
        return prepared[key]

    return phase


def acc_gap_pp(r: dict) -> float:
    return (r["onnx_test_acc"] - r["fq_test_acc"]) * 100
