"""Shared fixtures. Tests that start a search in this process share one local Ray cluster
(``ray_cluster``, session-scoped); the others start Ray in subprocesses or not at all."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

SHIPPED_SPACES = ("digits_small", "cifar_cnn", "fashion_cnn", "mlp")
# a generated space with every elastic dimension the super-network shares, small enough to train in seconds
ONESHOT_SPACE = """
name: tinyshot
stages:
  - {channels: [8, 16], repeats: [1, 2], ops: [conv3x3, dwsep3x3], connections: [sequential, residual]}
  - {channels: [16, 24], stride: 2, ops: [conv3x3, maxpool]}
head: {pool: avg, hidden_layers: 0}
quant: {w_bits: [4, 8], a_bits: [4, 8]}
train: {lr: 0.005, batch_size: 32}
"""


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Trials run with one torch thread; so do the tests (faster on 2 cores, and reproducible)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same torch random state, whatever ran before it: an input drawn with
    ``torch.randn`` is then the same on every run, so a comparison at a tolerance (fake-quant against
    ONNX, where a value on a rounding tie may round either way) passes or fails the same each time."""
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def spaces():
    """Every shipped network space, bound to its file's default input shape."""
    from nasq_ray.space import load_space

    return {name: load_space(name) for name in SHIPPED_SPACES}


@pytest.fixture(scope="session")
def digits():
    from nasq_ray.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(params=["native", "torch"])
def quant_backend(request):
    """Run a test with the fused C kernels (``quant.native``) and with torch operations alone."""
    from nasq_ray.quant import native

    if request.param == "native" and not native.available():
        pytest.skip("no C compiler: the fused kernels are not built")
    native.set_enabled(request.param == "native")
    yield request.param
    native.set_enabled(True)


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's one local Ray cluster."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
