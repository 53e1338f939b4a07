"""Process-level settings that make TensorFlow's CPU steps faster.

``configure_allocator`` keeps glibc's ``malloc`` from returning large blocks to the kernel.

By default glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it on
``free``. An XLA-compiled training step allocates its large temporaries (exit waves, far field,
back-propagated waves: 52 MB each for 400 patterns of 128x128 complex64) on every call, so every
step page-faulted them in again and the kernel zeroed them first: 38,000 minor page faults
(about 150 MB) per step on the standard benchmark problem. With ``mmap`` disabled for ``malloc``
(``M_MMAP_MAX = 0``) and a high trim threshold, freed blocks stay in the heap and are reused:
0 page faults per step; the object+probe gradient step at batch 400 went from 292 to 200 ms
(median of 10 calls, 2 CPU cores), and fit epochs (``experiments/allocator_ab.py``, three
interleaved rounds) from 0.255 to 0.229 s (object+probe) and 0.493 to 0.453 s (calibration).

TensorFlow runs compiled steps on worker threads, and glibc gives worker threads their own
arenas, whose heaps it deletes as soon as they are empty, whatever the thresholds: so the
process is limited to one arena (``M_ARENA_MAX = 1``). The cost is that the process keeps its
peak heap instead of returning it to the system until it exits.

Applied once when ``adptycho`` is imported. Set ``ADPTYCHO_MALLOC=default`` in the environment
to leave the allocator alone. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["configure_allocator", "allocator_configured"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_THRESHOLD_BYTES = 1 << 30

_state = {"configured": False}


def configure_allocator() -> bool:
    """Keep freed large blocks in glibc's heap (see the module docstring).

    Returns True when the settings were applied (now or earlier), False where they were not
    (opted out with ``ADPTYCHO_MALLOC=default``, or no glibc ``mallopt``).
    """
    if _state["configured"]:
        return True
    if os.environ.get("ADPTYCHO_MALLOC", "").lower() == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
          and mallopt(_M_ARENA_MAX, 1) == 1)
    _state["configured"] = ok
    return ok


def allocator_configured() -> bool:
    """Whether ``configure_allocator`` has applied its settings in this process."""
    return _state["configured"]
