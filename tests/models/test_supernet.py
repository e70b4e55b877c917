"""The super-network: sub-networks computed with the shared weights equal the stand-alone networks
with those weights copied in; gradients reach the shared weights; recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasq_ray.models.supernet import SuperNet, sandwich
from nasq_ray.space import load_space


@pytest.mark.parametrize("name", ["digits_small", "cifar_cnn", "fashion_cnn", "mlp"])
def test_a_sub_network_computes_what_the_stand_alone_network_with_the_copied_weights_computes(name):
    space = load_space(name)
    net = SuperNet(space, seed=0)
    rng = np.random.default_rng(0)
    x = torch.randn(8, *space.input_shape, generator=torch.Generator().manual_seed(0))
    for _ in range(4):
        spec = space.decode(space.sample(rng))
        net.train()
        net(x, spec)  # observe ranges, move BatchNorm statistics
        net.eval()
        shared = net(x, spec)
        alone = net.subnet(spec).eval()(x)
        assert torch.allclose(shared, alone, atol=1e-5)


def test_widths_are_leading_slices_and_gradients_reach_the_shared_weights():
    space = load_space("digits_small")
    net = SuperNet(space, seed=0)
    big, small = (space.decode(c) for c in sandwich(space, np.random.default_rng(3), n_random=0))
    sub = net.subnet(small)
    name = "s0.b0.op." + next(n for n, _ in sub.named_parameters() if n.startswith("s0.b0.op."))[len("s0.b0.op."):]
    shared = net.weights[net.store_key(name, small.arch).replace(".", "/")]
    w = sub.get_parameter(name)
    assert torch.equal(w, shared[tuple(slice(0, n) for n in w.shape)])
    net.train()
    torch.nn.functional.cross_entropy(net(torch.randn(4, 1, 8, 8), big), torch.tensor([0, 1, 2, 3])).backward()
    assert sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters()) > 5
    assert big.arch.stages[0][0].out_ch == 24 and small.arch.stages[0][0].out_ch == 8  # widest and narrowest
