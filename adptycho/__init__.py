"""adptycho: ptychography reconstruction by automatic differentiation in TensorFlow."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from adptycho.runtime import configure_allocator as _configure_allocator  # noqa: E402

_configure_allocator()

__version__ = "0.1.0"
