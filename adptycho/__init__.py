"""adptycho: ptychography reconstruction by automatic differentiation in TensorFlow."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
