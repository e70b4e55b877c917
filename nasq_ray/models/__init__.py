"""Model building: the block-op registry, the blocks and ``build_model``."""

from ._registry import OPS, BaseOp, get_op, register_op
from .builder import Net, build_model, cost_of, measure_cost, trace_layers

__all__ = ["OPS", "BaseOp", "Net", "build_model", "cost_of", "get_op", "measure_cost", "register_op", "trace_layers"]
