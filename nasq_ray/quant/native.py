"""Fused fake-quant kernels in C (``_kernels.c``), compiled on first use and called through ctypes.

On the small tensors of a search (a digits network steps in 2-4 ms), a fake-quant layer's cost is
the number of torch operations it launches, not arithmetic: each costs 5-10 us whatever its size.
These kernels do in one call what the torch path does in 3-8 (observe a range, quantize with its
mask, per-channel max-abs weight quantization), with the same float32 arithmetic: results are
identical bit for bit (tests compare both paths).

The source is compiled once per machine with the C compiler (``$CC``, else ``cc``) into
``$NASQ_RAY_CACHE`` (default ``~/.cache/nasq_ray``), keyed by the source's hash; concurrent
processes (Ray workers) each write a private file and rename it into place. No compiler, a failed
build, or ``NASQ_RAY_NATIVE=0`` leaves the torch path in use (``available()`` says which).
Kernels take contiguous float32 CPU tensors only (``usable``); others take the torch path, as do
tensors too large to gain from a single-threaded kernel when torch runs several threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from ..cache import cache_dir

_SOURCE = Path(__file__).with_name("_kernels.c")
_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-fPIC", "-shared"]
# above this many values, torch's multi-threaded kernels beat one thread (when torch has several)
_PARALLEL_NUMEL = 1 << 16

_lib: ctypes.CDLL | None = None
_tried = False


def _build() -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(_FLAGS).encode() + platform.machine().encode()).hexdigest()[:16]
    target = cache_dir() / f"kernels-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([cc, *_FLAGS, "-o", tmp, str(_SOURCE)], check=True, capture_output=True, timeout=120)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    f32, f64, i32, i64, ptr = ctypes.c_float, ctypes.c_double, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    lib.nq_act_quant.argtypes = [ptr, i64, ptr, ptr, i32, f64, i32, i32, i32, ptr, ptr, ptr]
    lib.nq_act_quant.restype = i32
    lib.nq_fake_quant.argtypes = [ptr, i64, f32, f32, f32, f32, ptr, ptr]
    lib.nq_fake_quant.restype = None
    lib.nq_weight_maxabs.argtypes = [ptr, i64, i64, f32, ptr, ptr]
    lib.nq_weight_maxabs.restype = None
    return lib


def _load() -> ctypes.CDLL | None:
    global _lib, _tried
    if not _tried:
        _tried = True
        if os.environ.get("NASQ_RAY_NATIVE", "1") != "0":
            try:
                _lib = _build()
            except (OSError, subprocess.SubprocessError) as err:
                warnings.warn(f"nasq_ray: fused fake-quant kernels unavailable ({err}); using torch operations",
                              RuntimeWarning, stacklevel=3)
    return _lib


def available() -> bool:
    """True when the compiled kernels are in use."""
    return _load() is not None


def set_enabled(enabled: bool) -> None:
    """Use (``True``) or bypass (``False``) the kernels from now on, in this process (tests compare both)."""
    global _lib, _tried
    if enabled:
        _tried = False
        _load()
    else:
        _lib, _tried = None, True


def usable(x: torch.Tensor) -> bool:
    """Whether ``x`` can take the kernels: contiguous float32 on the CPU, and not so large that
    torch's threads would be faster."""
    if not _tried:
        _load()
    return (_lib is not None and x.dtype is torch.float32 and x.is_cpu and x.is_contiguous() and x.numel() > 0
            and (x.numel() <= _PARALLEL_NUMEL or torch.get_num_threads() == 1))


_INFO = ctypes.c_float * 4
FROZEN, OBSERVE, OWN_RANGE = 0, 1, 2


def act_quant(x: torch.Tensor, running_min: torch.Tensor, running_max: torch.Tensor, mode: int, momentum: float,
              initialized: bool, bits: int, symmetric: bool
              ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[float, float] | None]:
    """The static per-tensor activation quantizer of ``ActFakeQuant`` in one call: ``mode`` FROZEN
    (the running range), OBSERVE (update the running range, float32 CPU scalars changed in place,
    from ``x`` first) or OWN_RANGE (``x``'s range, nothing recorded); then ``x`` fake-quantized
    with that range's quantizer (``act_qparams``). Returns the output, the float mask of unclipped
    values (None when nothing was clipped) and, after an observation of finite values, the new
    running range."""
    y = torch.empty_like(x)
    mask = torch.empty_like(x)
    info = _INFO()
    flags = _lib.nq_act_quant(x.data_ptr(), x.numel(), running_min.data_ptr(), running_max.data_ptr(), mode,
                              momentum, int(initialized), bits, int(symmetric), y.data_ptr(), mask.data_ptr(), info)
    seen = (info[2], info[3]) if mode == OBSERVE and not flags & 1 else None
    return y, (mask if flags & 2 else None), seen


def fake_quant(x: torch.Tensor, inv_scale: float, scale: float, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``clamp(round(x * inv_scale), lo, hi) * scale`` and the float mask of unclipped values."""
    y = torch.empty_like(x)
    mask = torch.empty_like(x)
    _lib.nq_fake_quant(x.data_ptr(), x.numel(), inv_scale, scale, lo, hi, y.data_ptr(), mask.data_ptr())
    return y, mask


def weight_maxabs(w: torch.Tensor, qmax: int, per_channel: bool) -> torch.Tensor:
    """Symmetric max-abs fake-quant of ``w`` (scales as ``fake_quant.weight_scale``)."""
    rows = w.shape[0] if per_channel else 1
    y = torch.empty_like(w)
    _lib.nq_weight_maxabs(w.data_ptr(), rows, w.numel() // rows, float(qmax), y.data_ptr(), None)
    return y
