"""What a trial is: the trial-kind interface, in the spirit of Optuna's ``BaseSampler``.

A kind has two required methods and a few optional hooks:

* :meth:`BaseTrialKind.prepare` - before Ray starts: load and check the kind's inputs (data, a
  table, a model), bind the space, and return a :class:`Prepared` whose ``context`` is plain,
  picklable data sent to every trial.
* :meth:`BaseTrialKind.run` - one trial: ``run(config, context, report, state) -> metrics``.
  ``report(metrics, payload)`` is called once per step (an epoch); ``payload`` is a checkpoint the
  caller may save, and a resumed trial gets the last one back as ``state``. A trial that cannot go
  on reports ``status = "failed"`` with a ``fail_reason``. It knows nothing of Ray.
* hooks: :meth:`check` (refuse settings the kind cannot take), :meth:`record` (the config and extra
  columns results show), :meth:`test_accuracy` (how the front's test accuracy is obtained),
  :meth:`trained_model` (what export writes), :meth:`warm_start_configs` (configs proposed before
  the searcher's own), :meth:`cost_model` (a config's exact cost before it runs: searchers aim with
  it, and a cost budget is held before training), :meth:`reference_rows` (models shown beside the
  front), :meth:`sensitivity` (per-layer sensitivities for ``--searcher hawq``).

Kinds are registered by name in :mod:`nasq_ray.trials`; plug-ins through the entry-point group
``nasq_ray.trials``. ``nasq_ray.testing.check_trial_kind`` is the conformance check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..objective import ObjectiveConfig
    from ..results.records import TrialRecord
    from ..space.search_space import SearchSpace

Reporter = Callable[[dict, "dict | None"], None]
CostModel = Callable[[dict], "float | None"]  # a config -> its exact cost (the objective's metric), None if unknown
BITS_METRIC = "w_bits_str"  # the bits per layer a trial reports (W/A, forward order); results call it "bits"
DNAS_PREFIX = "dnas."  # config keys that are options of a dnas trial, not parameters of the space
CHECKPOINT_FILE = "state.pt"  # a trial's saved state inside a Ray checkpoint folder


def trial_status(result: dict | None, error: bool, max_epochs: int, ended: bool = True) -> str:
    """How a trial stands after ``result`` (its last report): ``complete`` (trained for the whole
    budget), ``failed``, and otherwise ``pruned`` (ended early: stopped by a scheduler) or, while it
    has not ended, ``running``."""
    if error or not result or result.get("status") == "failed":
        return "failed"
    if int(result.get("epoch", 0) or 0) >= max_epochs:
        return "complete"
    return "pruned" if ended else "running"


@dataclass
class Prepared:
    """A kind's validated inputs. ``context`` goes to every trial (keep it plain and picklable);
    ``test`` stays in the driver for :meth:`BaseTrialKind.test_accuracy`."""

    kind: str
    space: SearchSpace
    objective: ObjectiveConfig
    context: Any
    test: Any = None


class BaseTrialKind:
    """One kind of trial. Subclasses set ``name`` and implement ``prepare`` and ``run``."""

    name: str = ""
    model_in_checkpoint: bool = True  # False: trained_model rebuilds a trial's model without a checkpoint

    def prepare(self, cfg: ExperimentConfig, raw_space: dict, space_path: Path,
                objective: ObjectiveConfig) -> Prepared:
        raise NotImplementedError

    def run(self, config: dict, context: Any, report: Reporter, state: dict | None = None) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------------ optional hooks

    def space(self, cfg: ExperimentConfig, raw_space: dict, space_path: Path) -> SearchSpace:
        """The run's search space alone (``--show-space``); by default what :meth:`prepare` binds."""
        return self.prepare(cfg, raw_space, space_path, cfg.objective).space

    def check(self, cfg: ExperimentConfig, prepared: Prepared) -> None:
        """Refuse settings this kind cannot take (a ``ConfigError`` naming the field)."""

    def record(self, config: dict, metrics: dict) -> tuple[dict, dict]:
        """The config results show for a trial, and extra columns for trials.csv."""
        return config, {}

    def test_accuracy(self, records: list[TrialRecord], prepared: Prepared) -> None:
        """Fill ``test_acc`` / ``test_f1`` of ``records`` (the front and the best trial)."""

    def trained_model(self, config: dict, state: dict | None, prepared: Prepared):
        """The trained ``torch.nn.Module`` a trial's saved ``state`` holds (what export writes); ``state``
        is None for a kind whose trials save no checkpoint (``model_in_checkpoint`` False)."""
        raise ConfigError(f"export: trials of kind '{self.name}' train no model; nothing to export")

    def cost_model(self, prepared: Prepared) -> CostModel | None:
        """A picklable callable giving a config's value of the objective's cost metric before the
        trial runs (``None`` for a config it cannot tell), or None when the kind cannot tell any."""
        return None

    def reference_rows(self, prepared: Prepared) -> list[dict]:
        """Models to show beside the front, found without a search (a user model's float and
        post-training-quantized versions): dicts with ``name``, the accuracies, cost metrics, ``bits``."""
        return []

    def sensitivity(self, prepared: Prepared):
        """Per-layer quantization sensitivities (a :class:`nasq_ray.hawq.BitSensitivity`) for
        sensitivity-based bits (``--searcher hawq``)."""
        raise ConfigError(f"searcher: hawq chooses bits from the Hessian sensitivities of a trained model's layers; "
                          f"trials of kind '{self.name}' have none (give a model: --model MODULE:CALLABLE)")

    def warm_start_configs(self, prepared: Prepared, n: int, seed: int) -> list[dict]:
        raise ConfigError(f"search.warm_start: needs trained trials (trials of kind '{self.name}' calibrate no "
                          "network); use 0")


def read_checkpoint(folder: str | Path, device: str = "cpu") -> dict | None:
    """The state a trial saved in a checkpoint folder (None if it saved none)."""
    import torch

    path = Path(folder) / CHECKPOINT_FILE
    return torch.load(path, map_location=device, weights_only=False) if path.is_file() else None


def write_checkpoint(folder: str | Path, state: dict) -> None:
    import torch

    torch.save(state, Path(folder) / CHECKPOINT_FILE)


def failed_report(e: BaseException, cost: str, report: Reporter) -> dict:
    """Report a trial that could not run (bad data met in a batch, a label beyond the model's
    outputs) as ``failed`` with the reason in one line: the search goes on, with no traceback."""
    msg = " ".join(str(e).split()) or type(e).__name__
    metrics = failed_metrics(f"{type(e).__name__}: {msg[:300]}", cost, val_f1=0.0)
    report(metrics, None)
    return metrics


def failed_metrics(reason: str, cost: str, epoch: int = 1, **extra) -> dict:
    """The metrics of a failed trial: no accuracy, the lowest score, no cost, the reason."""
    return {"epoch": epoch, "val_acc": 0.0, "score": float("-inf"), cost: float("nan"), **extra, "status": "failed",
            "fail_reason": reason}


def record_state(record: TrialRecord) -> dict | None:
    """The saved state of a trial's last checkpoint (downloaded first if it is remote)."""
    if record.checkpoint_obj is not None:
        with record.checkpoint_obj.as_directory() as d:
            return read_checkpoint(d)
    return read_checkpoint(record.checkpoint) if record.checkpoint else None
