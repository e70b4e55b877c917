"""Block ops, blocks and build_model: layer names agree with the modules that exist; determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import SHIPPED_SPACES
from nasq_ray.errors import UnknownNameError
from nasq_ray.models import OPS, BaseOp, Net, build_model, get_op, register_op
from nasq_ray.models.blocks import CONNECTIONS, MERGES, Block, block_layer_names
from nasq_ray.quant import ActFakeQuant, QuantConv2d, QuantLinear

N_CONFIGS = 30
SHAPES = [  # (in_ch, out_ch, stride)
    (4, 4, 1), (4, 8, 1), (8, 4, 1), (4, 4, 2), (3, 6, 2), (6, 6, 3), (1, 2, 2), (5, 5, 1),
]
HW = (7, 10)  # odd and even sizes, so that ceil(H / stride) matters


def _conv_paths(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def _layer_paths(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _out_hw(stride: int) -> tuple[int, int]:
    return tuple(math.ceil(s / stride) for s in HW)


def _x(in_ch: int, n: int = 2) -> torch.Tensor:
    return torch.randn((n, in_ch, *HW), generator=torch.Generator().manual_seed(in_ch))


# ----------------------------------------------------------------------------------------- ops


def test_builtin_ops_are_registered():
    assert {"conv3x3", "conv5x5", "conv1x1", "dwsep3x3", "dwsep5x5", "maxpool", "avgpool", "identity"} <= set(OPS)
    for name, cls in OPS.items():
        assert issubclass(cls, BaseOp) and cls.name == name


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("in_ch,out_ch,stride", SHAPES)
def test_op_layer_names_and_shape(op, in_ch, out_ch, stride):
    cls = OPS[op]
    torch.manual_seed(0)
    mod = cls(in_ch, out_ch, stride).eval()
    names = cls.layer_names(in_ch, out_ch, stride)
    assert len(names) == len(set(names))
    assert set(names) == set(_conv_paths(mod))
    assert not any(isinstance(m, nn.Linear) for m in mod.modules())
    with torch.no_grad():
        y = mod(_x(in_ch))
    assert y.shape == (2, out_ch, *_out_hw(stride))


@pytest.mark.parametrize("in_ch,out_ch,stride,expected", [
    (4, 4, 1, ()), (4, 4, 2, ("proj",)), (4, 8, 1, ("proj",)), (4, 8, 2, ("proj",)),
])
def test_identity_projects_only_when_shape_changes(in_ch, out_ch, stride, expected):
    assert tuple(OPS["identity"].layer_names(in_ch, out_ch, stride)) == expected


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_pool_projects_only_when_channels_change(op):
    assert tuple(OPS[op].layer_names(4, 4, 2)) == ()
    assert tuple(OPS[op].layer_names(4, 6, 1)) == ("proj",)
    assert tuple(OPS[op].layer_names(4, 6, 2)) == ("proj",)


def test_dwsep_is_depthwise_then_pointwise():
    mod = OPS["dwsep3x3"](6, 10, 2)
    assert mod.dw.groups == 6 and mod.dw.kernel_size == (3, 3) and mod.dw.stride == (2, 2)
    assert mod.pw.kernel_size == (1, 1) and mod.pw.out_channels == 10


# -------------------------------------------------------------------------------------- blocks

BLOCK_VARIANTS = [("sequential", None), ("residual", None), ("parallel", "sum"), ("parallel", "concat")]
BLOCK_SHAPES = [(4, 4, 1), (4, 8, 2), (6, 5, 1), (3, 6, 2)]


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("connection,merge", BLOCK_VARIANTS)
def test_block_layer_names_and_shape(op, connection, merge):
    assert connection in CONNECTIONS and (merge is None or merge in MERGES)
    branch_ops = sorted(OPS) if connection == "parallel" else [None]
    for op_b in branch_ops:
        for in_ch, out_ch, stride in BLOCK_SHAPES:
            torch.manual_seed(0)
            block = Block(op, connection, op_b, merge, in_ch, out_ch, stride).eval()
            names = block_layer_names(op, connection, op_b, merge, in_ch, out_ch, stride)
            where = (op, connection, op_b, merge, in_ch, out_ch, stride)
            assert len(names) == len(set(names)), where
            assert set(names) == set(_conv_paths(block)), where
            with torch.no_grad():
                y = block(_x(in_ch))
            assert y.shape == (2, out_ch, *_out_hw(stride)), where


def test_block_residual_and_parallel_semantics():
    torch.manual_seed(0)
    x = _x(4)
    res = Block("conv3x3", "residual", None, None, 4, 4, 1).eval()
    assert res.skip is None
    with torch.no_grad():
        assert torch.equal(res(x), res.op(x) + x)
    par = Block("conv3x3", "parallel", "maxpool", "concat", 4, 8, 1).eval()
    with torch.no_grad():
        y = par(x)
        assert torch.equal(y[:, :4], par.op(x)) and torch.equal(y[:, 4:], par.par(x))
    par_sum = Block("conv1x1", "parallel", "identity", "sum", 4, 4, 1).eval()
    with torch.no_grad():
        assert torch.equal(par_sum(x), par_sum.op(x) + x)


# ------------------------------------------------------------------------------- built models


@pytest.mark.parametrize("space_name", SHIPPED_SPACES)
def test_built_layers_match_space_layers_and_bits(spaces, space_name):
    space = spaces[space_name]
    kinds = set()
    for seed in range(N_CONFIGS):
        cfg = space.sample(seed)
        spec = space.decode(cfg)
        model = build_model(spec.arch, spec.quant)
        assert isinstance(model, Net)
        layers = space.layers(cfg)
        assert len(layers) == len(set(layers))
        assert set(_layer_paths(model)) == set(layers), (space_name, seed)
        assert set(spec.quant.layers) == set(layers), (space_name, seed)
        for name in layers:
            mod = model.get_submodule(name)
            bits = spec.quant.layers[name]
            assert cfg[f"{name}.w_bits"] == bits.w_bits and cfg[f"{name}.a_bits"] == bits.a_bits
            if bits.w_bits == 32 and bits.a_bits == 32:
                assert type(mod) in (nn.Conv2d, nn.Linear), (name, type(mod))
                kinds.add("float")
            else:
                assert isinstance(mod, (QuantConv2d, QuantLinear)), (name, type(mod))
                assert (mod.w_bits, mod.a_bits) == (bits.w_bits, bits.a_bits)
                assert isinstance(mod.act_quant, ActFakeQuant) and mod.act_quant.bits == bits.a_bits
                kinds.add("quant")
        if spec.quant.logit_bits < 32:
            assert isinstance(model.logit_quant, ActFakeQuant) and model.logit_quant.bits == spec.quant.logit_bits
            kinds.add("logit")
        else:
            assert type(model.logit_quant) is nn.Identity
            kinds.add("no-logit")
        model.eval()
        with torch.no_grad():
            y = model(torch.randn((2, *space.input_shape), generator=torch.Generator().manual_seed(seed)))
        assert y.shape == (2, space.num_classes) and torch.isfinite(y).all()
    assert {"quant", "logit", "no-logit"} <= kinds, kinds


def test_space_layers_are_in_forward_order(spaces):
    space = spaces["digits_small"]
    for seed in range(10):
        cfg = space.sample(seed)
        spec = space.decode(cfg)
        model = build_model(spec.arch, spec.quant).eval()
        order = []
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
                 for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        with torch.no_grad():
            model(torch.zeros((1, *space.input_shape)))
        for h in hooks:
            h.remove()
        layers = space.layers(cfg)
        # within a block, the shortcut and the parallel branch may run in any order: compare by block
        key = lambda n: n.split(".")[:2]  # noqa: E731
        assert [key(n) for n in order] == [key(n) for n in layers]


# ------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("space_name", SHIPPED_SPACES)
def test_build_model_is_deterministic(spaces, space_name):
    space = spaces[space_name]
    spec = space.decode(space.sample(7))
    a = build_model(spec.arch, spec.quant, seed=3).state_dict()
    b = build_model(spec.arch, spec.quant, seed=3).state_dict()
    c = build_model(spec.arch, spec.quant, seed=4).state_dict()
    assert list(a) == list(b) == list(c)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert a[[k for k in a if k.endswith("weight")][0]].numel() > 0


@pytest.mark.parametrize("space_name", SHIPPED_SPACES)
def test_build_model_does_not_touch_global_rng(spaces, space_name):
    space = spaces[space_name]
    spec = space.decode(space.sample(11))
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    expected = torch.rand(5)
    torch.manual_seed(1234)
    build_model(spec.arch, spec.quant, seed=0)
    build_model(spec.arch, None, seed=99)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(torch.rand(5), expected)


def test_build_model_unquantized_has_only_float_layers(spaces):
    space = spaces["cifar_cnn"]
    spec = space.decode(space.sample(2))
    model = build_model(spec.arch)
    assert not any(isinstance(m, (QuantConv2d, QuantLinear, ActFakeQuant)) for m in model.modules())
    assert type(model.logit_quant) is nn.Identity


# ----------------------------------------------------------------------------------- registry


def test_register_op_twice_raises():
    existing = OPS["conv3x3"]
    with pytest.raises(ValueError, match="conv3x3"):
        @register_op("conv3x3")
        class Again(BaseOp):  # noqa: F811
            pass
    assert OPS["conv3x3"] is existing

    name = "_test_models_tmp_op"
    assert name not in OPS
    try:
        @register_op(name)
        class Tmp(BaseOp):
            @classmethod
            def layer_names(cls, in_ch, out_ch, stride):
                return ()

        assert OPS[name] is Tmp and get_op(name) is Tmp and Tmp.name == name
        with pytest.raises(ValueError, match=name):
            register_op(name)(type("Tmp2", (BaseOp,), {}))
        assert OPS[name] is Tmp
    finally:
        OPS.pop(name, None)


def test_get_op_unknown_name_lists_valid_ops():
    with pytest.raises(UnknownNameError) as e:
        get_op("nope")
    msg = str(e.value)
    assert "'nope'" in msg
    for name in OPS:
        assert name in msg
    with pytest.raises(UnknownNameError, match=r"did you mean 'conv3x3'"):
        get_op("conv3x4")
    for name in OPS:
        assert get_op(name) is OPS[name]


# ------------------------------------------------------------------------------ the Python API's arguments

def test_build_model_and_measure_cost_name_a_wrong_argument():
    from torch import nn

    from nasq_ray.errors import ConfigError
    from nasq_ray.models import build_model, measure_cost
    from nasq_ray.space import load_space

    space = load_space("digits_small", input_shape=(1, 8, 8), num_classes=10)
    spec = space.decode(space.sample(0))
    model = build_model(spec.arch, spec.quant)
    cases = [
        (lambda: build_model(spec), "arch: expected an ArchSpec (pass spec.arch and spec.quant of a TrialSpec), got "
                                    "TrialSpec"),
        (lambda: build_model(spec.quant, spec.arch), "arch: expected an ArchSpec (space.decode(config).arch), got "
                                                     "QuantConfig"),
        (lambda: build_model(spec.arch, {"layers": {}}), "quant: expected a QuantConfig or None"),
        (lambda: build_model(spec.arch, spec.quant, seed=1.5), "seed: 1.5 is not allowed"),  # torch truncated it
        (lambda: measure_cost(model, (3, 8, 8)), "input_shape: (3, 8, 8) does not fit the model (Given groups=1"),
        (lambda: measure_cost(model, (1, 0, 8)), "input_shape: (1, 0, 8) is not allowed; allowed: a tuple of positive"),
        (lambda: measure_cost(model, 64), "input_shape: 64 is not allowed"),
        (lambda: measure_cost(nn.ReLU(), (1, 8, 8)), "model: expected a torch.nn.Module with parameters, got a ReLU "
                                                     "without parameters"),  # was a bare StopIteration
        (lambda: measure_cost(nn.Linear(10, 2), (5,)), "input_shape: (5,) does not fit the model (mat1 and mat2"),
    ]
    for call, needle in cases:
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value).startswith(needle) and "\n" not in str(e.value), str(e.value)
    assert measure_cost(nn.Linear(10, 2), (10,))[0].macs == 20


def test_register_op_wants_a_name_and_an_op_class():
    with pytest.raises(TypeError, match="the op's name must be a non-empty string, got 5"):
        register_op(5)
    with pytest.raises(TypeError, match=r"register_op\('not_an_op'\): expected a subclass of nasq_ray.models.BaseOp"):
        register_op("not_an_op")(42)
    assert "not_an_op" not in OPS
