"""Built-in datasets, read locally in their standard published formats; nothing is downloaded.

* ``digits``         scikit-learn's ``load_digits`` (real 8x8 handwritten digits, ships with sklearn).
* ``mnist`` / ``fashion_mnist``  IDX files (``train-images-idx3-ubyte[.gz]`` ...) in ``data_dir``.
* ``cifar10``        the python pickle batches (``data_batch_1..5``, ``test_batch``) in ``data_dir``
                     or ``data_dir/cifar-10-batches-py``.
* ``csv``            numeric features with a label column: ``data_dir`` is a CSV file, or a folder
                     with ``train.csv`` (and optionally ``test.csv``).

Splits are stratified with a fixed seed. A dataset with an official test set keeps it as the test
split and carves validation out of its training set; others are split train / val / test. The
search sees only train and validation; test accuracy is computed for the final Pareto models.
Features are standardized with statistics of the training split.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, is_int, is_number, unknown_name

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "csv")


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, (N, *input_shape)
    y: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def without_test(self) -> Dataset:
        """The same dataset with an empty test split: what trials are given."""
        empty = Split(self.test.x[:0], self.test.y[:0])
        return Dataset(self.name, self.train, self.val, empty, self.num_classes)


def load_dataset(name: str = "digits", data_dir: str | Path | None = None, *, label_column: str = "label",
                 val_fraction: float = 0.2, test_fraction: float = 0.2, max_train: int | None = None,
                 max_val: int | None = None, seed: int = 0) -> Dataset:
    """Load ``name`` and split it (stratified, fixed ``seed``). ``max_train`` and ``max_val`` cap the
    training and validation splits (stratified subsets; the test split is never capped)."""
    if not isinstance(name, str) or name not in DATASETS:
        raise unknown_name("data", name, DATASETS)
    _check_arguments(data_dir, val_fraction, test_fraction, max_train, max_val, seed)
    if name != "digits" and data_dir is None:
        raise DataError(f"data-dir: dataset '{name}' is read from a local folder; give --data-dir")
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in (0, 1) "
                        "and their sum below 1")
    if name == "digits":
        x, y, test = _digits()
    elif name in ("mnist", "fashion_mnist"):
        x, y, test = _idx(Path(data_dir), name)
    elif name == "cifar10":
        x, y, test = _cifar10(Path(data_dir))
    else:
        x, y, test = _csv(Path(data_dir), label_column)
    y, test_y, num_classes = _encode_labels(y, None if test is None else test[1])
    rng = np.random.default_rng(seed)
    all_y, own_test, given_val_fraction = y, test is None, val_fraction
    if test is None:
        rest, test_idx = _stratified_split(y, test_fraction, rng)
        test = (x[test_idx], y[test_idx])
        x, y = x[rest], y[rest]
        val_fraction = val_fraction / (1.0 - test_fraction)
    else:
        test = (test[0], test_y)
    train_idx, val_idx = _stratified_split(y, val_fraction, rng)
    if not len(train_idx) or not len(val_idx):
        raise _too_few(name, data_dir, label_column, all_y, "training" if not len(train_idx) else "validation",
                       given_val_fraction, test_fraction if own_test else None)
    if max_train is not None and max_train < len(train_idx):
        train_idx = train_idx[_stratified_subset(y[train_idx], max_train, rng)]
    if max_val is not None and max_val < len(val_idx):  # drawn after the training cap, which it leaves alone
        val_idx = val_idx[_stratified_subset(y[val_idx], max_val, rng)]
    xtr, xval, xte = _standardize(x[train_idx], x[val_idx], test[0])
    return Dataset(name, Split(xtr, y[train_idx]), Split(xval, y[val_idx]), Split(xte, test[1]), num_classes)


def _check_arguments(data_dir, val_fraction, test_fraction, max_train, max_val, seed) -> None:
    """The Python caller's arguments, as the experiment config checks them for a run."""
    checks = [(data_dir is None or isinstance(data_dir, (str, os.PathLike)), "data_dir", data_dir, "a path, or None"),
              (is_number(val_fraction), "val_fraction", val_fraction, "a number in (0, 1)"),
              (is_number(test_fraction), "test_fraction", test_fraction, "a number in (0, 1)"),
              (max_train is None or (is_int(max_train) and max_train >= 2), "max_train", max_train,
               "integers >= 2, or None"),
              (max_val is None or (is_int(max_val) and max_val >= 2), "max_val", max_val, "integers >= 2, or None"),
              (is_int(seed) and 0 <= seed < 2**32, "seed", seed, "integers from 0 to 2**32 - 1")]
    for ok, field, value, allowed in checks:
        if not ok:
            raise DataError(f"{field}: {value!r} is not allowed; allowed: {allowed}")


# --------------------------------------------------------------------------------------- readers


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32)[:, None, :, :], d.target, None


_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def _find(folder: Path, names: list[str], what: str) -> Path:
    if not folder.is_dir():
        raise DataError(f"data-dir: '{folder}' is not a folder; expected {what} in it")
    for sub in (folder, folder / "raw", *[p / "raw" for p in folder.iterdir() if p.is_dir()]):
        for n in names:
            for cand in (sub / n, sub / f"{n}.gz"):
                if cand.is_file():
                    return cand
    raise DataError(f"data-dir: '{folder}' has no {names[0]}[.gz]; expected {what}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip'd or not."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}); expected an IDX file, optionally gzip'd") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (expected magic bytes 00 00 <type> <ndim>)")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(raw[2])
    if dtype is None:
        raise DataError(f"{path}: unknown IDX data type 0x{raw[2]:02x}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    itemsize = np.dtype(dtype).itemsize
    expected = int(np.prod(dims)) * itemsize
    if len(raw) - (4 + 4 * ndim) != expected:
        raise DataError(f"{path}: IDX header says shape {dims} ({expected} bytes of data), file holds "
                        f"{len(raw) - (4 + 4 * ndim)}")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def _idx(folder: Path, name: str):
    what = f"{name} IDX files ({', '.join(_IDX_FILES.values())}, optionally .gz)"
    paths = {k: _find(folder, [v, v.replace("-idx", ".idx")], what) for k, v in _IDX_FILES.items()}
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for k, a in arrays.items():  # float IDX types (0x0D, 0x0E) can hold NaN or infinity; integer ones cannot
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            i = int(np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0])
            raise DataError(f"{paths[k]}: {'image' if a.ndim > 1 else 'label'} {i} holds a non-finite value "
                            "(NaN or infinity); expected finite numbers")
    for split in ("train", "test"):
        xs, ys = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
            raise DataError(f"data-dir '{folder}': {split} images {xs.shape} and labels {ys.shape} do not match "
                            "(expected (N, H, W) images and (N,) labels)")
    to_x = lambda a: a.astype(np.float32)[:, None, :, :] / 255.0  # noqa: E731
    return to_x(arrays["train_x"]), arrays["train_y"].astype(np.int64), (to_x(arrays["test_x"]), arrays["test_y"].astype(np.int64))


def _unpickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data, labels = d[b"data"], d[b"labels"]
    except Exception as e:  # noqa: BLE001 - any failure here is a malformed file
        raise DataError(f"{path}: not a CIFAR-10 python batch (a pickled dict with b'data' and b'labels'): {e}") from None
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: expected data of shape (N, 3072) and N labels, got {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, np.asarray(labels, dtype=np.int64)


def _cifar10(folder: Path):
    if not folder.is_dir():
        raise DataError(f"data-dir: '{folder}' is not a folder; expected CIFAR-10 python batches in it")
    base = folder / "cifar-10-batches-py" if (folder / "cifar-10-batches-py").is_dir() else folder
    train_files = sorted(base.glob("data_batch_*"))
    test_file = base / "test_batch"
    if not train_files or not test_file.is_file():
        raise DataError(f"data-dir: '{folder}' has no CIFAR-10 python batches; expected data_batch_1..5 and "
                        "test_batch (in it or in cifar-10-batches-py/)")
    parts = [_unpickle(p) for p in train_files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, _unpickle(test_file)


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (float32), labels (strings) and the feature columns' names."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text CSV (not valid {e.encoding}: a binary file?); "
                        f"expected comma-separated text with a header row holding a '{label_column}' column") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e.strerror or e}); expected a CSV file") from None
    if "\0" in text:
        raise DataError(f"{path}: not a text CSV (it holds NUL bytes); expected comma-separated text with a header "
                        f"row holding a '{label_column}' column")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e}); expected comma-separated text with a header row") from None
    if not rows:
        raise DataError(f"{path}: empty CSV; expected a header row with a '{label_column}' column")
    header = rows[0]
    body = [(n, r) for n, r in enumerate(rows[1:], start=2) if r]  # (line number, fields); blank lines skipped
    if label_column not in header:
        raise DataError(f"{path}: no label column '{label_column}' in header {header}; set --label-column")
    li = header.index(label_column)
    if len(header) < 2:
        raise DataError(f"{path}: no feature columns; the header {header} holds only the label column "
                        f"'{label_column}'; expected at least one numeric feature column beside it")
    if not body:
        raise DataError(f"{path}: no data rows")
    x = np.empty((len(body), len(header) - 1), dtype=np.float32)
    labels = []
    with np.errstate(over="ignore"):  # a number beyond float32's range becomes inf: reported below
        for i, (r, row) in enumerate(body):
            if len(row) != len(header):
                raise DataError(f"{path}: line {r} has {len(row)} fields, the header has {len(header)}")
            feats = row[:li] + row[li + 1:]
            try:
                x[i] = [float(v) for v in feats]
            except ValueError:
                bad = next(v for v in feats if not _is_float(v))
                col = [h for h in header if h != label_column][feats.index(bad)]
                raise DataError(f"{path}: line {r}, column {col!r}: {bad!r} is not a number") from None
            if not row[li].strip():  # would become a class of its own, named ''
                raise DataError(f"{path}: line {r}, column {label_column!r}: the label is empty; every row needs one")
            labels.append(row[li])
    finite = np.isfinite(x)
    if not finite.all():  # 'nan', 'inf', or a number beyond float32's range (3.4e38)
        i, j = (int(k[0]) for k in np.nonzero(~finite))
        r, row = body[i]
        col, value = [h for h in header if h != label_column][j], (row[:li] + row[li + 1:])[j].strip()
        raise DataError(f"{path}: line {r}, column {col!r}: {value!r} is not a finite number; NaN, infinity and "
                        "values beyond +-3.4e38 (float32) are not allowed")
    return x, np.asarray(labels), [h for i, h in enumerate(header) if i != li]


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _csv(path: Path, label_column: str):
    if path.is_dir():
        train = path / "train.csv"
        if not train.is_file():
            raise DataError(f"data-dir: '{path}' has no train.csv; give a CSV file or a folder with train.csv "
                            "(and optionally test.csv)")
        x, y, cols = _read_csv(train, label_column)
        if not (path / "test.csv").is_file():
            return x, y, None
        test_path = path / "test.csv"
        tx, ty, test_cols = _read_csv(test_path, label_column)
        if tx.shape[1] != x.shape[1]:
            raise DataError(f"{test_path}: {tx.shape[1]} features, train.csv has {x.shape[1]}")
        if test_cols != cols:
            differ = [f"{t!r} where train.csv has {c!r}" for t, c in zip(test_cols, cols) if t != c]
            raise DataError(f"{test_path}: feature columns differ from train.csv's: {', '.join(differ)}; "
                            "expected the same feature columns in the same order")
        train_labels, test_labels = _comparable(y, ty)
        unseen = np.setdiff1d(test_labels, train_labels)
        if len(unseen):
            shown = ", ".join(repr(_label_text(v)) for v in unseen[:5])
            shown += f", ... ({len(unseen)} in all)" if len(unseen) > 5 else ""
            raise DataError(f"{test_path}: label{'s' if len(unseen) > 1 else ''} {shown} (column '{label_column}') "
                            "found only in the test file, not in train.csv; every test label must be a class of "
                            "train.csv")
        return x, y, (tx, ty)
    if not path.is_file():
        raise DataError(f"data-dir: '{path}' does not exist; expected a CSV file or a folder with train.csv")
    x, y, _ = _read_csv(path, label_column)
    return x, y, None


def _label_text(v) -> str:
    """A label as it reads in the file (3.0 as 3)."""
    v = v.item() if isinstance(v, np.generic) else v
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


# ---------------------------------------------------------------------------------------- splits


def _encode_labels(y: np.ndarray, test_y: np.ndarray | None):
    """Map labels (numbers or names) to 0..K-1 in sorted order (numeric order when all are numbers)."""
    y, test_y = _comparable(y, test_y)
    classes = np.unique(y if test_y is None else np.concatenate([y, test_y]))
    if len(classes) < 2:
        raise DataError(f"labels: found {len(classes)} class; need at least 2")
    enc = lambda a: np.searchsorted(classes, a).astype(np.int64)  # noqa: E731
    return enc(y), None if test_y is None else enc(test_y), len(classes)


def _comparable(y: np.ndarray, test_y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels as numbers where both sets are all numbers, else as text: the values classes are made of."""
    y, test_y = _numeric_if_possible(y), None if test_y is None else _numeric_if_possible(test_y)
    if test_y is not None and (y.dtype.kind in "fiu") != (test_y.dtype.kind in "fiu"):
        y, test_y = y.astype(str), test_y.astype(str)
    return y, test_y


def _numeric_if_possible(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "fiu":
        return a
    try:
        return a.astype(np.float64)
    except ValueError:
        return a


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of every class held out (at least one where possible)."""
    keep, held = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n = _held_out(len(idx), fraction)
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def _held_out(count: int, fraction: float) -> int:
    """How many of a class's ``count`` samples :func:`_stratified_split` holds out."""
    n = int(round(count * fraction))
    return min(max(n, 1 if count > 1 else 0), count - 1 if count > 1 else count)


def _class_minimum(val_fraction: float, test_fraction: float | None) -> int:
    """The fewest samples a class needs to leave one in training and one in validation after the
    splits (``test_fraction`` None: the test set is separate, only validation is split off), the
    fractions as :func:`load_dataset` takes them."""
    if test_fraction is not None:
        val_fraction = val_fraction / (1.0 - test_fraction)  # of what the test split leaves, as load_dataset does
    for count in range(1, 10_000):
        rest = count if test_fraction is None else count - _held_out(count, test_fraction)
        val = _held_out(rest, val_fraction)
        if val >= 1 and rest - val >= 1:
            return count
    return 10_000  # not reached: fractions are in (0, 1), so a large class always splits


def _too_few(name: str, data_dir, label_column: str, y: np.ndarray, empty: str, val_fraction: float,
             test_fraction: float | None) -> DataError:
    """The error for data too small to split: what there is, which split would be empty, what is needed."""
    if name == "csv":
        path = Path(data_dir)
        src, unit = (path / "train.csv" if path.is_dir() else path), "row"
    else:
        src = name if data_dir is None else f"data-dir '{data_dir}'"
        unit = "sample" if name == "digits" else "training image"
    counts = np.unique(y, return_counts=True)[1]
    need = _class_minimum(val_fraction, test_fraction)
    fractions = (f"val_fraction={val_fraction:g}" if test_fraction is None else
                 f"val_fraction={val_fraction:g} and test_fraction={test_fraction:g}")
    if counts.max() == 1:
        what = f"{len(y)} {unit}s, every one its own class"
        what += f" (label column '{label_column}' holds {len(counts)} distinct values)" if name == "csv" else ""
    else:
        what = f"{len(y)} {unit}s in {len(counts)} classes (at most {counts.max()} per class)"
    return DataError(f"{src}: {what}: too few to split, the {empty} split would be empty; with {fractions} a class "
                     f"needs at least {need} {unit}s to give both training and validation one; give more {unit}s")


def _stratified_subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``n`` indices, spread over the classes in proportion (largest remainders first)."""
    classes, counts = np.unique(y, return_counts=True)
    share = counts * (n / len(y))
    take = np.floor(share).astype(int)
    for k in np.argsort(-(share - take))[: n - take.sum()]:
        take[k] += 1
    picked = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        picked.append(idx[:k])
    return np.sort(np.concatenate(picked))


def _standardize(*xs: np.ndarray) -> list[np.ndarray]:
    """Standardize by the first array's statistics (per channel for images, per feature for tables)."""
    ref = xs[0]
    axes = (0, 2, 3) if ref.ndim == 4 else (0,)
    mean = ref.mean(axis=axes, keepdims=True)
    std = ref.std(axis=axes, keepdims=True)
    std = np.where(std > 1e-8, std, 1.0)
    return [((x - mean) / std).astype(np.float32) for x in xs]
