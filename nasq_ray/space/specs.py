"""What a config decodes into: the plain specs the model builder and the trainer read.
"""

from __future__ import annotations

from dataclasses import dataclass
from ..quant import QuantConfig


OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass(frozen=True)
class BlockSpec:
    op: str
    connection: str
    op_b: str | None
    merge: str | None
    in_ch: int
    out_ch: int
    stride: int


@dataclass(frozen=True)
class ArchSpec:
    """Plain-data description of one network: what ``build_model`` builds."""

    input_shape: tuple[int, ...]
    num_classes: int
    stages: tuple[tuple[BlockSpec, ...], ...]
    head_widths: tuple[int, ...]
    head_pool: str = "avg"  # "avg": global average pooling; "flatten": keep the final feature map

    def feature_shape(self) -> tuple[int, ...]:
        """Shape of what enters the head (before pooling): (C, H, W), or the flat input shape."""
        if not self.stages:
            return self.input_shape
        h, w = self.input_shape[1:]
        for stage in self.stages:
            s = stage[0].stride
            h, w = -(-h // s), -(-w // s)
        return (self.stages[-1][-1].out_ch, h, w)


@dataclass(frozen=True)
class TrainSpec:
    lr: float = 0.01
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int = 64
    momentum: float = 0.9


@dataclass(frozen=True)
class AutoBits:
    """What policy ``auto`` leaves to the trial: choose ``layers``' bits by calibration.

    For each layer the smallest of ``w_candidates`` (``a_candidates``) whose quantization keeps the
    SQNR of its weights (input activations) at ``sqnr_db`` or more; 32 (float) when none does. See
    :func:`nasq_ray.quant.auto_bits.choose_bits`. Pinned layers are not in ``layers``: their width is
    already in the spec's ``QuantConfig``.
    """

    sqnr_db: float
    w_candidates: tuple[int, ...]
    a_candidates: tuple[int, ...]
    layers: tuple[str, ...]


@dataclass(frozen=True)
class TrialSpec:
    """A decoded config: the network, its bit-widths and how to train it.

    With ``auto_bits`` set (policy ``auto``), ``quant`` holds placeholder bits (32/32) for the layers
    that ``auto_bits`` names; the trial replaces them with the widths it chooses.
    """

    arch: ArchSpec
    quant: QuantConfig
    train: TrainSpec
    auto_bits: AutoBits | None = None


@dataclass(frozen=True)
class DistillSpec:
    """Distillation from the float model: loss ``(1 - alpha) CE + alpha T^2 KL(teacher_T || student_T)``
    with ``T = temperature``; ``alpha = 0`` is plain cross-entropy (no teacher is run)."""

    alpha: float = 0.0
    temperature: float = 4.0


@dataclass(frozen=True)
class ModelTrialSpec:
    """A decoded config of a user's model: the keep ratio of each group of coupled channels (by the
    group's name), the bit-widths by layer name, distillation and training.

    With ``auto_bits`` set (policy ``auto``), ``quant`` holds placeholder bits (32/32) for the layers
    ``auto_bits`` names; the trial chooses them from the value range."""

    keep: dict
    quant: QuantConfig
    train: TrainSpec
    distill: DistillSpec = DistillSpec()
    auto_bits: AutoBits | None = None
