"""nasq-ray: joint neural-architecture and bit-width search on Ray Tune.

The public Python API, kept small:

* :func:`load_space` - load a search space (shipped name or YAML path) for an input shape.
* ``space.sample(seed)`` / ``space.validate(cfg)`` / ``space.decode(cfg)`` - configs.
* :func:`build_model` - the fake-quantized ``torch.nn.Module`` of a decoded config.
* :func:`measure_cost` - MACs, BitOPs and size in bits (totals and per layer).
* :func:`load_dataset` - digits (embedded), MNIST/Fashion-MNIST (IDX), CIFAR-10 (pickles), CSV.
* :func:`run_search` with an :class:`ExperimentConfig` - a whole search through Ray Tune.
"""

from __future__ import annotations

import os

from .config import ExperimentConfig, from_dict
from .data import load_dataset
from .errors import ConfigError, DataError, NasqError, SearchSpaceError, UnknownNameError
from .models import build_model, measure_cost, register_op
from .objective import ObjectiveConfig
from .quant import LayerBits, QuantConfig, quantize_
from .space.search_space import SearchSpace
from .space.search_space import load_space

__version__ = "0.1.0"


def run_search(config: ExperimentConfig | dict | str | os.PathLike | None = None):
    """Run a search (see :class:`ExperimentConfig`): a config, its nested dict, or the path of an
    experiment YAML file (what ``--config`` reads). Returns a ``SearchResult`` and writes the results
    folder."""
    from .config import load_yaml
    from .search.driver import run_search as _run

    if config is None:
        config = ExperimentConfig()
    elif isinstance(config, (str, os.PathLike)):
        config = from_dict(load_yaml(config))
    elif isinstance(config, dict):
        config = from_dict(config)
    elif not isinstance(config, ExperimentConfig):
        raise ConfigError("config: expected an ExperimentConfig, a dict of its sections, or the path of an experiment "
                          f"YAML file, got {type(config).__name__}")
    return _run(config)


__all__ = [
    "ConfigError", "DataError", "ExperimentConfig", "LayerBits", "NasqError", "ObjectiveConfig", "QuantConfig",
    "SearchSpace", "SearchSpaceError", "UnknownNameError", "build_model", "from_dict", "load_dataset", "load_space",
    "measure_cost", "quantize_", "register_op", "run_search",
]
