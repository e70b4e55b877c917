"""The built-in block ops and the block that connects them (sequential, residual, parallel)."""

from __future__ import annotations

import torch
from torch import nn

from ._registry import BaseOp, get_op, register_op

CONNECTIONS = ("sequential", "residual", "parallel")
MERGES = ("sum", "concat")


def _conv(in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, groups=groups, bias=False)


class _ConvOp(BaseOp):
    """Conv -> BatchNorm -> ReLU."""

    kernel = 3

    @classmethod
    def layer_names(cls, in_ch, out_ch, stride):
        return ("conv",)

    def __init__(self, in_ch, out_ch, stride):
        super().__init__(in_ch, out_ch, stride)
        self.conv = _conv(in_ch, out_ch, self.kernel, stride)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


@register_op("conv3x3")
class Conv3x3(_ConvOp):
    kernel = 3


@register_op("conv5x5")
class Conv5x5(_ConvOp):
    kernel = 5


@register_op("conv1x1")
class Conv1x1(_ConvOp):
    kernel = 1


class _DwSepOp(BaseOp):
    """Depthwise-separable conv: depthwise k x k -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU."""

    kernel = 3

    @classmethod
    def layer_names(cls, in_ch, out_ch, stride):
        return ("dw", "pw")

    def __init__(self, in_ch, out_ch, stride):
        super().__init__(in_ch, out_ch, stride)
        self.dw = _conv(in_ch, in_ch, self.kernel, stride, groups=in_ch)
        self.dw_bn = nn.BatchNorm2d(in_ch)
        self.pw = _conv(in_ch, out_ch, 1)
        self.pw_bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.pw_bn(self.pw(self.act(self.dw_bn(self.dw(x))))))


@register_op("dwsep3x3")
class DwSep3x3(_DwSepOp):
    kernel = 3


@register_op("dwsep5x5")
class DwSep5x5(_DwSepOp):
    kernel = 5


class _Projection(BaseOp):
    """Weightless ops keep their channels; a 1x1 conv + BN ('proj') adapts them when they must change."""

    @classmethod
    def needs_proj(cls, in_ch, out_ch, stride) -> bool:
        return in_ch != out_ch

    @classmethod
    def layer_names(cls, in_ch, out_ch, stride):
        return ("proj",) if cls.needs_proj(in_ch, out_ch, stride) else ()

    def _init_proj(self, in_ch, out_ch, stride_of_proj):
        if self.needs_proj(in_ch, out_ch, self.stride):
            self.proj = _conv(in_ch, out_ch, 1, stride_of_proj)
            self.proj_bn = nn.BatchNorm2d(out_ch)
        else:
            self.proj = None

    def _project(self, x):
        return x if self.proj is None else self.proj_bn(self.proj(x))


class _PoolOp(_Projection):
    pool_cls: type[nn.Module] = nn.MaxPool2d

    def __init__(self, in_ch, out_ch, stride):
        super().__init__(in_ch, out_ch, stride)
        self.stride = stride
        kwargs = {"count_include_pad": False} if self.pool_cls is nn.AvgPool2d else {}
        self.pool = self.pool_cls(3, stride=stride, padding=1, **kwargs)
        self._init_proj(in_ch, out_ch, 1)
        if self.pool_cls is nn.AvgPool2d:  # its input, at quant.merge_bits (max pooling commutes with quantizers)
            self.pool_quant = nn.Identity()

    def forward(self, x):
        if self.pool_cls is nn.AvgPool2d:
            x = self.pool_quant(x)
        return self._project(self.pool(x))


@register_op("maxpool")
class MaxPool(_PoolOp):
    """3x3 max pooling (stride = the block's stride)."""

    pool_cls = nn.MaxPool2d


@register_op("avgpool")
class AvgPool(_PoolOp):
    """3x3 average pooling (stride = the block's stride)."""

    pool_cls = nn.AvgPool2d


@register_op("identity")
class Identity(_Projection):
    """Skip: passes the input on; a strided 1x1 conv ('proj') when shape must change."""

    @classmethod
    def needs_proj(cls, in_ch, out_ch, stride):
        return in_ch != out_ch or stride != 1

    def __init__(self, in_ch, out_ch, stride):
        super().__init__(in_ch, out_ch, stride)
        self.stride = stride
        self._init_proj(in_ch, out_ch, stride)

    def forward(self, x):
        return self._project(x)


def branch_channels(connection: str, merge: str | None, out_ch: int) -> tuple[int, int]:
    """Output channels of (main branch, parallel branch); concat splits ``out_ch`` between the two."""
    if connection == "parallel" and merge == "concat":
        return out_ch // 2, out_ch - out_ch // 2
    return out_ch, out_ch


def needs_skip_proj(connection: str, in_ch: int, out_ch: int, stride: int) -> bool:
    return connection == "residual" and (in_ch != out_ch or stride != 1)


def block_layer_names(op: str, connection: str, op_b: str | None, merge: str | None,
                      in_ch: int, out_ch: int, stride: int) -> list[str]:
    """Module paths (relative to the block) of every Conv2d the block will hold."""
    ca, cb = branch_channels(connection, merge, out_ch)
    names = [f"op.{n}" for n in get_op(op).layer_names(in_ch, ca, stride)]
    if connection == "parallel":
        names += [f"par.{n}" for n in get_op(op_b).layer_names(in_ch, cb, stride)]
    if needs_skip_proj(connection, in_ch, out_ch, stride):
        names.append("skip")
    return names


class Block(nn.Module):
    """One op with its connection: ``sequential`` op(x); ``residual`` op(x) + shortcut(x);
    ``parallel`` op(x) and op_b(x) side by side, summed or concatenated."""

    def __init__(self, op: str, connection: str, op_b: str | None, merge: str | None,
                 in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.connection, self.merge = connection, merge
        ca, cb = branch_channels(connection, merge, out_ch)
        self.op = get_op(op)(in_ch, ca, stride)
        self.par = get_op(op_b)(in_ch, cb, stride) if connection == "parallel" else None
        if needs_skip_proj(connection, in_ch, out_ch, stride):
            self.skip = _conv(in_ch, out_ch, 1, stride)
            self.skip_bn = nn.BatchNorm2d(out_ch)
        else:
            self.skip = None
        if connection in ("residual", "parallel"):  # the merge's inputs: quantizers at quant.merge_bits
            self.merge_quant_a, self.merge_quant_b = nn.Identity(), nn.Identity()

    def forward(self, x):
        if self.connection == "residual":
            return self.merge_quant_a(self.op(x)) + self.merge_quant_b(x if self.skip is None
                                                                       else self.skip_bn(self.skip(x)))
        y = self.op(x)
        if self.connection == "parallel":
            y, z = self.merge_quant_a(y), self.merge_quant_b(self.par(x))
            return torch.cat([y, z], dim=1) if self.merge == "concat" else y + z
        return y
