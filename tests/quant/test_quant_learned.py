"""LSQ and PACT: their ranges are parameters that receive gradients and learn; quantizer choices
reach the model from the space."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasq_ray.quant import LayerBits, QuantConfig, quantize_
from nasq_ray.quant.learned import LSQAct, LSQWeight, PACTAct
from nasq_ray.errors import SearchSpaceError


def test_lsq_weight_grid_init_and_gradients():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    q = LSQWeight(8, 4, bits=4)
    out = q(w)
    step = q.step.detach()
    assert bool(q.initialized) and step.shape == (8, 1, 1, 1)
    ints = out.detach() / step
    assert torch.allclose(ints, ints.round(), atol=1e-4) and ints.abs().max() <= 7  # on the 4-bit grid
    out.pow(2).sum().backward()
    assert q.step.grad is not None and q.step.grad.abs().sum() > 0  # the step learns
    assert w.grad is not None and w.grad.abs().sum() > 0  # and the weights still do


@pytest.mark.parametrize("cls, param", [(LSQAct, "step"), (PACTAct, "alpha")])
def test_learned_activation_gradients_flow(cls, param):
    torch.manual_seed(0)
    x = torch.relu(torch.randn(16, 8)) * 3
    x.requires_grad_(True)
    q = cls(bits=3)
    y = q(x)
    assert not bool(q.signed)  # non-negative input: unsigned grid
    levels = torch.unique(y.detach())
    assert len(levels) <= 2 ** 3
    (y * torch.linspace(-1, 1, 8)).sum().backward()
    assert getattr(q, param).grad is not None and getattr(q, param).grad.abs() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pact_clipping_level_grows_when_it_clips_the_data():
    torch.manual_seed(0)
    q = PACTAct(bits=4)
    q(torch.full((4,), 2.0))  # initialises alpha at 2
    opt = torch.optim.SGD(q.parameters(), lr=0.05)
    x = torch.rand(256) * 8  # the data spans [0, 8]: alpha = 2 clips most of it
    for _ in range(100):
        opt.zero_grad()
        ((q(x) - x) ** 2).mean().backward()
        opt.step()
    assert float(q.alpha.detach()) > 5.0


def test_signed_inputs_get_a_signed_grid():
    q = LSQAct(bits=4)
    q(torch.linspace(-2, 2, 50))
    assert bool(q.signed) and q.grid() == (-7, 7)


def test_quantize_picks_the_quantizers_and_they_survive_a_checkpoint():
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    cfg = QuantConfig({"0": LayerBits(4, 4), "3": LayerBits(3, 6)}, w_quantizer="lsq", a_quantizer="pact")
    model = quantize_(net(), cfg)
    assert isinstance(model[0].w_quant, LSQWeight) and isinstance(model[3].act_quant, PACTAct)
    x = torch.randn(5, 1, 8, 8)
    model.train()
    model(x)
    model.eval()
    y = model(x)
    again = quantize_(net(), cfg)
    again.load_state_dict(model.state_dict())
    again.eval()
    assert torch.equal(again(x), y)


def test_unknown_quantizer_names_the_field():
    with pytest.raises(SearchSpaceError, match="quant.a_quantizer: unknown name 'lsqq'"):
        QuantConfig(a_quantizer="lsqq")


def test_space_searches_the_quantizer_choice(tmp_path):
    from nasq_ray.space import SearchSpace

    raw = {"input": "image", "input_shape": [1, 8, 8], "num_classes": 10,
           "stages": [{"channels": 8, "ops": "conv3x3"}],
           "quant": {"w_bits": [4], "a_bits": [4], "w_quantizer": ["minmax", "lsq"], "a_quantizer": ["ema", "pact"]}}
    space = SearchSpace(raw)
    assert {"quant.w_quantizer", "quant.a_quantizer"} <= set(space.names)
    cfg = space.sample(0)
    spec = space.decode({**cfg, "quant.w_quantizer": "lsq", "quant.a_quantizer": "pact"})
    assert spec.quant.w_quantizer == "lsq" and spec.quant.a_quantizer == "pact"
