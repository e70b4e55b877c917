"""Source of a user's own model and data factory, written into a test's working directory as
``mynet.py`` (the current directory is importable: what a user's ``--model mynet:Net`` finds)."""

from pathlib import Path

SOURCE = '''
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset


class Net(nn.Module):
    """A residual add, a depthwise conv, a concatenation, and a Flatten into the classifier."""

    def __init__(self, num_classes=10, width=8, size=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.a = nn.Conv2d(width, width, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(width)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.pw = nn.Conv2d(width, 2 * width, 1)
        self.b1 = nn.Conv2d(2 * width, width, 1)
        self.b2 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(2 * width * (size // 4) ** 2, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + F.relu(self.bn_a(self.a(x)))
        x = F.relu(self.pw(self.dw(x)))
        x = torch.cat([self.b1(x), self.b2(x)], 1)
        x = self.pool(x)
        return self.fc(torch.flatten(x, 1))


class Branchy(Net):
    """Python control flow on tensor values: torch.fx cannot trace it."""

    def forward(self, x):
        if x.sum() > 0:
            x = x * 1.0
        return super().forward(x)


class IntOut(Net):
    def forward(self, x):
        return super().forward(x).long()


class Frozen(Net):
    def __init__(self):
        super().__init__()
        self.requires_grad_(False)


class FewerInEval(Net):
    def forward(self, x):
        out = super().forward(x)
        return out[:, :5] if self.training else out


class Grouped(nn.Module):
    """A grouped (not depthwise) conv between two convs: pruning one channel would break its groups."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 8, 3, padding=1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.g(F.relu(self.c(x)))).mean((2, 3)))


class OnZerosOtherPath(Net):
    """Takes another path on an input of zeros, where the layers' shapes are measured."""

    def forward(self, x):
        if x.abs().sum() == 0:
            return self.fc(x.flatten(1)[:, :3])
        return super().forward(x)


class NaNOut(Net):
    def forward(self, x):
        return super().forward(x) * float("nan")


class WithLstm(Net):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 4)


def not_a_model():
    return 42


def _digits(n):
    from nasq_ray.data import load_dataset

    d = load_dataset("digits", max_train=n)
    make = lambda s: TensorDataset(torch.from_numpy(s.x), torch.from_numpy(s.y))
    return {"train": make(d.train), "val": make(d.val), "test": make(d.test)}


def data(n=300):
    return _digits(n)


class Triples(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(1, 8, 8), 0, "extra"


def bad_items():
    return {"train": Triples(), "val": Triples()}


def rgb():
    x = torch.randn(40, 3, 8, 8)
    y = torch.arange(40) % 10
    return {"train": TensorDataset(x, y), "val": TensorDataset(x, y)}


def _with(split="train", **change):
    """digits with one thing wrong past the first item (only the first is checked up front)"""
    d = _digits(100)
    x, y = d[split].tensors
    x, y = x.clone(), y.clone()
    if "label" in change:
        y[50] = change["label"]
    if "value" in change:
        x[50, 0, 0, 0] = change["value"]
    if "num_classes" in change:
        d["num_classes"] = change["num_classes"]
    d[split] = TensorDataset(x, y[:, None] if change.get("column_labels") else y)
    return d


def label_past_the_classes():
    return _with(label=12)


def negative_label_in_val():
    return _with("val", label=-1)


def column_labels():
    return _with(column_labels=True)


def nan_input():
    return _with(value=float("nan"))


def num_classes_text():
    return _with(num_classes="ten")


class Unreadable(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        if i == 30:
            raise OSError(f"cannot read image {i}")
        return torch.zeros(1, 8, 8), i % 10


def unreadable():
    return {"train": Unreadable(), "val": Unreadable()}


def one_class():
    d = _digits(100)
    for split in ("train", "val"):
        x, y = d[split].tensors
        d[split] = TensorDataset(x, torch.zeros_like(y))
    return d


def takes_no_dir():
    return _digits(100)
'''


def write_user_module(folder: Path, name: str = "mynet") -> Path:
    path = Path(folder) / f"{name}.py"
    path.write_text(SOURCE)
    return path
