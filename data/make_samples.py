"""Write the two sample scans of ``data/`` from the full ones in ``../shared/data`` (see README.md).

    python data/make_samples.py            # from the repository root

Each sample keeps the patterns whose positions lie nearest the scan's centroid (a compact patch
of the scan), every field of the original file, and the original layout, so the project's loaders
read them unchanged. Patterns are stored exactly (the far-field counts are whole numbers; stored
as uint16).
"""

from __future__ import annotations

import bz2
import io
import os
import sys

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
FAR_PATTERNS = 120
NEAR_PATTERNS = 100


def _nearest_centre(positions, count):
    centre = positions.mean(axis=0)
    order = np.argsort(np.sum((positions - centre) ** 2, axis=1), kind="stable")
    return np.sort(order[:count])


def far_field(out):
    with bz2.open(os.path.join(SHARED, "tike_siemens_star", "siemens-star-small.npz.bz2")) as f:
        archive = dict(np.load(io.BytesIO(f.read())))
    data, scan = archive["data"], archive["scan"]
    keep = _nearest_centre(scan[0].astype(np.float64), FAR_PATTERNS)
    counts = data[:, keep]
    if not np.array_equal(counts, np.round(counts)) or counts.max() > 65535:
        sys.exit("far-field counts are not whole numbers below 65536: cannot store as uint16")
    buffer = io.BytesIO()
    np.savez(buffer, data=counts.astype(np.uint16), scan=scan[:, keep], probe=archive["probe"])
    with bz2.open(out, "wb", compresslevel=9) as f:
        f.write(buffer.getvalue())


def near_field(out):
    source = os.path.join(SHARED, "petra_p25_nearfield", "PETRAIII_P25_Near_Field_Ptycho.cxi")
    with h5py.File(source, "r") as f:
        translation = f["entry_1/sample_1/geometry_1/translation"][()]
        keep = _nearest_centre(translation[:, :2], NEAR_PATTERNS)
        with h5py.File(out, "w") as g:
            for key, value in f.attrs.items():
                g.attrs[key] = value

            def copy(name, item):
                if isinstance(item, h5py.Dataset):
                    value = item[()]
                    if item.ndim and item.shape[0] == len(translation) and name.endswith(
                            ("detector_1/data", "geometry_1/translation")):
                        value = value[keep]
                    kwargs = {"compression": "gzip", "compression_opts": 9} if np.ndim(
                        value) >= 2 else {}
                    g.create_dataset(name, data=value, **kwargs)
                    for key, attr in item.attrs.items():
                        g[name].attrs[key] = attr

            f.visititems(copy)


if __name__ == "__main__":
    far_field(os.path.join(ROOT, "data", "siemens-star-crop.npz.bz2"))
    near_field(os.path.join(ROOT, "data", "petra-p25-nearfield-crop.cxi"))
    for name in ("siemens-star-crop.npz.bz2", "petra-p25-nearfield-crop.cxi"):
        print(name, os.path.getsize(os.path.join(ROOT, "data", name)), "bytes")
