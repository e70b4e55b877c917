"""Space files: the shipped ``search_spaces/`` folder, reading a space's YAML, loading a space by
name or path.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from ..config import load_yaml
from ..errors import SearchSpaceError, unknown_name


def _spaces_dir() -> Path:
    """The shipped ``search_spaces/`` folder: beside the package in a checkout, inside it when installed."""
    beside = Path(__file__).resolve().parents[2] / "search_spaces"
    if beside.is_dir():
        return beside
    return Path(str(importlib.resources.files("nasq_ray.search_spaces")))


SPACES_DIR = _spaces_dir()


def read_space_yaml(path: Path) -> dict:
    """The raw mapping of a space file; malformed YAML raises with the line."""
    return load_yaml(path, "space", SearchSpaceError)


def shipped_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_space_path(name_or_path: str | Path) -> Path:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise SearchSpaceError(f"space: expected a shipped space's name ({', '.join(shipped_spaces())}) or the path of "
                               f"a space YAML file, got {type(name_or_path).__name__}")
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if p.is_dir():
            raise SearchSpaceError(f"space: '{p}' is a folder; allowed: the path of a space YAML file, or a shipped "
                                   f"space's name ({', '.join(shipped_spaces())})")
        if not p.is_file():
            raise SearchSpaceError(f"space: file '{p}' does not exist")
        return p
    shipped = SPACES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise unknown_name("space", name_or_path, shipped_spaces())
