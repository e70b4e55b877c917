"""The batches a trial trains and evaluates on.

* :class:`ArrayBatches` - a split held in memory as arrays (the built-in datasets): shuffled by
  index, the fast path for small data; optional augmentation on the batch tensors.
* :class:`DatasetBatches` - a user's torch ``Dataset`` read through a ``DataLoader``
  (``data.workers`` worker processes), so the data need not fit in memory. The Dataset is made by
  the user's factory in the process that trains (a trial's Ray worker), once per process.

Both shuffle with a generator the trial owns, so a resumed trial sees the same batches as an
uninterrupted one. ``epoch`` yields ``(x, y, idx)``: ``idx`` are the samples' positions in the
split (in memory; ``None`` through a DataLoader), what a cache of teacher outputs is keyed by.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .builtin import Split

AUGMENTS = ("crop_flip", "crop")
# built-in image sets: random crop (zero padding H/8) and horizontal flip where mirror images are
# still the class (CIFAR-10 objects, Fashion-MNIST clothes); digits only shift
_AUGMENT_OF = {"cifar10": "crop_flip", "fashion_mnist": "crop_flip", "mnist": "crop", "digits": "crop"}


def augment_mode(dataset: str, augment: bool) -> str | None:
    """What ``data.augment: true`` does on the built-in dataset ``dataset`` (None when off)."""
    if not augment:
        return None
    if dataset not in _AUGMENT_OF:
        allowed = ", ".join(sorted(_AUGMENT_OF))
        raise ConfigError(f"data.augment: not available for data '{dataset}' (augmentation is for the built-in image "
                          f"sets: {allowed}; a data factory's Datasets apply their own transforms); use false")
    return _AUGMENT_OF[dataset]


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by H/8 (each sample its own shift) and, for ``crop_flip``, a
    horizontal flip of half the samples; ``x`` is (N, C, H, W)."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if mode == "crop_flip":
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


class ArrayBatches:
    """A split in memory: ``epoch`` shuffles it by index (a lone trailing sample is skipped: it
    breaks BatchNorm's batch statistics), ``eval`` walks it in order."""

    def __init__(self, split: Split, augment: str | None = None, device: str = "cpu"):
        self.split, self.augment, self.device = split, augment, device
        self._xy: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def of_tensors(cls, x: torch.Tensor, y: torch.Tensor, augment: str | None = None) -> ArrayBatches:
        """Batches of tensors already made (and on their device)."""
        made = cls(Split(x[:0].cpu().numpy(), y[:0].cpu().numpy()), augment, str(x.device))
        made._xy = (x, y)
        return made

    def __getstate__(self):
        return {"split": self.split, "augment": self.augment, "device": self.device, "_xy": None}

    def __len__(self) -> int:
        return len(self.tensors[1]) if self._xy is not None else len(self.split)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._xy is None:
            self._xy = (torch.from_numpy(np.ascontiguousarray(self.split.x)).to(self.device),
                        torch.from_numpy(self.split.y).to(self.device))
        return self._xy

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
        x, y = self.tensors
        order = torch.randperm(len(y), generator=generator)
        seen = 0
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2 and seen:
                continue
            seen += len(idx)
            xb = x[idx.to(x.device)]
            if self.augment:
                xb = augment_batch(xb.cpu(), self.augment, generator).to(x.device)
            yield xb, y[idx.to(y.device)], idx

    def eval(self, batch_size: int = 1024) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.tensors
        for start in range(0, len(y), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]

    def subset(self, n: int | None, seed: int) -> ArrayBatches:
        """``n`` samples drawn at random with ``seed`` (in their order here); all when ``n`` is None or
        not below the size."""
        idx = sample_indices(len(self), n, seed)
        if idx is None:
            return self
        if len(self.split) == len(self):
            return ArrayBatches(Split(self.split.x[idx], self.split.y[idx]), self.augment, self.device)
        x, y = self.tensors
        at = torch.from_numpy(idx).to(x.device)
        return ArrayBatches.of_tensors(x[at], y[at], self.augment)


class DatasetBatches:
    """A split of a user's data factory, read through a ``DataLoader`` with ``workers`` processes.
    Each batch's labels are checked as it is read (the factory's items are checked one by one only
    at the start): integers, one per sample, from 0 to ``num_classes`` - 1 (the data's count, or the
    user model's outputs where the data does not say)."""

    def __init__(self, data, split: str, workers: int = 0, device: str = "cpu", indices: np.ndarray | None = None,
                 num_classes: int = 0, classes_from: str = ""):
        self.data, self.split, self.workers, self.device = data, split, workers, device
        self.indices = indices  # a subset of the split (``subset``); None: all of it
        self.num_classes = num_classes or data.num_classes  # 0: not known (labels checked >= 0 only)
        self.classes_from = classes_from  # where num_classes came from, when not from the data (for messages)
        self.inputs_checked = False  # inputs are checked for NaN until one whole pass has been (labels: always)

    def with_classes(self, num_classes: int, classes_from: str) -> DatasetBatches:
        return DatasetBatches(self.data, self.split, self.workers, self.device, self.indices, num_classes, classes_from)

    @property
    def dataset(self):
        whole = self.data.datasets()[self.split]
        return whole if self.indices is None else torch.utils.data.Subset(whole, self.indices.tolist())

    def subset(self, n: int | None, seed: int) -> DatasetBatches:
        """``n`` samples drawn at random with ``seed``; all when ``n`` is None or not below the size."""
        idx = sample_indices(len(self), n, seed)
        if idx is None:
            return self
        if self.indices is not None:
            idx = self.indices[idx]
        return DatasetBatches(self.data, self.split, self.workers, self.device, idx, self.num_classes, self.classes_from)

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=self.workers,
            persistent_workers=False, pin_memory=self.device != "cpu")
        batches = iter(loader)
        while True:  # the user's Dataset runs here: its failures (an unreadable file, a wrong __len__) are bad data
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - whatever the Dataset's __getitem__ or the collation raises
                text = " ".join(str(e).split())
                raise DataError(f"data: {self.data.factory.label}['{self.split}']: reading a batch failed "
                                f"({type(e).__name__}: {text[:200]})") from None
            yield batch

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple]:
        order = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        seen = 0
        for xb, yb in self._loader(batch_size, True, order):
            if len(yb) < 2 and seen:
                continue
            seen += len(yb)
            self._check(xb, yb)
            yield xb.to(self.device), yb.to(self.device), None
        self.inputs_checked = True

    def eval(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for xb, yb in self._loader(batch_size, False):
            self._check(xb, yb)
            yield xb.to(self.device), yb.to(self.device)
        self.inputs_checked = True

    def _check(self, xb, yb) -> None:
        where = f"data: {self.data.factory.label}['{self.split}']"
        if not isinstance(yb, torch.Tensor) or yb.dim() != 1 or yb.dtype == torch.bool or yb.is_floating_point() \
                or yb.is_complex():
            what = f"a {yb.dtype} tensor of shape {tuple(yb.shape)}" if isinstance(yb, torch.Tensor) else type(yb).__name__
            raise DataError(f"{where}: a batch's labels are {what}; expected one integer class label per sample")
        low, high = int(yb.min()), int(yb.max())
        n = self.num_classes
        if low < 0 or (n and high >= n):
            bad = low if low < 0 else high
            allowed = f"0 to {n - 1} ({n} classes{': ' + self.classes_from if self.classes_from else ''})" if n \
                else "integers >= 0"
            raise DataError(f"{where}: a label is {bad}; allowed: {allowed}")
        if not self.inputs_checked and (not isinstance(xb, torch.Tensor) or not bool(torch.isfinite(xb).all())):
            raise DataError(f"{where}: a batch's inputs hold NaN or infinite values; expected finite numbers")


def sample_indices(size: int, n: int | None, seed: int) -> np.ndarray | None:
    """``n`` of ``range(size)`` drawn with ``seed``, sorted; None where ``n`` is None or >= ``size``."""
    if n is None or n >= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(size, n, replace=False))


def first_labelled_batches(batches, n_batches: int, batch_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) of ``n_batches`` shuffled training batches drawn with ``seed`` (calibration data)."""
    out = []
    for xb, yb, _ in batches.epoch(batch_size, torch.Generator().manual_seed(seed)):
        out.append((xb, yb))
        if len(out) == n_batches:
            break
    return out


def first_batches(batches, n_batches: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Inputs of ``n_batches`` shuffled training batches drawn with ``seed`` (calibration data)."""
    return [xb for xb, _ in first_labelled_batches(batches, n_batches, batch_size, seed)]
