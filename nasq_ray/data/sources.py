"""The data a run trains on, as batches: a built-in dataset held in memory (the fast path) or a
user's data factory read through DataLoaders; one entry for every trial kind that trains."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ConfigError
from ..user_code import UserCallable, is_ref
from .batches import ArrayBatches, DatasetBatches, augment_mode
from .builtin import load_dataset
from .user import load_user_data, takes_data_dir


@dataclass(frozen=True)
class DataBundle:
    """Train, validation and test batches (test None when the data has none), what the inputs look
    like, and a name for messages. ``in_memory``: the built-in arrays (cheap to index, to cache
    per-sample values on)."""

    train: ArrayBatches | DatasetBatches
    val: ArrayBatches | DatasetBatches
    test: ArrayBatches | DatasetBatches | None
    input_shape: tuple[int, ...]
    num_classes: int
    name: str
    in_memory: bool

    def with_classes(self, num_classes: int, classes_from: str) -> DataBundle:
        """The same data with its class count told (a user model's outputs, where the factory did not say)."""
        if self.in_memory:
            return replace(self, num_classes=num_classes)
        told = lambda b: None if b is None else b.with_classes(num_classes, classes_from)  # noqa: E731
        return replace(self, train=told(self.train), val=told(self.val), test=told(self.test), num_classes=num_classes)


def is_factory(name) -> bool:
    """Whether ``data.name`` names a user's data factory (``MODULE:CALLABLE``, or a callable)."""
    return callable(name) or is_ref(name)


def check_data_dir_read(d) -> None:
    """A new run refuses a data section ``d`` whose ``dir`` or ``label_column`` nothing would read (most
    likely ``--data-dir`` without ``--data``). A saved run with one is not refused: its ``dir`` is ignored,
    as it was when it ran."""
    if d.label_column != "label" and d.name != "csv":
        raise ConfigError(f"data.label_column: '{d.label_column}' is not read: it names a CSV's label column, and the "
                          f"data here is '{d.name if isinstance(d.name, str) else 'a data factory'}'; give --data csv, "
                          "or leave out --label-column")
    if d.dir is None:
        return
    if is_factory(d.name):
        factory = UserCallable.of(d.name, d.args, "data")
        if not takes_data_dir(factory):
            raise ConfigError(f"data.dir: '{d.dir}' is not read: {factory.label} takes no data_dir argument; give the "
                              "factory a data_dir parameter, or leave out --data-dir")
    elif d.name == "digits":
        raise ConfigError(f"data.dir: '{d.dir}' is not read: data 'digits' is embedded; name the data in that folder "
                          "with --data (fashion_mnist, mnist, cifar10, csv or MODULE:CALLABLE), or leave out --data-dir")


def load_data(d, device: str = "cpu", num_classes: int | None = None) -> DataBundle:
    """The batches of the experiment's data section ``d`` (a :class:`nasq_ray.config.DataConfig`).
    ``num_classes``: already known, so a data factory's labels need no scan; 0: left for the caller to
    tell (a user model's outputs say it), the bundle's ``num_classes`` is then 0 for a data factory."""
    if is_factory(d.name):
        for key, value, default in (("augment", d.augment, False), ("max_train", d.max_train, None),
                                     ("max_val", d.max_val, None)):
            if value != default:
                raise ConfigError(f"data.{key}: not available with a data factory (its Datasets are used as they are, "
                                  "transforms and size included); leave it out")
        ud = load_user_data(d.name, d.args, d.dir, num_classes)
        make = lambda split: DatasetBatches(ud, split, d.workers, device)  # noqa: E731
        return DataBundle(make("train"), make("val"), make("test") if "test" in ud.splits else None,
                          ud.input_shape, ud.num_classes, ud.factory.label, in_memory=False)
    if d.args:
        raise ConfigError(f"data.args: keyword arguments are for a data factory (MODULE:CALLABLE); data '{d.name}' "
                          "is built in and takes none")
    data = load_dataset(d.name, d.dir, label_column=d.label_column, val_fraction=d.val_fraction,
                        test_fraction=d.test_fraction, max_train=d.max_train, max_val=d.max_val,
                        seed=d.seed)
    aug = augment_mode(d.name, d.augment)
    return DataBundle(ArrayBatches(data.train, aug, device), ArrayBatches(data.val, None, device),
                      ArrayBatches(data.test, None, device) if len(data.test) else None,
                      data.input_shape, data.num_classes, d.name, in_memory=True)
