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

Nothing here runs on ``import adptycho``: importing the library leaves the process as it was
(environment, allocator, logging levels, random generators). The ``adptycho`` command opts in by
calling ``configure()`` first thing; a Python program opts in the same way::

    import adptycho.runtime
    adptycho.runtime.configure()   # before the first TensorFlow step

Set ``ADPTYCHO_MALLOC=default`` in the environment to leave the allocator alone even then. A
no-op where the C library is not glibc.

Seeding. Functions that take a ``seed`` (``reconstruct``, the training commands) seed Python's
``random``, NumPy's global generator, TensorFlow's global seed and Keras' global seed generator
from it (``keras.utils.set_random_seed``) for their own duration only: ``restores_global_rngs``
puts the caller's generator states back when they return (or raise), so a call with ``seed=0``
neither reseeds nor advances the caller's generators. One limit: an eager TensorFlow op that is
given an explicit op-level ``seed=`` restarts its sequence after such a call (TensorFlow clears
its kernel cache when a global seed is set); ops without an op seed continue where they were.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import random

__all__ = ["configure", "configure_allocator", "allocator_configured", "global_rng_state",
           "restore_global_rngs", "restores_global_rngs", "seeded"]

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


def configure() -> bool:
    """Opt this process into the settings the ``adptycho`` command uses.

    Quiets TensorFlow's C++ start-up logging (``TF_CPP_MIN_LOG_LEVEL=2`` unless already set; it
    only takes effect if TensorFlow is not imported yet) and applies ``configure_allocator``.
    Returns what ``configure_allocator`` returns.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return configure_allocator()


def global_rng_state() -> dict:
    """A snapshot of the process-wide random generators: Python's ``random``, NumPy's legacy
    global generator, TensorFlow's eager global seed (and its op-seed stream) and Keras' global
    seed and seed generator. TensorFlow and Keras are only looked at when already imported."""
    import sys

    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state()}
    if "tensorflow" in sys.modules:
        from tensorflow.python.eager import context

        ctx = context.context()
        rng = getattr(ctx, "_rng", None)
        state["tf"] = (getattr(ctx, "_seed", None), rng.getstate() if rng is not None else None)
    if "keras" in sys.modules:
        from keras.src.backend.common import global_state

        state["keras"] = {name: global_state.get_global_attribute(name)
                          for name in ("global_random_seed", "global_seed_generator")}
    return state


def restore_global_rngs(state: dict) -> None:
    """Put back the generator states of a ``global_rng_state()`` snapshot."""
    import sys

    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "tensorflow" in sys.modules:
        from tensorflow.python.eager import context

        ctx = context.context()
        seed, rng_state = state.get("tf", (None, None))
        ctx._seed = seed
        if rng_state is None:
            ctx._rng = None
        else:
            ctx._rng = random.Random()
            ctx._rng.setstate(rng_state)
    if "keras" in sys.modules:
        from keras.src.backend.common import global_state

        for name, value in state.get("keras", {}).items():
            global_state.set_global_attribute(name, value)


@contextlib.contextmanager
def seeded(seed: int):
    """Seed every global generator from ``seed`` inside the block and restore the caller's
    states on leaving it (see the module docstring)."""
    import keras

    saved = global_rng_state()
    try:
        keras.utils.set_random_seed(int(seed))
        yield
    finally:
        restore_global_rngs(saved)


def restores_global_rngs(function):
    """Decorator: ``function`` may seed the global generators; the caller's states are put back
    when it returns or raises."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        saved = global_rng_state()
        try:
            return function(*args, **kwargs)
        finally:
            restore_global_rngs(saved)

    return wrapper
