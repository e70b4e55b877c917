"""``--show-space``: every parameter of a run's space, its choices, when it exists and the layers it
governs; then the fixed values."""

from __future__ import annotations

from .search_space import SearchSpace


def _layers_text(layers: list[str], limit: int = 6) -> str:
    more = f" +{len(layers) - limit} more" if len(layers) > limit else ""
    return ", ".join(layers[:limit]) + more


def show_space(space: SearchSpace) -> str:
    """The space as text, one parameter per line."""
    lines = [f"space {space.name} ({space.source}): {len(space.params)} parameters"
             + (f", input {'x'.join(map(str, space.input_shape))}" if space.input_shape else "")
             + (f", {space.num_classes} classes" if space.num_classes else "")]
    quantized = getattr(space, "quantized", None)
    if quantized is not None:
        groups = getattr(space, "groups", [])
        lines.append(f"  {len(space.layers())} Conv2d/Linear layers ({len(quantized)} quantized), "
                     f"{len(groups)} prunable channel groups; policy {space.policy}"
                     + (f", first/last layers pinned at {space.pin_bits} bits" if space.pin_bits else ""))
    width = max((len(p.name) for p in space.params), default=10)
    for prm in space.params:
        text = f"  {prm.name:<{width}}  {prm.domain.describe()}"
        if prm.when is not None:
            text += f"  (when {space.describe_when(prm)})"
        governed = space.governs(prm.name)
        if governed:
            text += f"  -> {_layers_text(governed)}"
        lines.append(text)
    if quantized is not None:
        pinned = [L for L in space.layers() if space.pinned(L)]
        floats = [L for L in space.layers() if L not in quantized]
        if pinned:
            lines.append(f"  pinned at {space.pin_bits}/{space.pin_bits}: {_layers_text(pinned)}")
        if floats:
            lines.append(f"  float (quant.include / exclude): {_layers_text(floats)}")
    if space.constants:
        fixed = ", ".join(f"{k}={v}" for k, v in space.constants.items())
        lines.append(f"fixed: {fixed}")
    return "\n".join(lines)
