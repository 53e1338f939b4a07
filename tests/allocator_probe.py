"""Run as a script by the allocator tests: ``python tests/allocator_probe.py import|configure``.

Imports adptycho (the package, the API and the command-line module), calls
``adptycho.runtime.configure()`` in ``configure`` mode, then allocates (with malloc, as XLA's
runtime does), writes and frees a 64 MB block 20 times on a worker thread (where TensorFlow's
executor runs compiled steps) and prints ``<allocator configured> <minor page faults of the last
10 rounds>``: ~164,000 faults with glibc's defaults (every free unmaps the block), ~0 once the
allocator is tuned.
"""

import ctypes
import resource
import sys
import threading

import adptycho
import adptycho.cli  # noqa: F401
import adptycho.reconstruction  # noqa: F401
import adptycho.runtime as runtime

if sys.argv[1] == "configure":
    runtime.configure()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 64 * 1024 * 1024


def work(out):
    for i in range(20):
        if i == 10:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(SIZE)
        ctypes.memset(block, 1, SIZE)
        libc.free(block)
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)


out = []
thread = threading.Thread(target=work, args=(out,))
thread.start()
thread.join()
print(runtime.allocator_configured(), out[0], adptycho.__name__)
