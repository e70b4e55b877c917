"""Where onnxruntime's integer kernels lose to its float ones (issue 13): one layer at a time, the
time onnxruntime spends in the layer's kernel at batch 64, 1 thread, as a fused integer kernel
(``QLinearConv``: UINT8 activations, INT8 per-channel symmetric weights, INT32 bias, ReLU absorbed;
what ``nasq_ray.deploy.onnx.to_onnx`` writes for an 8/8 layer) and as a float ``Conv`` + ReLU (what
the float ONNX model runs: onnxruntime's NCHWc kernels). Only the layer's own kernel is timed (the
profiler's node time, median over repeats), not the Quantize/Dequantize, Transpose or reorder nodes
at the graph's edges, which a whole network pays once.

The layers are the shapes of the generated spaces: ``fashion_cnn`` reads a 1-channel 28x28 image
(its first layer, and a ``dwsep`` op's depthwise and pointwise convolutions or a residual 1x1
projection when they come first) and offers depthwise-separable ops; ``cifar_cnn``'s layers read 3
or more channels.

    OMP_NUM_THREADS=1 python benchmarks/kernels.py [--repeats 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

# name, input channels, output channels, kernel, groups, height = width
LAYERS = [
    ("conv3x3 1->16 (first layer)", 1, 16, 3, 1, 28),
    ("conv3x3 1->24 (first layer)", 1, 24, 3, 1, 28),
    ("conv5x5 1->16 (first layer)", 1, 16, 5, 1, 28),
    ("conv1x1 1->16 (first pw / skip)", 1, 16, 1, 1, 28),
    ("depthwise3x3 1 ch (first dwsep)", 1, 1, 3, 1, 28),
    ("conv3x3 3->16 (cifar first layer)", 3, 16, 3, 1, 32),
    ("depthwise3x3 8 ch", 8, 8, 3, 8, 28),
    ("depthwise3x3 16 ch", 16, 16, 3, 16, 28),
    ("depthwise3x3 24 ch", 24, 24, 3, 24, 28),
    ("depthwise5x5 32 ch", 32, 32, 5, 32, 14),
    ("depthwise3x3 48 ch", 48, 48, 3, 48, 14),
    ("depthwise3x3 64 ch", 64, 64, 3, 64, 7),
    ("conv3x3 8->16", 8, 16, 3, 1, 28),
    ("conv3x3 16->32", 16, 32, 3, 1, 14),
    ("conv3x3 24->48", 24, 48, 3, 1, 14),
    ("conv3x3 32->64", 32, 64, 3, 1, 7),
    ("conv1x1 16->32", 16, 32, 1, 1, 14),
    ("conv1x1 32->96", 32, 96, 1, 1, 7),
]
BATCH = 64


def layer_model(cin: int, cout: int, k: int, groups: int, hw: int, integer: bool) -> bytes:
    """One convolution + ReLU as ONNX: float, or in the QDQ form onnxruntime fuses to QLinearConv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    w = rng.integers(-127, 128, size=(cout, cin // groups, k, k)).astype(np.int8)
    attrs = dict(kernel_shape=[k, k], pads=[k // 2] * 4, group=groups)
    if not integer:
        const("w", w.astype(np.float32) * 0.01)
        const("b", np.zeros(cout, np.float32))
        nodes += [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs), helper.make_node("Relu", ["c"], ["y"])]
    else:
        for name, value in (("xs", np.array(0.02, np.float32)), ("xz", np.array(0, np.uint8)),
                            ("ys", np.array(0.05, np.float32)), ("yz", np.array(0, np.uint8)), ("wq", w),
                            ("ws", np.full(cout, 0.01, np.float32)), ("wz", np.zeros(cout, np.int8)),
                            ("bq", np.zeros(cout, np.int32)), ("bs", np.full(cout, 2e-4, np.float32)),
                            ("bz", np.zeros(cout, np.int32))):
            const(name, value)
        nodes += [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
                  helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], axis=0),
                  helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], **attrs),
                  helper.make_node("Relu", ["c"], ["r"]),
                  helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [BATCH, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def kernel_ms(model: bytes, cin: int, hw: int, repeats: int, folder: str) -> tuple[float, str]:
    """The median time of the layer's convolution kernel (ms) and the operator onnxruntime ran."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(folder, "layer")
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    x = np.abs(np.random.default_rng(1).normal(size=(BATCH, cin, hw, hw))).astype(np.float32)
    for _ in range(repeats):
        session.run(None, {"x": x})
    events = json.load(open(session.end_profiling()))
    conv = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
            and e["args"]["op_name"] in ("Conv", "FusedConv", "QLinearConv")]
    times = [e["dur"] for e in conv][len(conv) // 4:]  # the first quarter warms up
    return float(np.median(times)) / 1000, conv[-1]["args"]["op_name"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}; kernel time per layer, batch {BATCH}, 1 thread, median of "
          f"{args.repeats - args.repeats // 4} runs")
    print(f"{'layer':<36} {'float ms':>8} {'integer ms':>10} {'integer op':>11} {'int/float':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for name, cin, cout, k, groups, hw in LAYERS:
            f, _ = kernel_ms(layer_model(cin, cout, k, groups, hw, False), cin, hw, args.repeats, folder)
            q, op = kernel_ms(layer_model(cin, cout, k, groups, hw, True), cin, hw, args.repeats, folder)
            print(f"{name:<36} {f:>8.3f} {q:>10.3f} {op:>11} {q / f:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
