"""One joint search space: architecture, per-layer bit-widths and training hyperparameters.

* :mod:`.domains` - Choice, Ordinal (bit-widths), Int, Float and :class:`Param`.
* :mod:`.specs` - what a config decodes into (ArchSpec, TrainSpec, TrialSpec, ...).
* :mod:`.parse` - field checks and the keys a space file may hold.
* :mod:`.search_space` - :class:`SearchSpace`: sampling, validation, mutation, decoding.
* :mod:`.files` - the shipped spaces and reading a space's YAML.
"""

from .domains import Choice, Domain, Float, Int, Ordinal, Param, optuna_distribution
from .files import SPACES_DIR, read_space_yaml, resolve_space_path, shipped_spaces
from .search_space import MAX_REJECTIONS, SearchSpace, load_space
from .specs import OPTIMIZERS, ArchSpec, AutoBits, BlockSpec, TrainSpec, TrialSpec

__all__ = [
    "MAX_REJECTIONS", "OPTIMIZERS", "SPACES_DIR", "ArchSpec", "AutoBits", "BlockSpec", "Choice", "Domain", "Float",
    "Int", "Ordinal", "Param", "SearchSpace", "TrainSpec", "TrialSpec", "load_space", "optuna_distribution",
    "read_space_yaml", "resolve_space_path", "shipped_spaces",
]
