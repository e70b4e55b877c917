"""A user's own data: ``--data MODULE:CALLABLE``, a factory returning ``{"train": Dataset, "val":
Dataset, "test": Dataset}`` (torch map-style Datasets of ``(input, label)``; ``test`` optional; a
``num_classes`` entry optional). The Datasets are used as they are, their transforms included.

The factory is called once in the driver, where its splits are checked (items are ``(input,
label)``, inputs are float tensors of one shape, labels integers), and once in each process that
trains (a Ray worker), which reads its batches through a ``DataLoader``. A factory that takes a
``data_dir`` argument gets ``--data-dir``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError, one_line
from ..user_code import UserCallable

SPLITS = ("train", "val", "test")
_LOADED: dict[tuple, dict] = {}  # per process: what a factory returned, by its reference and arguments


@dataclass(frozen=True)
class UserData:
    """A checked data factory: what trials get (plain, picklable; each process calls the factory
    again through :meth:`datasets`)."""

    factory: UserCallable
    input_shape: tuple[int, ...]
    num_classes: int
    splits: tuple[str, ...]

    def datasets(self) -> dict:
        return _datasets(self.factory)


def _key(factory: UserCallable) -> tuple:
    return (repr(factory.target), repr(sorted(factory.kwargs.items())))


def _datasets(factory: UserCallable) -> dict:
    key = _key(factory)
    if key not in _LOADED:
        made = factory()
        _check_splits(made, factory.label)
        _LOADED[key] = made
    return _LOADED[key]


def _check_splits(made, label: str) -> None:
    expected = "a dict with 'train' and 'val' (and optionally 'test') torch Datasets of (input, label)"
    if not isinstance(made, dict):
        raise DataError(f"data: {label} returned {type(made).__name__}; expected {expected}")
    missing = [s for s in ("train", "val") if s not in made]
    unknown = [k for k in made if k not in (*SPLITS, "num_classes")]
    if missing or unknown:
        what = f"no {', '.join(repr(s) for s in missing)}" if missing else f"unknown keys {unknown}"
        raise DataError(f"data: {label} returned a dict with {what}; expected {expected}")
    for split in SPLITS:
        ds = made.get(split)
        if ds is None:
            continue
        if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
            raise DataError(f"data: {label}['{split}'] is a {type(ds).__name__}; expected a map-style torch Dataset "
                            "(with __len__ and __getitem__)")
        if _size(ds, f"{label}['{split}']") == 0:
            raise DataError(f"data: {label}['{split}'] is empty")


def _size(ds, where: str) -> int:
    """``len(ds)``, or a DataError where the Dataset's ``__len__`` raises (it is the user's code)."""
    try:
        return len(ds)
    except Exception as e:  # noqa: BLE001 - the user's Dataset failing is bad input, reported in one line
        raise DataError(f"data: len({where}) raised {one_line(e, 200)}; expected the number of items of a map-style "
                        "torch Dataset") from None


def read_item(ds, i: int, where: str):
    """``ds[i]``, or a DataError naming the item where the Dataset's ``__getitem__`` raises (it is the
    user's code; ``where`` is ``factory()['split']``)."""
    try:
        return ds[i]
    except Exception as e:  # noqa: BLE001 - the user's Dataset failing is bad input, reported in one line
        raise DataError(f"data: {where}[{i}] raised {one_line(e, 200)}; expected an (input, label) item for every "
                        "index 0 .. len - 1") from None


def check_item(item, where: str) -> tuple[tuple[int, ...], int]:
    """The input shape and label of one Dataset item, or a DataError saying what the item is."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        what = f"a {type(item).__name__}" + (f" of {len(item)} items" if isinstance(item, (tuple, list)) else "")
        raise DataError(f"data: {where} is {what}; expected (input, label): an input tensor and an integer class label")
    x, y = item
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
        raise DataError(f"data: {where}: the input is {kind}; expected a float tensor (e.g. a transform "
                        "ending in ToTensor, or torch.as_tensor(x, dtype=torch.float32))")
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point():
        y = int(y)
    if isinstance(y, np.integer):
        y = int(y)
    if not isinstance(y, int) or isinstance(y, bool) or y < 0:
        raise DataError(f"data: {where}: the label is {y!r} ({type(y).__name__}); expected an integer class "
                        "label >= 0")
    return tuple(x.shape), y


def _count_classes(ds, label: str) -> int:
    classes = getattr(ds, "classes", None)
    if isinstance(classes, (list, tuple)) and len(classes) >= 2:
        return len(classes)
    targets = getattr(ds, "targets", None)
    if targets is not None:
        try:
            return int(torch.as_tensor(targets).max()) + 1
        except (TypeError, ValueError, RuntimeError):
            pass  # not a list of numbers: the items say the labels
    where = f"{label}['train']"
    top = max(check_item(read_item(ds, i, where), f"{where}[{i}]")[1] for i in range(len(ds)))
    return top + 1


def _check_targets(made: dict, n: int, label: str) -> None:
    """Labels outside 0 .. n - 1 failed every trial inside its training (a CUDA assert or an index error
    per trial); where a split lists its labels (``targets``, as torchvision's datasets do) they are checked
    here, at no cost. Other labels are read by the trials only (a bad one fails them, and a run whose
    trials all failed exits 1 with the error)."""
    for split in SPLITS:
        targets = getattr(made.get(split), "targets", None)
        if targets is None:
            continue
        try:
            t = torch.as_tensor(targets)
        except (TypeError, ValueError, RuntimeError):
            continue
        t = t.flatten()
        bad = t[(t < 0) | (t >= n) | (t != t.round())] if t.is_floating_point() else t[(t < 0) | (t >= n)]
        if bad.numel():
            raise DataError(f"data: {label}['{split}'].targets holds the label {bad[0].item()!r}; allowed: integers "
                            f"0 .. {n - 1} ({n} classes)")


def load_user_data(target, kwargs: dict | None = None, data_dir: str | None = None,
                   num_classes: int | None = None) -> UserData:
    """Call the data factory ``target`` (``MODULE:CALLABLE`` or a callable), check what it returns
    and describe it. ``num_classes``: known already (an own model's output), else the factory's
    ``num_classes`` entry, the train Dataset's ``classes`` or ``targets``, or the largest label + 1
    (0: not looked for; the caller knows it from elsewhere)."""
    kwargs = dict(kwargs or {})
    factory = UserCallable.of(target, kwargs, "data")
    if data_dir is not None and takes_data_dir(factory):  # a new run refuses one nothing reads (check_data_dir_read)
        factory = UserCallable(factory.target, {**kwargs, "data_dir": data_dir}, "data", factory.search_path)
    made = _datasets(factory)
    shapes = {}
    for split in SPLITS:
        if made.get(split) is not None:
            where = f"{factory.label}['{split}']"
            shapes[split] = check_item(read_item(made[split], 0, where), f"{where}[0]")[0]
    if len(set(shapes.values())) > 1:
        raise DataError(f"data: {factory.label}: the splits' inputs differ in shape ({shapes}); expected one shape")
    given = made.get("num_classes")
    if num_classes:
        n = num_classes
    elif given is not None:
        if isinstance(given, bool) or not isinstance(given, (int, np.integer)) or given < 2:
            raise DataError(f"data: {factory.label}['num_classes'] is {given!r}; allowed: an integer >= 2 (the "
                            "number of classes its labels 0 .. num_classes - 1 cover)")
        n = int(given)
    else:
        n = 0 if num_classes == 0 else _count_classes(made["train"], factory.label)
    if n < 2 and num_classes != 0:
        raise DataError(f"data: {factory.label}: {n} class found; need at least 2")
    if n:
        _check_targets(made, n, factory.label)
    return UserData(factory, shapes["train"], n, tuple(s for s in SPLITS if made.get(s) is not None))


def takes_data_dir(factory: UserCallable) -> bool:
    """Whether the factory takes a ``data_dir`` keyword (by name or ``**kwargs``; yes when its
    signature cannot be read)."""
    try:
        params = inspect.signature(factory.resolve()).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "data_dir" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
