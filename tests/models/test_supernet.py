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


def test_every_sub_network_of_a_sandwich_step_learns_from_the_labels():
    """Not from the largest's outputs: its ops are drawn per step, so it is no steady teacher."""
    from nasq_ray.trials.supernet import sandwich_step

    space = load_space("digits_small")
    x, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10
    configs = sandwich(space, np.random.default_rng(3), n_random=2)

    def grads(run):
        net = SuperNet(space, seed=0).train()
        run(net)
        return {k: p.grad.clone() for k, p in net.weights.items() if p.grad is not None}

    step = grads(lambda net: sandwich_step(net, space, x, y, configs))
    alone = [grads(lambda net, c=c: torch.nn.functional.cross_entropy(net(x, space.decode(c)), y).backward())
             for c in configs]
    assert set(step) == set().union(*alone)
    for k, g in step.items():  # the sum of each sub-network's cross-entropy gradient
        assert torch.allclose(g, sum(a[k] for a in alone if k in a), atol=1e-5), k
