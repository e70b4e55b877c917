"""Bad data files for the built-in datasets (CSV, IDX): each is one line of DataError, raised while
the data is read in the driver, never a failure inside the trials."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from nasq_ray.data.builtin import load_dataset
from nasq_ray.errors import DataError


def error_of(*args, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        load_dataset(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg.strip(), f"error message is not one line: {msg!r}"
    return msg


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in r) for r in rows]) + "\n")
    return path


def labelled(counts: list[int]) -> list[list]:
    """Rows (f1, f2, label) with ``counts[k]`` rows of class k."""
    labels = [k for k, n in enumerate(counts) for _ in range(n)]
    return [[0.1 * i, (-1) ** i, c] for i, c in enumerate(labels)]


def write_idx(path: Path, arr: np.ndarray, type_code: int) -> None:
    dtype = {0x08: np.uint8, 0x0D: ">f4"}[type_code]
    path.write_bytes(bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
                     + np.asarray(arr, dtype=dtype).tobytes())


def write_mnist(folder: Path, train_labels: list[int], test_labels: list[int], images=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.array(labels), 0x08)
        if images is not None and prefix == "train":  # float32 images (IDX type 0x0D)
            write_idx(folder / f"{prefix}-images-idx3-ubyte", images, 0x0D)
        else:
            write_idx(folder / f"{prefix}-images-idx3-ubyte", np.zeros((len(labels), 4, 4)), 0x08)
    return folder


# ---------------------------------------------------------------------------------- too little data


@pytest.mark.parametrize("counts, fractions, need, empty", [
    ([2, 1, 1], {}, 3, "validation"),  # 4 rows: the test split takes one, validation would get none
    ([2, 2], {"val_fraction": 0.4, "test_fraction": 0.4}, 3, "training"),  # validation would take all
])
def test_a_csv_too_small_to_split_says_how_many_rows_it_needs(tmp_path, counts, fractions, need, empty):
    p = write_csv(tmp_path / "d.csv", ["f1", "f2", "label"], labelled(counts))
    msg = error_of("csv", p, **fractions)
    assert msg.startswith(f"{p}: {sum(counts)} rows in {len(counts)} classes")
    assert f"the {empty} split would be empty" in msg and f"a class needs at least {need} rows" in msg
    # the number the message gives is the real minimum: one class that large is enough
    ok = write_csv(tmp_path / "ok.csv", ["f1", "f2", "label"], labelled([need, 1]))
    ds = load_dataset("csv", ok, **fractions)
    assert len(ds.train) and len(ds.val)


def test_a_csv_with_one_row_per_class(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["f1", "f2", "label"], labelled([1, 1, 1]))
    msg = error_of("csv", p)
    assert msg.startswith(f"{p}: 3 rows, every one its own class (label column 'label' holds 3 distinct values)")
    assert "validation split would be empty" in msg and "at least 3 rows" in msg


def test_a_continuous_label_column_makes_every_row_its_own_class(tmp_path):
    rows = [[0.37 * i - 5, i % 3] for i in range(40)]
    p = write_csv(tmp_path / "d.csv", ["f1", "label"], rows)
    assert "label column 'f1' holds 40 distinct values" in error_of("csv", p, label_column="f1")


def test_idx_with_five_training_images(tmp_path):
    folder = write_mnist(tmp_path / "mn", [0, 1, 2, 3, 4], [0, 1, 2])
    msg = error_of("mnist", folder)
    assert msg.startswith(f"data-dir '{folder}': 5 training images, every one its own class")
    assert "with val_fraction=0.2 a class needs at least 2 training images" in msg
    assert len(load_dataset("mnist", write_mnist(tmp_path / "ok", [0, 0, 1], [0, 1])).val) == 1


# ------------------------------------------------------------------------------------- malformed CSVs


def test_a_binary_file_given_as_csv(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(bytes(range(256)) * 4)
    msg = error_of("csv", p)
    assert msg.startswith(f"{p}: not a text CSV")


def test_a_csv_holding_nul_bytes(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"f1,label\n1,0\n\x00\x00,1\n")
    assert error_of("csv", p).startswith(f"{p}: not a text CSV (it holds NUL bytes)")


def test_a_csv_with_only_the_label_column(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["label"], [[i % 3] for i in range(30)])
    assert error_of("csv", p).startswith(f"{p}: no feature columns")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e39"])
def test_a_non_finite_csv_value_is_named_by_line_and_column(tmp_path, value):
    rows = labelled([10, 10])
    rows[6][1] = value
    p = write_csv(tmp_path / "d.csv", ["f1", "f2", "label"], rows)
    assert error_of("csv", p).startswith(f"{p}: line 8, column 'f2': '{value}' is not a finite number")


def test_a_non_finite_value_in_a_test_csv(tmp_path):
    write_csv(tmp_path / "train.csv", ["f1", "f2", "label"], labelled([10, 10]))
    rows = labelled([3, 3])
    rows[2][0] = "nan"
    write_csv(tmp_path / "test.csv", ["f1", "f2", "label"], rows)
    assert error_of("csv", tmp_path).startswith(f"{tmp_path / 'test.csv'}: line 4, column 'f1': 'nan'")


def test_a_non_finite_float_idx_image(tmp_path):
    images = np.zeros((6, 4, 4), dtype=np.float32)
    images[4, 1, 2] = np.nan
    folder = write_mnist(tmp_path / "mn", [0, 1, 0, 1, 0, 1], [0, 1], images=images)
    msg = error_of("mnist", folder)
    assert msg.startswith(f"{folder / 'train-images-idx3-ubyte'}: image 4 holds a non-finite value")


# ---------------------------------------------------------------------------- test.csv against train.csv


def test_test_csv_feature_columns_must_match_train_csv_by_name(tmp_path):
    write_csv(tmp_path / "train.csv", ["f1", "f2", "label"], labelled([10, 10]))
    write_csv(tmp_path / "test.csv", ["f1", "f3", "label"], labelled([3, 3]))
    msg = error_of("csv", tmp_path)
    assert msg.startswith(f"{tmp_path / 'test.csv'}: feature columns differ from train.csv's: "
                          "'f3' where train.csv has 'f2'")


def test_test_csv_labels_must_be_classes_of_train_csv(tmp_path):
    write_csv(tmp_path / "train.csv", ["f1", "f2", "label"], labelled([10, 10]))
    write_csv(tmp_path / "test.csv", ["f1", "f2", "label"], labelled([2, 2, 2, 2]))
    msg = error_of("csv", tmp_path)
    assert msg.startswith(f"{tmp_path / 'test.csv'}: labels '2', '3' (column 'label') found only in the test file")
    # the same classes written differently (1 and 1.0) are one class
    write_csv(tmp_path / "test.csv", ["f1", "f2", "label"], [[0, 0, "0.0"], [1, 1, "1.0"]])
    assert load_dataset("csv", tmp_path).num_classes == 2


def test_a_non_finite_value_with_a_line_break_in_its_quotes_stays_one_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("f1,label\n" + "".join(f"{i},{i % 2}\n" for i in range(10)) + '"nan\n",1\n')
    assert error_of("csv", p).startswith(f"{p}: line 12, column 'f1': 'nan' is not a finite number")


def test_an_empty_label_cell_is_named_not_made_a_class(tmp_path):
    rows = labelled([4, 4])
    rows[5][2] = ""
    msg = error_of("csv", write_csv(tmp_path / "t.csv", ["f1", "f2", "label"], rows))
    assert msg.endswith("t.csv: line 7, column 'label': the label is empty; every row needs one")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(max_train=0), "max_train: 0 is not allowed; allowed: integers >= 2, or None"),  # was an empty split
    (dict(max_train=-5), "max_train: -5 is not allowed"),  # was 543 rows
    (dict(max_val=2.5), "max_val: 2.5 is not allowed"),
    (dict(val_fraction="0.2"), "val_fraction: '0.2' is not allowed; allowed: a number in (0, 1)"),
    (dict(seed=-1), "seed: -1 is not allowed; allowed: integers from 0 to 2**32 - 1"),
    (dict(data_dir=5), "data_dir: 5 is not allowed; allowed: a path, or None"),
])
def test_load_datasets_arguments_are_checked_as_a_runs_config_is(kwargs, needle):
    assert error_of("digits", **kwargs).startswith(needle)
