"""Registry of block ops, filled by the ``@register_op`` decorator (timm's ``@register_model`` shape).

An op maps ``(in_ch, out_ch, stride)`` to a module; its class method ``layer_names`` says which
Conv/Linear layers (relative module paths) it will create, so that the search space can ask for
bit-widths of exactly the layers that exist.
"""

from __future__ import annotations

from torch import nn

from ..errors import unknown_name

OPS: dict[str, type[BaseOp]] = {}


class BaseOp(nn.Module):
    """A block op: ``in_ch`` channels in, ``out_ch`` out, downsampling by ``stride``."""

    name: str = ""

    @classmethod
    def layer_names(cls, in_ch: int, out_ch: int, stride: int) -> tuple[str, ...]:
        """Relative module paths of the Conv2d layers this op creates for these shapes."""
        raise NotImplementedError

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()


def register_op(name: str):
    """Class decorator: register a :class:`BaseOp` under ``name``. Registering a name twice is an error."""

    if not isinstance(name, str) or not name:
        raise TypeError(f"register_op: the op's name must be a non-empty string, got {name!r}")

    def deco(cls: type[BaseOp]) -> type[BaseOp]:
        if not (isinstance(cls, type) and issubclass(cls, BaseOp)):
            raise TypeError(f"register_op('{name}'): expected a subclass of nasq_ray.models.BaseOp, got {cls!r}")
        if name in OPS:
            raise ValueError(f"op '{name}' is already registered by {OPS[name].__qualname__}")
        cls.name = name
        OPS[name] = cls
        return cls

    return deco


def get_op(name: str, field: str = "op") -> type[BaseOp]:
    """The op class registered under ``name``; an unknown name raises with the list of valid ones."""
    try:
        return OPS[name]
    except KeyError:
        raise unknown_name(field, name, OPS) from None
