"""FFTs outside XLA: a training step as XLA-compiled pieces joined by TensorFlow FFT ops (CPU).

Why. XLA's CPU runtime runs the FFT of a compiled program with DUCC, which splits a batch of
transforms over the intra-op thread pool only when it is called from a thread outside that pool
(``ducc0::google::EigenThreadPool::adjust_nthreads`` returns 1 on a pool thread). The runtime's
thunk executor resumes a program on whichever thread finished the previous asynchronous thunk
(a loop fusion split over the pool), so after the first such thunk the rest of the program,
FFTs included, often runs on a pool thread and every later FFT uses one core. On the standard
benchmark problem (2 cores, batch 400) single epochs of the whole-XLA step came out as either
about 0.12 s or about 0.19 s: a ``perf`` timeline showed the forward and inverse FFTs on one
thread in the slow epochs and on two in the fast ones.

What. Inside ``fft_outside_xla()``, functions decorated with ``piece`` run as their own
XLA-compiled clusters (``tf.function(jit_compile=True)``), and the FFTs between them are plain
TensorFlow ops, which TensorFlow runs on an inter-op thread, so DUCC always gets the whole
intra-op pool. The pieces are cut where an FFT separates them anyway (its input and output are
full buffers in XLA as well), so no extra array is written. Outside the scope ``piece`` is the
identity: under a whole-XLA ``jit_compile`` step the pieces are traced inline, as before.

``PtychoModel.compile(jit_compile="auto")`` chooses this (``accel.plan.choose_plan``: an
``ExecutionPlan`` with ``pieces``) for far-field models on the fused loss path when no GPU is
visible; ``jit_compile=True`` keeps one XLA program. ``accel.forward.chained_losses`` then also
cuts each batch into ``chains()`` consecutive parts whose pieces and FFTs are independent ops,
which TensorFlow's executor runs concurrently: the window loops are sequential XLA loops on one
core each.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os

import tensorflow as tf

__all__ = ["fft_outside_xla", "active", "piece", "available", "same_mode", "chains"]

_ACTIVE = contextvars.ContextVar("adptycho_fft_outside_xla", default=False)


@contextlib.contextmanager
def fft_outside_xla(enabled: bool = True):
    """While tracing inside this scope, ``piece`` functions become separate XLA clusters."""
    token = _ACTIVE.set(bool(enabled))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active() -> bool:
    """True inside ``fft_outside_xla()``."""
    return _ACTIVE.get()


def available() -> bool:
    """True where the split helps: no GPU visible (XLA's GPU FFT has no such thread issue)."""
    return not tf.config.list_logical_devices("GPU")


def chains() -> int:
    """Number of independent chains a batch is cut into (``accel.forward.chained_losses``): one per
    core, at most 4. Each chain is its own sequence of pieces and FFT ops, and TensorFlow's
    executor runs the chains concurrently; XLA runs a window loop on one core."""
    return max(1, min(os.cpu_count() or 1, 4))


def piece(fn):
    """Decorator: inside ``fft_outside_xla()`` call ``fn`` as an XLA-compiled tf.function (one
    cluster); elsewhere call it inline. ``fn`` takes and returns tensors (nested structures
    allowed); Python values it needs go in its closure. A module-level ``fn`` keeps one
    tf.function, so its traces and XLA compilations are shared by all chains and all traces
    of the step (per input shape); a ``fn`` defined inside another function is a new one
    per call."""

    compiled = []  # one tf.function per decorated function: chains and retraces share it

    @functools.wraps(fn)
    def wrapper(*args):
        if not _ACTIVE.get():
            return fn(*args)
        if not compiled:
            compiled.append(tf.function(fn, jit_compile=True, autograph=False))
        return compiled[0](*args)

    return wrapper


def same_mode(fn):
    """Decorator for a ``tf.custom_gradient`` gradient function defined inside the scope: the
    gradient is traced later (by ``GradientTape.gradient``, possibly outside the scope), so it
    re-enters the mode that was active when it was defined."""
    mode = _ACTIVE.get()

    @functools.wraps(fn)
    def wrapper(*args):  # no **kwargs: tf.custom_gradient reads it as taking `variables`
        with fft_outside_xla(mode):
            return fn(*args)

    return wrapper
