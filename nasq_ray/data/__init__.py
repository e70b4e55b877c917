"""Datasets: the built-in ones, read locally in their standard formats (:mod:`.builtin`), a user's
own torch Datasets from a factory (:mod:`.user`), and the batches trials train on (:mod:`.batches`:
in-memory arrays on the fast path, a ``DataLoader`` otherwise)."""

from .builtin import DATASETS, Dataset, Split, load_dataset, read_idx
from .batches import ArrayBatches, DatasetBatches, augment_mode
from .user import UserData, load_user_data
from .sources import DataBundle, is_factory, load_data

__all__ = ["ArrayBatches", "DATASETS", "DataBundle", "Dataset", "DatasetBatches", "is_factory", "load_data", "Split", "UserData", "augment_mode",
           "load_dataset", "load_user_data", "read_idx"]
