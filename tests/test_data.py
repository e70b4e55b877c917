"""Datasets: digits splits, and the local readers (IDX, CIFAR-10 pickles, CSV) on tiny files."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nasq_ray.data import DATASETS, load_dataset, read_idx
from nasq_ray.errors import ConfigError, DataError, UnknownNameError

DIGITS_N = 1797


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    assert msg.strip()
    return msg


# ------------------------------------------------------------------------------------------ digits


def _raw_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target


def _unstandardize(ds) -> list[np.ndarray]:
    """Recover the raw integer pixels (0..16) of every split from the shared affine standardization."""
    grid = np.unique(np.round(ds.train.x, 5))
    step = grid[1] - grid[0]  # one raw grey level
    scale = 1.0 / step
    offset = -grid[0] * scale  # raw 0 is the smallest value of the training split
    out = []
    for split in (ds.train, ds.val, ds.test):
        raw = split.x * scale + offset
        assert np.allclose(raw, np.round(raw), atol=1e-2), "splits are not standardized with one affine map"
        out.append(np.round(raw).astype(np.int64).reshape(len(split), 8, 8))
    return out


def test_digits_shapes_and_sizes(digits):
    assert digits.name == "digits"
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    for split in (digits.train, digits.val, digits.test):
        assert split.x.shape[1:] == (1, 8, 8)
        assert split.x.dtype == np.float32
        assert split.y.dtype == np.int64
        assert len(split.x) == len(split.y) > 0
        assert set(np.unique(split.y)) == set(range(10))
    assert len(digits.train) + len(digits.val) + len(digits.test) == DIGITS_N
    # default fractions 0.2 / 0.2 of the whole
    assert abs(len(digits.test) - 0.2 * DIGITS_N) <= 10
    assert abs(len(digits.val) - 0.2 * DIGITS_N) <= 10


def test_digits_splits_partition_the_raw_data(digits):
    raw_x, raw_y = _raw_digits()
    parts = _unstandardize(digits)
    seen = Counter()
    for xs, split in zip(parts, (digits.train, digits.val, digits.test)):
        seen.update((x.tobytes(), int(y)) for x, y in zip(xs, split.y))
    expected = Counter((x.astype(np.int64).tobytes(), int(y)) for x, y in zip(raw_x, raw_y))
    # every raw row (image and label) appears exactly as often as in the raw data: disjoint and complete
    assert seen == expected


def test_digits_splits_disjoint_by_index(digits):
    """Rows unique in the raw data must land in exactly one split."""
    raw_x, _ = _raw_digits()
    raw_counts = Counter(x.astype(np.int64).tobytes() for x in raw_x)
    parts = _unstandardize(digits)
    keys = [{x.tobytes() for x in xs if raw_counts[x.tobytes()] == 1} for xs in parts]
    assert not keys[0] & keys[1]
    assert not keys[0] & keys[2]
    assert not keys[1] & keys[2]
    assert sum(map(len, keys)) == sum(1 for c in raw_counts.values() if c == 1)


def test_digits_stratified(digits):
    _, raw_y = _raw_digits()
    per_class = np.bincount(raw_y, minlength=10)
    for split, frac in ((digits.test, 0.2), (digits.val, 0.2), (digits.train, 0.6)):
        counts = np.bincount(split.y, minlength=10)
        assert np.all(np.abs(counts - per_class * frac) <= 2), (frac, counts, per_class * frac)


def test_digits_standardized(digits):
    assert abs(float(digits.train.x.mean())) < 1e-3
    assert abs(float(digits.train.x.std()) - 1.0) < 1e-3
    # val/test use the training statistics, not their own: not exactly standardized, but close
    for split in (digits.val, digits.test):
        assert abs(float(split.x.mean())) < 0.1
        assert 0.85 < float(split.x.std()) < 1.15
        assert float(split.x.mean()) != pytest.approx(0.0, abs=1e-6)


def test_digits_deterministic_per_seed(digits):
    again = load_dataset("digits", seed=0)
    for a, b in zip((digits.train, digits.val, digits.test), (again.train, again.val, again.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    other = load_dataset("digits", seed=1)
    assert len(other.train) + len(other.val) + len(other.test) == DIGITS_N
    assert not (other.test.x.shape == digits.test.x.shape and np.array_equal(other.test.x, digits.test.x))
    assert not (other.train.x.shape == digits.train.x.shape and np.array_equal(other.train.x, digits.train.x))


def test_custom_fractions():
    ds = load_dataset("digits", val_fraction=0.1, test_fraction=0.3)
    assert abs(len(ds.test) - 0.3 * DIGITS_N) <= 10
    assert abs(len(ds.val) - 0.1 * DIGITS_N) <= 10
    assert len(ds.train) + len(ds.val) + len(ds.test) == DIGITS_N


@pytest.mark.parametrize("max_train", [10, 57, 100, 333])
def test_max_train_caps_training_split(max_train):
    ds = load_dataset("digits", max_train=max_train)
    n = len(ds.train)
    assert n <= max_train, f"max_train={max_train} gave {n} training examples"
    assert len(ds.train) >= max_train - 10
    counts = np.bincount(ds.train.y, minlength=10)
    assert counts.min() >= 1
    assert counts.max() - counts.min() <= 1 + max_train // 50  # stratified
    # val and test are unaffected by the cap
    full = load_dataset("digits")
    assert len(ds.val) == len(full.val)
    assert len(ds.test) == len(full.test)


def test_max_train_larger_than_split_is_noop(digits):
    ds = load_dataset("digits", max_train=10_000)
    assert len(ds.train) == len(digits.train)


def test_max_val_caps_the_validation_split_stratified_and_leaves_the_others(digits):
    ds = load_dataset("digits", max_val=100)
    assert len(ds.val) == 100
    counts = np.bincount(ds.val.y, minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11  # 10 classes, 10 each, give or take the rounding
    rows = {r.tobytes() for r in digits.val.x}
    assert all(r.tobytes() in rows for r in ds.val.x)  # a subset of the whole validation split
    np.testing.assert_array_equal(ds.train.x, digits.train.x)
    np.testing.assert_array_equal(ds.test.y, digits.test.y)
    both = load_dataset("digits", max_train=200, max_val=50)  # the training cap draws the same with or without it
    np.testing.assert_array_equal(both.train.y, load_dataset("digits", max_train=200).train.y)
    assert len(both.val) == 50
    assert len(load_dataset("digits", max_val=10_000).val) == len(digits.val)


def test_without_test(digits):
    d = digits.without_test()
    assert len(d.test) == 0
    assert d.test.x.shape[1:] == (1, 8, 8)
    assert len(d.train) == len(digits.train)


# ---------------------------------------------------------------------------------- argument errors


def test_unknown_dataset_lists_names():
    with pytest.raises(UnknownNameError) as e:
        load_dataset("mnsit", "/tmp")
    msg = one_line(e)
    assert "mnsit" in msg
    for name in DATASETS:
        assert name in msg
    assert "did you mean 'mnist'" in msg


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "csv"])
def test_local_dataset_needs_data_dir(name):
    with pytest.raises(DataError) as e:
        load_dataset(name)
    msg = one_line(e)
    assert name in msg
    assert "data-dir" in msg


@pytest.mark.parametrize("val,test", [(0.0, 0.2), (0.2, 0.0), (1.0, 0.2), (0.5, 0.5), (0.7, 0.4), (-0.1, 0.2)])
def test_bad_fractions(val, test):
    with pytest.raises(DataError) as e:
        load_dataset("digits", val_fraction=val, test_fraction=test)
    msg = one_line(e)
    assert "val_fraction" in msg and "test_fraction" in msg


# --------------------------------------------------------------------------------------------- IDX

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    arr = arr.astype(dt)
    return bytes([0, 0, _IDX_CODES[dt], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


N_TRAIN, N_TEST, K, HW = 40, 20, 4, 28


def make_mnist(folder: Path, gz: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    tr_x = rng.integers(0, 256, size=(N_TRAIN, HW, HW), dtype=np.uint8)
    te_x = rng.integers(0, 256, size=(N_TEST, HW, HW), dtype=np.uint8)
    tr_y = np.repeat(np.arange(K, dtype=np.uint8), N_TRAIN // K)
    rng.shuffle(tr_y)
    te_y = np.repeat(np.arange(K, dtype=np.uint8), N_TEST // K)
    rng.shuffle(te_y)
    write_idx(folder / "train-images-idx3-ubyte", tr_x, gz)
    write_idx(folder / "train-labels-idx1-ubyte", tr_y, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", te_x, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", te_y, gz)
    return tr_x, tr_y, te_x, te_y


@pytest.mark.parametrize("arr", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-3, 0, 5, 127, -128], dtype=np.int8),
    np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
    np.arange(-6, 6, dtype=np.int32).reshape(4, 3) * 100_000,
    np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2),
    np.linspace(-1, 1, 8, dtype=np.float64),
])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, arr, gz):
    p = write_idx(tmp_path / "a-idx", arr, gz)
    got = read_idx(p)
    assert got.shape == arr.shape
    np.testing.assert_array_equal(got.astype(arr.dtype), arr)


def check_mnist(ds, written, name="mnist"):
    tr_x, tr_y, te_x, te_y = written
    assert ds.name == name
    assert ds.num_classes == K
    assert ds.input_shape == (1, HW, HW)
    assert len(ds.test) == N_TEST
    assert len(ds.train) + len(ds.val) == N_TRAIN
    np.testing.assert_array_equal(ds.test.y, te_y.astype(np.int64))
    assert Counter(np.concatenate([ds.train.y, ds.val.y]).tolist()) == Counter(tr_y.tolist())
    assert set(ds.val.y.tolist()) == set(range(K))  # stratified validation split
    # the test images are the t10k images, in order, standardized by one affine map
    flat_raw = te_x.reshape(-1).astype(np.float64)
    flat = ds.test.x.reshape(-1).astype(np.float64)
    assert np.corrcoef(flat_raw, flat)[0, 1] > 0.9999
    # train + val images are the train images with their labels
    raw_pairs = Counter((x.tobytes(), int(y)) for x, y in zip(tr_x, tr_y))
    slope, icpt = np.polyfit(flat_raw, flat, 1)
    got_pairs = Counter()
    for split in (ds.train, ds.val):
        raw = np.round((split.x[:, 0].astype(np.float64) - icpt) / slope).astype(np.uint8)
        got_pairs.update((x.tobytes(), int(y)) for x, y in zip(raw, split.y))
    assert got_pairs == raw_pairs
    assert abs(float(ds.train.x.mean())) < 1e-3


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_plain_and_gz(tmp_path, gz):
    written = make_mnist(tmp_path, gz)
    check_mnist(load_dataset("mnist", tmp_path), written)


def test_mnist_torchvision_layout(tmp_path):
    written = make_mnist(tmp_path / "MNIST" / "raw", gz=True)
    check_mnist(load_dataset("mnist", tmp_path), written)


def test_fashion_mnist_raw_subfolder(tmp_path):
    written = make_mnist(tmp_path / "raw", gz=False, seed=3)
    check_mnist(load_dataset("fashion_mnist", tmp_path), written, "fashion_mnist")


def test_mnist_small_images(tmp_path):
    rng = np.random.default_rng(1)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (24, 7, 9), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.tile(np.arange(6, dtype=np.uint8), 4))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 7, 9), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(6, dtype=np.uint8))
    ds = load_dataset("mnist", tmp_path)
    assert ds.input_shape == (1, 7, 9)
    assert ds.num_classes == 6
    assert len(ds.test) == 6


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"\x1f\x08\x08\x03" + bytes(100))
    with pytest.raises(DataError) as e:
        read_idx(p)
    msg = one_line(e)
    assert str(p) in msg and "magic" in msg


def test_idx_unknown_type(tmp_path):
    p = tmp_path / "x-idx"
    p.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 3) + bytes(3))
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert str(p) in one_line(e)


def test_idx_truncated_data(tmp_path):
    p = tmp_path / "x-idx"
    blob = idx_bytes(np.zeros((5, 4, 4), dtype=np.uint8))
    p.write_bytes(blob[:-7])
    with pytest.raises(DataError) as e:
        read_idx(p)
    msg = one_line(e)
    assert str(p) in msg and "(5, 4, 4)" in msg


def test_idx_truncated_header(tmp_path):
    p = tmp_path / "x-idx"
    p.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 5))
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert str(p) in one_line(e)


def test_idx_too_short_for_magic(tmp_path):
    p = tmp_path / "x-idx"
    p.write_bytes(b"\x00\x00")
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert str(p) in one_line(e)


def test_idx_size_mismatch_extra_bytes(tmp_path):
    p = tmp_path / "x-idx"
    p.write_bytes(idx_bytes(np.zeros((3, 4), dtype=np.uint8)) + b"\x00\x00")
    with pytest.raises(DataError) as e:
        read_idx(p)
    msg = one_line(e)
    assert "(3, 4)" in msg and "14" in msg


def test_idx_truncated_multibyte_data(tmp_path):
    """A cut-off int32 file is a DataError, not numpy's 'buffer size must be a multiple' ValueError."""
    p = tmp_path / "x-idx"
    p.write_bytes(idx_bytes(np.arange(12, dtype=np.int32).reshape(3, 4))[:-1])
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert str(p) in one_line(e)


@pytest.mark.parametrize("content", ["cut", "not_gzip"])
def test_idx_corrupt_gz(tmp_path, content):
    """A truncated download or a mislabelled .gz is a DataError naming the file."""
    p = tmp_path / "train-images-idx3-ubyte.gz"
    blob = gzip.compress(idx_bytes(np.zeros((10, 8, 8), dtype=np.uint8)))
    p.write_bytes(blob[: len(blob) // 2] if content == "cut" else b"this is not gzip data at all")
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert str(p) in one_line(e)


def test_mnist_missing_labels_file(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    msg = one_line(e)
    assert str(tmp_path) in msg
    assert "t10k-labels-idx1-ubyte" in msg
    assert "IDX" in msg


def test_mnist_not_a_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path / "nowhere")
    msg = one_line(e)
    assert "nowhere" in msg and "folder" in msg


def test_mnist_label_count_mismatch(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(N_TRAIN - 3, dtype=np.uint8) % K)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    msg = one_line(e)
    assert str(tmp_path) in msg and "train" in msg and f"({N_TRAIN - 3},)" in msg


def test_mnist_images_wrong_rank(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((N_TEST, HW * HW), dtype=np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    msg = one_line(e)
    assert "test" in msg and "(N, H, W)" in msg


def test_mnist_bad_file_in_folder(tmp_path):
    make_mnist(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"PK\x03\x04" + p.read_bytes()[4:])
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    assert "train-images-idx3-ubyte" in one_line(e)


# ----------------------------------------------------------------------------------------- CIFAR-10


def write_batch(path: Path, n: int, rng, labels=None, data=None) -> tuple[np.ndarray, list]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    if labels is None:
        labels = [int(i % 10) for i in range(n)]
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f)
    return data, labels


def make_cifar(folder: Path, seed=0):
    rng = np.random.default_rng(seed)
    d1, l1 = write_batch(folder / "data_batch_1", 30, rng)
    d2, l2 = write_batch(folder / "data_batch_2", 20, rng)
    dt, lt = write_batch(folder / "test_batch", 20, rng, labels=[int(i % 10) for i in range(5, 25)])
    return np.concatenate([d1, d2]), l1 + l2, dt, lt


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_cifar10(tmp_path, sub):
    tr_d, tr_l, te_d, te_l = make_cifar(tmp_path / sub if sub else tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.input_shape == (3, 32, 32)
    assert ds.num_classes == 10
    assert len(ds.test) == 20
    assert len(ds.train) + len(ds.val) == 50
    np.testing.assert_array_equal(ds.test.y, np.asarray(te_l))
    assert Counter(np.concatenate([ds.train.y, ds.val.y]).tolist()) == Counter(tr_l)
    # test images keep the CIFAR layout: first 1024 bytes are the red plane (per-channel affine map)
    raw = te_d.reshape(-1, 3, 32, 32).astype(np.float64)
    for c in range(3):
        r = np.corrcoef(raw[:, c].ravel(), ds.test.x[:, c].astype(np.float64).ravel())[0, 1]
        assert r > 0.9999
    # per-channel standardization of the training split
    np.testing.assert_allclose(ds.train.x.mean(axis=(0, 2, 3)), 0.0, atol=1e-3)
    np.testing.assert_allclose(ds.train.x.std(axis=(0, 2, 3)), 1.0, atol=1e-3)


def test_cifar10_malformed_pickle(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    msg = one_line(e)
    assert "data_batch_2" in msg and "CIFAR-10" in msg


def test_cifar10_missing_key(tmp_path):
    make_cifar(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    assert "data_batch_1" in one_line(e)


@pytest.mark.parametrize("data,labels", [
    (np.zeros((10, 3000), np.uint8), list(range(10))),
    (np.zeros((10, 3, 32, 32), np.uint8), list(range(10))),
    (np.zeros((10, 3072), np.uint8), list(range(9))),
])
def test_cifar10_wrong_shape(tmp_path, data, labels):
    make_cifar(tmp_path)
    write_batch(tmp_path / "test_batch", 0, None, labels=labels, data=data)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    msg = one_line(e)
    assert "test_batch" in msg and "3072" in msg


def test_cifar10_missing_test_batch(tmp_path):
    make_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    msg = one_line(e)
    assert str(tmp_path) in msg and "test_batch" in msg


def test_cifar10_not_a_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path / "missing")
    assert "missing" in one_line(e)


# --------------------------------------------------------------------------------------------- CSV


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_string_labels(tmp_path):
    names = ["dog", "cat", "emu"]
    rows = [[i, i * 0.5, names[i % 3], -i] for i in range(60)]
    p = write_csv(tmp_path / "d.csv", ["f1", "f2", "label", "f3"], rows)
    ds = load_dataset("csv", p)
    assert ds.input_shape == (3,)
    assert ds.num_classes == 3
    assert len(ds.train) + len(ds.val) + len(ds.test) == 60
    for split in (ds.train, ds.val, ds.test):
        assert set(split.y.tolist()) == {0, 1, 2}
    # labels sorted by name: cat=0, dog=1, emu=2. Feature f1 = i, so i % 3 recovers the label.
    # Un-standardize f1 with the training statistics (f2 = f1 / 2 and f3 = -f1 are redundant).
    xall = np.concatenate([ds.train.x, ds.val.x, ds.test.x])
    yall = np.concatenate([ds.train.y, ds.val.y, ds.test.y])
    slope, icpt = np.polyfit(xall[:, 0], xall[:, 2], 1)
    assert slope == pytest.approx(-1.0, abs=1e-4)  # f3 == -f1 after standardizing both
    i_hat = np.argsort(np.argsort(xall[:, 0]))  # rank of f1 == row number
    expected = np.array([{"cat": 0, "dog": 1, "emu": 2}[names[i % 3]] for i in i_hat])
    np.testing.assert_array_equal(yall, expected)


def test_csv_int_labels_keep_numeric_order(tmp_path):
    """Integer labels 0..11 map to classes 0..11 (numeric order, not text order where '10' < '2')."""
    rows = [[i, i % 12] for i in range(120)]  # the feature is the row number
    p = write_csv(tmp_path / "d.csv", ["row", "label"], rows)
    ds = load_dataset("csv", p)
    assert ds.num_classes == 12
    xall = np.concatenate([ds.train.x, ds.val.x, ds.test.x])[:, 0]
    yall = np.concatenate([ds.train.y, ds.val.y, ds.test.y])
    row = np.argsort(np.argsort(xall))  # rank of the standardized feature == row number
    np.testing.assert_array_equal(yall, row % 12)


def test_csv_small_int_labels(tmp_path):
    rows = [[i, (i * 7) % 5, i % 3] for i in range(45)]
    p = write_csv(tmp_path / "d.csv", ["a", "b", "label"], rows)
    ds = load_dataset("csv", p)
    assert ds.num_classes == 3
    assert ds.input_shape == (2,)
    np.testing.assert_allclose(ds.train.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.train.x.std(axis=0), 1.0, atol=1e-4)


def test_csv_folder_with_test(tmp_path):
    write_csv(tmp_path / "train.csv", ["x", "y", "label"], [[i, 2 * i, "ab"[i % 2]] for i in range(30)])
    write_csv(tmp_path / "test.csv", ["x", "y", "label"], [[i, 2 * i, "ab"[i % 2]] for i in range(100, 111)])
    ds = load_dataset("csv", tmp_path)
    assert len(ds.test) == 11
    assert len(ds.train) + len(ds.val) == 30
    np.testing.assert_array_equal(ds.test.y, [i % 2 for i in range(100, 111)])
    # test rows were standardized with train statistics: they lie far above the training range
    assert ds.test.x[:, 0].min() > ds.train.x[:, 0].max()


def test_csv_folder_without_test(tmp_path):
    write_csv(tmp_path / "train.csv", ["x", "label"], [[i, i % 2] for i in range(40)])
    ds = load_dataset("csv", tmp_path)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 40


def test_csv_custom_label_column(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["target", "a", "b"], [[["no", "yes"][i % 2], i, i * i] for i in range(30)])
    ds = load_dataset("csv", p, label_column="target")
    assert ds.num_classes == 2 and ds.input_shape == (2,)
    with pytest.raises(DataError) as e:
        load_dataset("csv", p)  # default 'label' is not there
    msg = one_line(e)
    assert "'label'" in msg and "--label-column" in msg and str(p) in msg


def test_csv_missing_label_column(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["a", "label"], [[1, 0], [2, 1]])
    with pytest.raises(DataError) as e:
        load_dataset("csv", p, label_column="klass")
    msg = one_line(e)
    assert "'klass'" in msg and "--label-column" in msg


def test_csv_non_numeric_feature(tmp_path):
    rows = [[i, i, i % 2] for i in range(10)]
    rows[4][1] = "abc"
    p = write_csv(tmp_path / "d.csv", ["a", "b", "label"], rows)
    with pytest.raises(DataError) as e:
        load_dataset("csv", p)
    msg = one_line(e)
    assert "line 6" in msg and "'b'" in msg and "'abc'" in msg and str(p) in msg


def test_csv_ragged_row(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,0\n3,4,1\n5,1\n6,7,0\n")
    with pytest.raises(DataError) as e:
        load_dataset("csv", p)
    msg = one_line(e)
    assert "line 4" in msg and str(p) in msg


def test_csv_empty_file(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("")
    with pytest.raises(DataError) as e:
        load_dataset("csv", p)
    msg = one_line(e)
    assert "empty" in msg and str(p) in msg


def test_csv_header_only(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n")
    with pytest.raises(DataError) as e:
        load_dataset("csv", p)
    assert str(p) in one_line(e)


def test_csv_single_class(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["a", "label"], [[i, "x"] for i in range(10)])
    with pytest.raises(DataError) as e:
        load_dataset("csv", p)
    assert "class" in one_line(e)


def test_csv_missing_path(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("csv", tmp_path / "nope.csv")
    msg = one_line(e)
    assert "nope.csv" in msg and "does not exist" in msg


def test_csv_folder_without_train(tmp_path):
    write_csv(tmp_path / "test.csv", ["a", "label"], [[1, 0], [2, 1]])
    with pytest.raises(DataError) as e:
        load_dataset("csv", tmp_path)
    msg = one_line(e)
    assert "train.csv" in msg and str(tmp_path) in msg


def test_csv_test_feature_mismatch(tmp_path):
    write_csv(tmp_path / "train.csv", ["a", "b", "label"], [[i, i, i % 2] for i in range(10)])
    write_csv(tmp_path / "test.csv", ["a", "label"], [[i, i % 2] for i in range(4)])
    with pytest.raises(DataError) as e:
        load_dataset("csv", tmp_path)
    assert "test.csv" in one_line(e)


def test_augmentation_shifts_and_flips_within_the_padding():
    import torch

    from nasq_ray.data.batches import augment_batch, augment_mode

    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8) + 1
    out = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for a, b in zip(out, x):  # each output is a shifted (by at most H/8 = 1) and maybe mirrored copy
        found = False
        for img in (b, b.flip(2)):
            padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
            found |= any(torch.equal(a, padded[:, i:i + 8, j:j + 8]) for i in range(3) for j in range(3))
        assert found
    assert augment_mode("cifar10", True) == "crop_flip" and augment_mode("digits", True) == "crop"
    assert augment_mode("csv", False) is None
    with pytest.raises(ConfigError, match="data.augment"):
        augment_mode("csv", True)


def test_a_data_factory_reads_the_same_batches_with_dataloader_workers(tmp_path, monkeypatch):
    import torch

    from nasq_ray.data import DatasetBatches, load_user_data
    from user_model_code import write_user_module

    write_user_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    data = load_user_data("mynet:data", {"n": 100})
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10 and data.splits == ("train", "val", "test")
    inline, workers = DatasetBatches(data, "train", 0), DatasetBatches(data, "train", 1)
    a = [y for _, y, _ in inline.epoch(32, torch.Generator().manual_seed(1))]
    b = [y for _, y, _ in workers.epoch(32, torch.Generator().manual_seed(1))]
    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))


def test_a_subset_of_a_split_is_n_samples_drawn_once_per_seed_from_it(tmp_path, monkeypatch):
    import torch

    from nasq_ray.data import DatasetBatches, load_user_data
    from nasq_ray.data.batches import ArrayBatches
    from nasq_ray.data.builtin import Split
    from user_model_code import write_user_module

    rng = np.random.default_rng(0)
    whole = ArrayBatches(Split(rng.normal(size=(50, 1, 2, 2)).astype(np.float32), np.arange(50) % 10))
    assert whole.subset(None, 0) is whole and whole.subset(50, 0) is whole
    part = whole.subset(12, 3)
    x, y = torch.cat([xb for xb, _ in part.eval(5)]), torch.cat([yb for _, yb in part.eval(5)])
    assert len(part) == len(y) == 12
    rows = [int(np.flatnonzero((whole.split.x == xi.numpy()).all(axis=(1, 2, 3)))[0]) for xi in x]
    assert rows == sorted(set(rows)) and [int(v) for v in y] == [r % 10 for r in rows]
    assert [int(v) for _, yb in whole.subset(12, 3).eval() for v in yb] == [int(v) for v in y]  # the seed's draw
    assert [int(v) for _, yb in whole.subset(12, 4).eval() for v in yb] != [int(v) for v in y]
    picked = pickle.loads(pickle.dumps(part))  # what a Ray worker gets
    assert torch.equal(torch.cat([xb for xb, _ in picked.eval()]), x)

    write_user_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    data = load_user_data("mynet:data", {"n": 100})
    factory = DatasetBatches(data, "val", 0)
    some = factory.subset(7, 0)
    labels = torch.cat([yb for _, yb in some.eval(3)])
    assert len(some) == len(labels) == 7 and len(factory.subset(10**6, 0)) == len(factory)
    assert len(some.subset(3, 1)) == 3


def test_a_data_dir_nothing_reads_is_refused_for_a_new_run_and_ignored_in_a_saved_one():
    from nasq_ray.config import DataConfig
    from nasq_ray.data.sources import check_data_dir_read, load_data
    from nasq_ray.errors import ConfigError

    d = DataConfig(dir="/tmp")  # --data-dir without --data
    with pytest.raises(ConfigError, match=r"^data.dir: '/tmp' is not read: data 'digits' is embedded"):
        check_data_dir_read(d)
    assert load_data(d).num_classes == 10  # a run saved so before the refusal still resumes and exports
    check_data_dir_read(DataConfig())
    check_data_dir_read(DataConfig(name="mnist", dir="/tmp"))


class _Labelled(torch.utils.data.Dataset):
    """A map-style Dataset that lists its labels, as torchvision's do."""

    def __init__(self, targets):
        self.targets = targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(1, 4, 4), int(self.targets[i])


@pytest.mark.parametrize("made, needle", [
    (lambda: {"train": _Labelled([0, 1, 2]), "val": _Labelled([0, 3]), "num_classes": 3},
     "['val'].targets holds the label 3; allowed: integers 0 .. 2 (3 classes)"),
    (lambda: {"train": _Labelled([0, 1, 2]), "val": _Labelled([1, 0]), "test": _Labelled(torch.tensor([1, -1]))},
     "['test'].targets holds the label -1; allowed: integers 0 .. 2"),
])
def test_a_data_factorys_listed_labels_outside_its_classes_are_refused(made, needle):
    from nasq_ray.data import load_user_data
    from nasq_ray.errors import DataError

    with pytest.raises(DataError) as e:
        load_user_data(made)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert load_user_data(lambda: {"train": _Labelled([0, 1, 2]), "val": _Labelled([2, 0])}).num_classes == 3


class _Raising(torch.utils.data.Dataset):
    """A Dataset whose ``__getitem__`` (or ``__len__``) is the user's code failing."""

    def __init__(self, getitem=None, length=None):
        self.getitem, self.length = getitem, length

    def __len__(self):
        if self.length is not None:
            raise self.length
        return 3

    def __getitem__(self, i):
        if self.getitem is not None:
            raise self.getitem
        return torch.zeros(1, 4, 4), i % 2


@pytest.mark.parametrize("made, needle", [
    (lambda: {"train": _Raising(IndexError("nope")), "val": _Raising()},
     "['train'][0] raised IndexError: nope; expected an (input, label) item for every index"),
    (lambda: {"train": _Raising(), "val": _Raising(), "test": _Raising(FileNotFoundError("no such file:\n  img_0.png"))},
     "['test'][0] raised FileNotFoundError: no such file: img_0.png;"),
    (lambda: {"train": _Raising(), "val": _Raising(length=RuntimeError("no index file"))},
     ("len(", ")['val']) raised RuntimeError: no index file")),
])
def test_a_data_factorys_dataset_that_raises_is_named_in_one_line(made, needle):
    from nasq_ray.data import load_user_data
    from nasq_ray.errors import DataError

    with pytest.raises(DataError) as e:
        load_user_data(made)
    msg = str(e.value)
    assert msg.startswith("data: ") and "\n" not in msg
    assert all(part in msg for part in (needle if isinstance(needle, tuple) else (needle,))), msg


def test_targets_that_are_not_numbers_leave_the_classes_to_the_items():
    from nasq_ray.data import load_user_data

    class Named(_Raising):
        targets = ["cat", "dog", "cat"]  # names, not class indices: the items' labels (0, 1, 0) say the classes

    assert load_user_data(lambda: {"train": Named(), "val": _Raising()}).num_classes == 2
