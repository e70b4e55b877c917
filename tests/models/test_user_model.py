"""A user's own model: the factory, the weights file, tracing, and the space derived from it."""

from __future__ import annotations

import sys

import pytest
import torch

from nasq_ray.errors import ConfigError, SearchSpaceError
from nasq_ray.models.pruning import prune_groups
from nasq_ray.models.user import check_model_on_input, load_weights_, make_model, read_weights, trace_model
from nasq_ray.space.model_space import ModelSpace
from nasq_ray.user_code import UserCallable
from user_model_code import write_user_module

X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    write_user_module(d)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))


@pytest.fixture(scope="module")
def net(folder):
    return make_model(UserCallable.of("mynet:Net", {}, "model.factory"))


def test_the_factory_is_resolved_called_with_its_arguments_and_must_give_a_module(folder):
    wide = make_model(UserCallable.of("mynet:Net", {"width": 4}, "model.factory"))
    assert wide.a.out_channels == 4
    with pytest.raises(ConfigError, match="returned int; expected a torch.nn.Module"):
        make_model(UserCallable.of("mynet:not_a_model", {}, "model.factory"))
    with pytest.raises(ConfigError, match="has no attribute 'Nett'"):
        UserCallable.of("mynet:Nett", {}, "model.factory")
    with pytest.raises(ConfigError, match="cannot import module 'nomodule'"):
        UserCallable.of("nomodule:Net", {}, "model.factory")
    with pytest.raises(ConfigError, match="expected MODULE:CALLABLE"):
        UserCallable.of("mynet", {}, "model.factory")


def test_weights_are_read_without_running_code_and_a_mismatch_names_keys_and_shapes(net, tmp_path):
    for wrap in (lambda s: s, lambda s: {"state_dict": s, "epoch": 3}, lambda s: {"model": s},
                 lambda s: {f"module.{k}": v for k, v in s.items()}):
        torch.save(wrap(net.state_dict()), tmp_path / "w.pt")
        assert read_weights(str(tmp_path / "w.pt")).keys() == net.state_dict().keys()
    other = make_model(UserCallable.of("mynet:Net", {"width": 4}, "model.factory"))
    state = dict(other.state_dict())
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError) as e:
        load_weights_(net, state)
    msg = str(e.value)
    assert "missing keys: fc.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "mismatched shapes: stem.0.weight (4, 1, 3, 3) in the file, (8, 1, 3, 3) in the model" in msg
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a module object: code, not weights
    with pytest.raises(ConfigError, match="not a plain weights file .*refused it: UnpicklingError: Unsupported global: .*Linear"):
        read_weights(str(tmp_path / "pickled.pt"))  # torch's reason, not its advice to load with weights_only=False
    with pytest.raises(ConfigError, match="does not exist"):
        read_weights(str(tmp_path / "none.pt"))


def test_a_model_that_fails_on_the_data_names_both_shapes(net):
    with pytest.raises(ConfigError) as e:
        check_model_on_input(net, torch.zeros(2, 3, 8, 8))
    assert "(2, 3, 8, 8)" in str(e.value) and "1 input channels (N, 1, H, W)" in str(e.value)
    assert check_model_on_input(net, X) == 10


def test_fx_and_hooks_find_the_same_layers_and_ends_and_fx_is_refused_for_untraceable_models(folder, net):
    fx_layers, how = trace_model(net, X, "fx")
    hook_layers, how2 = trace_model(net, X, "hooks")
    assert (how, how2) == ("fx", "hooks") and fx_layers == hook_layers
    assert [L.name for L in fx_layers if L.first] == ["stem.0"] and [L.name for L in fx_layers if L.last] == ["fc"]
    branchy = make_model(UserCallable.of("mynet:Branchy", {}, "model.factory"))
    assert trace_model(branchy, X, "auto")[1] == "hooks"
    with pytest.raises(ConfigError, match="does not trace with torch.fx"):
        trace_model(branchy, X, "fx")


def _space(net, **raw):
    layers, _ = trace_model(net, X)
    groups = prune_groups(net, X, {"fc"}, [L.name for L in layers])
    return ModelSpace(raw, layers, groups, (1, 8, 8), 10)


def test_policies_include_exclude_and_pins_decide_the_bit_parameters(net):
    q = {"w_bits": [2, 4, 8], "a_bits": [4, 8]}
    per_layer = _space(net, quant=q, prune={"keep": [1.0, 0.5]})
    assert sum(n.endswith(".w_bits") for n in per_layer.names) == 7
    assert sum(n.endswith(".keep") for n in per_layer.names) == 4
    pinned = _space(net, quant={**q, "pin_first_last": 8})
    assert "stem.0.w_bits" not in pinned.names and "fc.w_bits" not in pinned.names
    spec = pinned.decode(pinned.sample(0))
    assert spec.quant.layers["stem.0"].w_bits == 8 and spec.quant.layers["fc"].a_bits == 8
    block = _space(net, quant={**q, "policy": "block"})
    assert "stem.w_bits" in block.names and block.governs("stem.w_bits") == ["stem.0"]
    uniform = _space(net, quant={**q, "policy": "uniform"})
    assert [n for n in uniform.names if n.endswith("w_bits")] == ["quant.w_bits"]
    assert _space(net, quant={**q, "policy": "auto"}).decode({}).auto_bits is not None
    few = _space(net, quant={**q, "include": ["b*", "fc"], "exclude": ["fc"]})
    assert few.quantized == ["b1", "b2"]
    assert few.decode(few.sample(1)).quant.layers["a"].w_bits == 32  # left out: float
    pruned_spec = per_layer.decode({**per_layer.sample(2), "b1.keep": 0.5})
    assert pruned_spec.keep["b1"] == 0.5


def test_bad_space_settings_name_the_field(net):
    with pytest.raises(ConfigError, match="quant.exclude: 'conv9\\*' matches no Conv2d/Linear layer"):
        _space(net, quant={"exclude": ["conv9*"]})
    with pytest.raises(ConfigError, match="prune.exclude: 'nothing' matches no"):
        _space(net, prune={"exclude": ["nothing"]})
    with pytest.raises(ConfigError, match="'stages' describes a generated network"):
        _space(net, stages=[])
    with pytest.raises(SearchSpaceError, match="prune.keep"):
        _space(net, prune={"keep": [1.5]})
    with pytest.raises(SearchSpaceError, match="unknown key"):
        _space(net, quant={"merge_bits": 8})
    with pytest.raises(SearchSpaceError, match="prune.importance"):
        _space(net, prune={"importance": "random"})
