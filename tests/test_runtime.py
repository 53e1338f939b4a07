"""Process-level allocator settings (``adptycho.runtime``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Allocates (with malloc, as XLA's runtime does), writes and frees a 64 MB block 20 times on a worker thread (where TensorFlow's executor
# runs compiled steps) and prints the minor page faults of the last 10 rounds.
_PROBE = """
import ctypes, resource, threading
import adptycho.runtime as runtime
runtime.configure()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 * 1024 * 1024
def work(out):
    for i in range(20):
        if i == 10:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
out = []
thread = threading.Thread(target=work, args=(out,))
thread.start(); thread.join()
print(runtime.allocator_configured(), out[0])
"""


def _probe(env_value):
    env = dict(os.environ)
    env.pop("ADPTYCHO_MALLOC", None)
    if env_value is not None:
        env["ADPTYCHO_MALLOC"] = env_value
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                            env=env, check=True)
    configured, faults = result.stdout.split()
    return configured == "True", int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the allocator settings are for glibc")
def test_configure_keeps_large_blocks_in_the_heap_and_can_be_opted_out():
    """With the settings applied by ``runtime.configure()``, a large block freed and allocated again on a worker
    thread is reused without page faults; with ``ADPTYCHO_MALLOC=default`` glibc unmaps it and
    every round faults its 16,384 pages in again."""
    configured, faults = _probe(None)
    assert configured
    assert faults < 1000, faults
    configured, faults = _probe("default")
    assert not configured
    assert faults > 10 * 16384 * 0.9, faults
