"""The result file every peer driver writes (numpy and json only: it runs in the peers' venvs)."""

import json

import numpy as np


def save_result(path, obj, probe, origin, info: dict, **arrays) -> None:
    """Write ``object`` and ``probe`` (complex64), ``origin`` (object-grid corner of translation
    zero), ``info`` (JSON) and any extra ``arrays`` to the npz ``path``; print ``info``."""
    np.savez(path, object=np.asarray(obj).astype(np.complex64),
             probe=np.asarray(probe).astype(np.complex64), origin=origin,
             info=json.dumps(info), **arrays)
    print(json.dumps(info))
