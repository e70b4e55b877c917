"""Experiment configuration: typed dataclasses, loaded from YAML and CLI flags, validated once here.

Precedence: defaults < the ``--config`` YAML file < CLI flags (and ``--set section.key=value``).
Every error names the field, the value received and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import ConfigError, NasqError, did_you_mean
from .objective import ObjectiveConfig


@dataclass
class DataConfig:
    name: str = "digits"  # a built-in name, or MODULE:CALLABLE returning {"train": Dataset, "val": ..., "test": ...}
    dir: str | None = None
    label_column: str = "label"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_train: int | None = None
    max_val: int | None = None  # cap on validation samples (stratified): every epoch's score is measured on them
    seed: int = 0
    args: dict = field(default_factory=dict)  # keyword arguments of a data factory
    workers: int = 0  # DataLoader worker processes for a data factory's Datasets (0: in the trial's process)
    augment: bool = False  # built-in image sets: random crop (and flip where the classes allow it)


@dataclass
class ModelConfig:
    """A user's own model (``--model``): the search prunes, quantizes and distils it."""

    factory: str | None = None  # MODULE:CALLABLE returning a torch.nn.Module (in Python: the callable itself)
    args: dict = field(default_factory=dict)  # keyword arguments of the factory
    weights: str | None = None  # its trained float weights (a state_dict file); none: trained first
    float_epochs: int = 10  # epochs of float training when no weights are given
    trace: str = "auto"  # auto (torch.fx, else forward hooks) | fx | hooks


@dataclass
class SearchConfig:
    searcher: str | None = None  # None: tpe (random under the pbt scheduler)
    searcher_args: dict = field(default_factory=dict)
    scheduler: str | None = None  # None: asha (moasha when the run is multi-objective)
    scheduler_args: dict = field(default_factory=dict)
    num_samples: int = 24
    max_epochs: int = 15
    max_concurrent: int | None = None
    seed: int = 0
    max_failures: int = 0
    time_budget_s: float | None = None  # stop starting trials after this many seconds
    keep_checkpoints: int = 1  # checkpoints kept per trial (PBT keeps at least 4)
    warm_start: int = 0  # configs with bits chosen from the value range, proposed before the searcher's
    mode: str = "trials"  # trials (each config trained) | oneshot (a super-network, then sub-networks scored)
    supernet_epochs: int = 30  # oneshot phase 1
    supernet_workers: int = 1  # oneshot phase 1: data-parallel workers (Ray Train, DDP); 1: one Tune trial
    finetune_epochs: int = 5  # oneshot phase 3 (0: none)
    finetune_top: int = 8  # oneshot phase 3: at most this many front models fine-tuned
    head_steps: int = 100  # oneshot phases 2-3: Adam steps refitting a sub-network's head (0: inherited as is)
    subnet_val_samples: int | None = 2000  # oneshot phases 1-2: validation samples scoring a sub-network (None: all)


@dataclass
class TableConfig:
    """Tabular trials: look metrics up in a table instead of training (a space may name a default)."""

    path: str | None = None
    acc: str | None = None
    cost: str | None = None
    test: str | None = None


@dataclass
class ResourcesConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None


@dataclass
class ExperimentConfig:
    name: str | None = None
    space: str | None = None  # None: digits_small, or own_model (search_spaces/own_model.yaml) with a model
    out: str = "./nasq_results"
    storage: str | None = None  # Ray Tune's experiment state and checkpoints (default: out); path or URI
    storage_db: str | None = None  # Optuna study of every trial: SQLAlchemy URL (default: sqlite in OUT/NAME)
    log_format: str = "text"  # progress output: text | json (one JSON object per line)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    table: TableConfig = field(default_factory=TableConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trial: str | None = None  # trial kind by name (default: chosen by what the run holds, see nasq_ray.trials)
    verbose: bool = False
    quiet: bool = False

    def __post_init__(self):
        validate(self)
        # a run without a name gets one, stamped once: every access names the same folder
        self._default_name = f"{self._name_stem()}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _name_stem(self) -> str:
        if self.space is None and self.model.factory is not None:
            f = self.model.factory
            return str(f).rpartition(":")[2].split(".")[-1] if isinstance(f, str) else getattr(f, "__name__", "model")
        return Path(self.space_ref).stem

    @property
    def space_ref(self) -> str:
        """The space to use: the one given, else ``own_model`` for a user model, ``digits_small`` otherwise."""
        if self.space is not None:
            return self.space
        return "own_model" if self.model.factory is not None else "digits_small"

    @property
    def run_name(self) -> str:
        return self.name or self._default_name

    @property
    def out_dir(self) -> Path:
        return Path(self.out).expanduser().resolve() / self.run_name

    @property
    def storage_root(self) -> str:
        """Where Ray Tune keeps the experiment: a local folder or a URI (s3://, gs://, ...)."""
        if self.storage and "://" in self.storage:
            return self.storage.rstrip("/")
        return str(Path(self.storage or self.out).expanduser().resolve())

    @property
    def experiment_path(self) -> str:
        return f"{self.storage_root}/{self.run_name}"

    @property
    def local_experiment_dir(self) -> Path | None:
        """Ray Tune's experiment folder on this machine (also for file:// storage); None for remote storage."""
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(self.experiment_path)
        return Path(path) if isinstance(fs, pyarrow.fs.LocalFileSystem) else None

    def to_dict(self) -> dict:
        """Plain data (what experiment.yaml holds): a callable given in Python is written as its
        ``MODULE:CALLABLE`` name where it has one."""
        from .user_code import ref_of

        out = dataclasses.asdict(self)
        for section, key in CALLABLE_FIELDS:
            value = out[section][key]
            if callable(value):
                out[section][key] = ref_of(value) or f"<python object {getattr(value, '__qualname__', value)!r}>"
        return out

    def to_yaml(self) -> str:
        """experiment.yaml's text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_absolute_paths(self) -> ExperimentConfig:
        """The same experiment with the files and folders it names relative to this process's working
        folder made absolute (space file, data folder, table, weights, storage, an SQLite study), so that
        ``--resume`` works from any folder. Names (a shipped space, ``module:callable``) stay as they are."""
        def absolute(path: str | None, must_exist: bool = True) -> str | None:
            if path is None or "://" in path or Path(path).expanduser().is_absolute():
                return path
            if must_exist and not Path(path).exists():
                return path  # a name, or a path the run refuses with its own message
            return str(Path(path).resolve())

        space = absolute(self.space) if self.space and Path(self.space).suffix in (".yaml", ".yml") else self.space
        db = self.storage_db
        if db and db.startswith("sqlite:///") and not db.startswith("sqlite:////") and db != "sqlite:///:memory:":
            db = "sqlite:///" + str(Path(db[len("sqlite:///"):]).resolve())
        data_dir = absolute(self.data.dir)
        return dataclasses.replace(
            self, space=space, storage=absolute(self.storage, must_exist=False), storage_db=db,
            data=dataclasses.replace(self.data, dir=data_dir),
            table=dataclasses.replace(self.table, path=absolute(self.table.path)),
            model=dataclasses.replace(self.model, weights=absolute(self.model.weights)))


_SECTIONS = {"data": DataConfig, "search": SearchConfig, "objective": ObjectiveConfig, "resources": ResourcesConfig,
             "table": TableConfig, "model": ModelConfig}
CALLABLE_FIELDS = (("data", "name"), ("model", "factory"))  # may hold a callable in Python (run_search)


def _coerce(fieldname: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to the field's type, or raise naming the field."""
    text = str(typ)
    if callable(value) and tuple(fieldname.split(".")) in CALLABLE_FIELDS:
        return value  # the Python API takes the user's callable itself
    optional = "None" in text
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{fieldname}: a value is required")
    try:
        if typ is bool or text == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if "int" in text and "float" not in text:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if "float" in text:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if "dict" in text:
            if not isinstance(value, dict):
                raise ValueError
            return value
        if isinstance(value, os.PathLike):  # a pathlib.Path given in Python
            return os.fspath(value)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        kind = text.replace("typing.", "").replace("<class '", "").replace("'>", "")
        raise ConfigError(f"{fieldname}: {value!r} is not allowed; expected {kind}") from None


def _build(cls, raw: Any, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{full}: unknown key{did_you_mean(str(key), names)}; allowed: {', '.join(names)}")
        if key in _SECTIONS and not prefix:
            kwargs[key] = _build(_SECTIONS[key], value, key)
        else:
            kwargs[key] = _coerce(full, value, hints[key])
    return cls(**kwargs)


def from_dict(raw: dict) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from nested plain data."""
    return _build(ExperimentConfig, raw, "")


MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML forbids it;
    PyYAML would keep the last value and drop the first without a word), and that ``1e-4`` is a
    number, as YAML 1.2 reads it (YAML 1.1, PyYAML's, wants ``1.0e-4`` and reads ``1e-4`` as text)."""

    def construct_mapping(self, node, deep=False):
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # '<<: *base': the merged keys may be overridden, as YAML allows
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' given twice (first on line {first_line[key] + 1})",
                        key_node.start_mark)
                first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))


def load_yaml(path: str | Path, field: str = "config", error: type[NasqError] = ConfigError) -> dict:
    """The mapping in a YAML file (empty file: ``{}``); errors name ``field``, the file and the line."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{field}: '{path}' is a folder; expected a YAML file")
    if not path.is_file():
        raise error(f"{field}: file '{path}' does not exist")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise error(f"{field}: {path}:{where} malformed YAML: {getattr(e, 'problem', None) or e}") from None
    except UnicodeDecodeError as e:
        raise error(f"{field}: {path}: byte {e.start} is not UTF-8 text; allowed: a YAML file in UTF-8") from None
    except RecursionError:
        raise error(f"{field}: {path}: nested too deeply to read; allowed: a YAML mapping of sections") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{field}: {path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


# experiment.yaml's first line: a checksum of what the run is, so that --resume can refuse an edited one (an
# edited max_epochs relabelled finished trials as cut short and trained the rest to the new length). Where
# the files are, and how loudly the run speaks, may change: a moved folder or data set must still resume.
CHECKSUM_LINE = "# nasq-ray experiment checksum: "
_CHECKSUM_FREE = ("name", "out", "storage", "storage_db", "quiet", "verbose", "log_format", "data.dir", "table.path",
                  "model.weights", "resources.address")


def experiment_checksum(raw: dict) -> str:
    """A short hash of an experiment mapping, leaving out ``_CHECKSUM_FREE`` (locations and output flags)."""
    import copy
    import hashlib
    import json

    kept = copy.deepcopy(raw)
    for dotted in _CHECKSUM_FREE:
        *parents, leaf = dotted.split(".")
        node = kept
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def with_checksum(text: str) -> str:
    """experiment.yaml's ``text`` with its checksum line first."""
    raw = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a safe loader
    return (f"{CHECKSUM_LINE}{experiment_checksum(raw)} (--resume refuses an edited experiment; its paths and "
            "quiet/verbose/log_format may change)\n" + text)


def _check_unedited(saved: Path, raw: dict) -> None:
    first = saved.read_text(errors="replace").split("\n", 1)[0]
    # a file without its checksum line (emptied, rewritten, the line deleted) cannot be told unedited: resumed
    # as read, an emptied one ran the default experiment over the run's trials and relabelled them
    if not first.startswith(CHECKSUM_LINE) or first[len(CHECKSUM_LINE):].split(" ", 1)[0] != experiment_checksum(raw):
        raise ConfigError(f"resume: {saved} was edited after the run started; --resume continues an experiment as it "
                          "ran (only its paths and quiet/verbose/log_format may change): undo the edit, or start a new "
                          f"run from it with --config {saved} --name NEW_NAME")


def saved_config(result_dir: str | Path, field: str, overrides: dict | None = None) -> ExperimentConfig:
    """The experiment a results folder ran (its experiment.yaml, named after the folder), with
    ``overrides`` (``address`` or top-level keys); ``field`` names the flag in the error."""
    folder = Path(result_dir).expanduser().resolve()
    saved = folder / "experiment.yaml"
    if folder.is_file():
        raise ConfigError(f"{field}: '{folder}' is a file; give the results folder of an earlier run (OUT/NAME, the "
                          "folder that holds experiment.yaml)")
    if not folder.is_dir():
        raise ConfigError(f"{field}: '{folder}' does not exist; give the results folder of an earlier run (OUT/NAME)")
    if not saved.is_file():
        raise ConfigError(f"{field}: '{folder}' holds no nasq-ray experiment (no experiment.yaml); give the "
                          "results folder of an earlier run (OUT/NAME)")
    raw = load_yaml(saved)
    if field == "resume":
        _check_unedited(saved, raw)
    raw.update({"name": folder.name, "out": str(folder.parent)})
    for key, value in (overrides or {}).items():
        if key == "address":
            raw.setdefault("resources", {})["address"] = value
        else:
            raw[key] = value
    try:
        return from_dict(raw)
    except NasqError as e:  # say where the value came from: the run's saved experiment, not a flag
        raise type(e)(f"{saved}: {e}") from None


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """``set_dotted(raw, "search.num_samples", 8)`` sets ``raw["search"]["num_samples"] = 8``."""
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: '{p}' is not a section")
    node[parts[-1]] = value


def parse_kv(items: list[str] | None, flag: str) -> dict:
    """``["k=v", ...]`` into a dict; values parsed as YAML scalars (``3`` -> int, ``true`` -> bool)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag}: '{item}' is not allowed; expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.load(v, Loader=YamlLoader)  # noqa: S506 - a safe loader
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def _coerce_fields(obj, prefix: str) -> None:
    """Give ``obj``'s fields the types ``from_dict`` gives them, for a config built from the dataclasses
    in Python (``SearchConfig(num_samples=1.5)``), which skips ``from_dict``."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        if prefix == "" and f.name in _SECTIONS:
            section = getattr(obj, f.name)
            if section is None or isinstance(section, dict):
                setattr(obj, f.name, _build(_SECTIONS[f.name], section, f.name))
            elif not isinstance(section, _SECTIONS[f.name]):
                raise ConfigError(f"{f.name}: expected a mapping or a {_SECTIONS[f.name].__name__}, got "
                                  f"{type(section).__name__}")
            else:
                _coerce_fields(section, f.name)
            continue
        value = getattr(obj, f.name)
        coerced = _coerce(f"{prefix}.{f.name}" if prefix else f.name, value, hints[f.name])
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)  # also on the frozen ObjectiveConfig


def validate(cfg: ExperimentConfig) -> None:
    _coerce_fields(cfg, "")
    s, r, d, m = cfg.search, cfg.resources, cfg.data, cfg.model
    checks = [
        (d.workers >= 0, "data.workers", d.workers, "integers >= 0"),
        (s.mode in ("trials", "oneshot"), "search.mode", s.mode, "trials, oneshot"),
        (s.supernet_epochs >= 1, "search.supernet_epochs", s.supernet_epochs, "integers >= 1"),
        (s.supernet_workers >= 1, "search.supernet_workers", s.supernet_workers, "integers >= 1"),
        (s.finetune_epochs >= 0, "search.finetune_epochs", s.finetune_epochs, "integers >= 0"),
        (s.finetune_top >= 1, "search.finetune_top", s.finetune_top, "integers >= 1"),
        (s.head_steps >= 0, "search.head_steps", s.head_steps, "integers >= 0"),
        (s.subnet_val_samples is None or s.subnet_val_samples >= 1, "search.subnet_val_samples",
         s.subnet_val_samples, "integers >= 1, or null (the whole validation split)"),
        (m.float_epochs >= 0, "model.float_epochs", m.float_epochs, "integers >= 0"),
        (m.trace in ("auto", "fx", "hooks"), "model.trace", m.trace, "auto, fx, hooks"),
        (s.num_samples >= 1, "search.num_samples", s.num_samples, "integers >= 1"),
        (s.max_epochs >= 1, "search.max_epochs", s.max_epochs, "integers >= 1"),
        (s.max_concurrent is None or s.max_concurrent >= 1, "search.max_concurrent", s.max_concurrent, "integers >= 1"),
        (s.max_failures >= -1, "search.max_failures", s.max_failures, "integers >= -1 (-1: retry forever)"),
        (s.time_budget_s is None or s.time_budget_s > 0, "search.time_budget_s", s.time_budget_s, "numbers > 0"),
        (s.keep_checkpoints >= 1, "search.keep_checkpoints", s.keep_checkpoints, "integers >= 1"),
        (0 <= s.warm_start <= s.num_samples, "search.warm_start", s.warm_start,
         f"integers from 0 to search.num_samples ({s.num_samples})"),
        (r.cpus_per_trial > 0, "resources.cpus_per_trial", r.cpus_per_trial, "numbers > 0"),
        (r.gpus_per_trial >= 0, "resources.gpus_per_trial", r.gpus_per_trial, "numbers >= 0"),
        (d.max_train is None or d.max_train >= 2, "data.max_train", d.max_train, "integers >= 2"),
        (d.max_val is None or d.max_val >= 2, "data.max_val", d.max_val, "integers >= 2"),
        (0 < d.val_fraction < 1, "data.val_fraction", d.val_fraction, "numbers in (0, 1)"),
        (0 < d.test_fraction < 1, "data.test_fraction", d.test_fraction, "numbers in (0, 1)"),
        (0 <= s.seed < 2**32, "search.seed", s.seed, "integers from 0 to 2**32 - 1"),
        (0 <= d.seed < 2**32, "data.seed", d.seed, "integers from 0 to 2**32 - 1"),
        (s.searcher != "given" or s.warm_start >= 1, "search.searcher", s.searcher,
         "given only with search.warm_start >= 1 (its trials are the warm-start configs; with none it runs none)"),
        (bool(cfg.out), "out", cfg.out, "a folder path"),
        *[(getattr(cfg.table, f) is None or bool(getattr(cfg.table, f).strip()), f"table.{f}", getattr(cfg.table, f),
           "a non-empty " + ("path" if f == "path" else "column name")) for f in ("path", "acc", "cost", "test")],
    ]
    for ok, name, value, allowed in checks:
        if not ok:
            raise ConfigError(f"{name}: {value!r} is not allowed; allowed: {allowed}")
    if m.factory is None and (m.weights or m.args):
        raise ConfigError(f"model.{'weights' if m.weights else 'args'}: given without model.factory; give --model "
                          "MODULE:CALLABLE")
    if m.factory is not None and m.weights is None and m.float_epochs == 0:
        raise ConfigError("model.float_epochs: 0 is not allowed without model.weights (the float model would stay "
                          "untrained); give --weights or float_epochs >= 1")
    if cfg.log_format not in ("text", "json"):
        raise ConfigError(f"log_format: {cfg.log_format!r} is not allowed; allowed: text, json")
    if cfg.storage_db is not None:
        from sqlalchemy.engine import make_url

        try:
            make_url(cfg.storage_db)
        except Exception:  # noqa: BLE001 - ArgumentError, ValueError
            raise ConfigError(f"storage_db: {cfg.storage_db!r} is not allowed; allowed: an SQLAlchemy URL such as "
                              "sqlite:///path/optuna.db") from None
    if cfg.name is not None and (cfg.name in ("", ".", "..") or "/" in cfg.name or os.sep in cfg.name):
        raise ConfigError(f"name: {cfg.name!r} is not allowed; allowed: a folder name (not '.' or '..') without '/'")
