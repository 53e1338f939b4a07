"""Process-level allocator settings (``adptycho.runtime``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "allocator_probe.py")


def _probe(env_value):
    env = dict(os.environ)
    env.pop("ADPTYCHO_MALLOC", None)
    if env_value is not None:
        env["ADPTYCHO_MALLOC"] = env_value
    result = subprocess.run([sys.executable, PROBE, "configure"], capture_output=True,
                            text=True, env=env, check=True)
    configured, faults, _ = result.stdout.split()
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
