"""A data factory for the example models: ``--data examples.own_model.data:make_data``.

It returns ``{"train": Dataset, "val": Dataset, "test": Dataset}`` of (image, label) with images
as float tensors of shape (1, 28, 28), the way a user's own data factory would. With
``--data-dir`` it reads Fashion-MNIST (or MNIST) from its original IDX files (on Debian: ``apt-get
install dataset-fashion-mnist``); without, scikit-learn's embedded 8x8 digits scaled to 28x28, so
that the example runs on any machine without a download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class Images(Dataset):
    """Images (N, 1, 28, 28) uint8 or float, labels (N,): standardized with the given mean/std."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float):
        self.x = (torch.as_tensor(images, dtype=torch.float32) - mean) / std
        self.y = torch.as_tensor(labels, dtype=torch.int64)
        self.classes = list(range(10))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _idx(path: Path) -> np.ndarray:
    from nasq_ray.data import read_idx

    return read_idx(path)


def _find(folder: Path, stem: str) -> Path:
    for cand in sorted(folder.rglob(f"{stem}*")):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{folder} holds no {stem}[.gz]")


def make_data(data_dir: str | None = None, val_size: int = 10000, seed: int = 0) -> dict:
    if data_dir is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = F.interpolate(torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0, size=(28, 28),
                          mode="bilinear", align_corners=False).numpy()
        y = d.target
        order = np.random.default_rng(seed).permutation(len(y))
        n_test = n_val = len(y) // 5
        test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        xtr, ytr, xval, yval, xte, yte = x[train], y[train], x[val], y[val], x[test], y[test]
    else:
        folder = Path(data_dir)
        xs = _idx(_find(folder, "train-images")).astype(np.float32)[:, None] / 255.0
        ys = _idx(_find(folder, "train-labels")).astype(np.int64)
        xte = _idx(_find(folder, "t10k-images")).astype(np.float32)[:, None] / 255.0
        yte = _idx(_find(folder, "t10k-labels")).astype(np.int64)
        order = np.random.default_rng(seed).permutation(len(ys))
        val, train = order[:val_size], order[val_size:]
        xtr, ytr, xval, yval = xs[train], ys[train], xs[val], ys[val]
    mean, std = float(xtr.mean()), float(xtr.std())
    return {"train": Images(xtr, ytr, mean, std), "val": Images(xval, yval, mean, std),
            "test": Images(xte, yte, mean, std)}
