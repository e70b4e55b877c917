"""Where nasq-ray keeps what it computes once per machine (compiled kernels, latency measurements):
``$NASQ_RAY_CACHE``, default ``~/.cache/nasq_ray``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("NASQ_RAY_CACHE") or Path.home() / ".cache" / "nasq_ray")
