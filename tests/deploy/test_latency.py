"""Latency as a cost: one onnxruntime measurement per network structure and machine, cached."""

from __future__ import annotations

import torch

from nasq_ray.deploy import latency, runtime
from nasq_ray.models import build_model
from nasq_ray.space import load_space


def _spec(space, cfg):
    spec = space.decode(cfg)
    return spec, build_model(spec.arch, spec.quant, seed=0)


def test_a_network_is_timed_once_per_structure_and_read_back_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NASQ_RAY_CACHE", str(tmp_path))
    timed = []
    real = runtime.latency_ms
    monkeypatch.setattr(runtime, "latency_ms", lambda *a, **k: timed.append(a) or real(*a, **k))
    space = load_space("digits_small")
    cfg = space.sample(3)
    spec, model = _spec(space, cfg)
    key = latency.structure_key(spec.arch, spec.quant)
    x = torch.randn(16, *space.input_shape)
    first = latency.model_latency_ms(lambda: model, space.input_shape, x, key)
    assert first > 0 and len(timed) == 1
    assert timed[0][2] == latency.LATENCY_BATCH  # batch 1, one thread
    # the same network with other training hyperparameters: same key, read from the cache
    other_train = {**cfg, "train.lr": cfg["train.lr"] * 2}
    spec2, model2 = _spec(space, other_train)
    assert latency.structure_key(spec2.arch, spec2.quant) == key
    assert latency.model_latency_ms(lambda: model2, space.input_shape, x, key) == first and len(timed) == 1
    (entry,) = (tmp_path / "latency").glob("*/*.json")
    assert entry.parent.name == latency.node_type() and entry.stem == key
    # other bits: another structure
    bits = next(k for k in cfg if k.endswith(".w_bits"))
    other = {**cfg, bits: 8 if cfg[bits] != 8 else 4}
    spec3, _ = _spec(space, other)
    assert latency.structure_key(spec3.arch, spec3.quant) != key
    # the model itself is left as it was (ranges observed on a copy)
    assert all(not bool(getattr(m, "initialized", False)) for m in model.modules())


def test_without_a_writable_cache_the_network_is_measured_each_time(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NASQ_RAY_CACHE", str(blocker))  # a file, not a folder: nothing can be stored
    space = load_space("digits_small")
    spec, model = _spec(space, space.sample(0))
    key = latency.structure_key(spec.arch, spec.quant)
    assert latency.model_latency_ms(lambda: model, space.input_shape, torch.randn(8, *space.input_shape), key) > 0
    assert latency.cached_latency_ms(key) is None
