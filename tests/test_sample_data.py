"""The sample scans of ``data/`` (crops of the two real scans): present, unchanged, readable by
the project's loaders without ``../shared``, and reconstructable (the residual falls)."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np

from adptycho.io.datasets import load_petra_p25, load_tike_siemens_star
from adptycho.reconstruction import reconstruct

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def test_samples_match_the_checksums_in_their_readme():
    with open(os.path.join(DATA, "README.md")) as f:
        listed = dict((name, digest) for digest, name in
                      re.findall(r"^([0-9a-f]{64})  (\S+)$", f.read(), re.M))
    assert set(listed) == {"siemens-star-crop.npz.bz2", "petra-p25-nearfield-crop.cxi"}
    for name, digest in listed.items():
        with open(os.path.join(DATA, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
    for licence in ("LICENSE_tike.txt", "DATA_LICENSE_petra_p25.txt"):
        assert os.path.getsize(os.path.join(DATA, licence)) > 500


def test_far_field_sample_loads_and_a_short_epie_lowers_the_residual(monkeypatch):
    monkeypatch.setenv("ADPTYCHO_DATA_DIR", "/nonexistent")  # nothing from ../shared
    scan = load_tike_siemens_star(os.path.join(DATA, "siemens-star-crop.npz.bz2"))
    assert scan.num_patterns == 120 and scan.detector_shape == (128, 128)
    assert np.ptp(scan.positions_px, axis=0).min() > 100  # a compact patch, not a line
    result = reconstruct(scan, probe=scan.probe, engine="epie", epochs=4,
                         refine=("object", "probe"), verbose=0)
    assert result.residual_history[-1] < 0.7 * result.residual_history[0], result.residual_history


def test_near_field_sample_loads_with_its_cone_beam_geometry():
    scan = load_petra_p25(os.path.join(DATA, "petra-p25-nearfield-crop.cxi"))
    assert scan.num_patterns == 100 and scan.detector_shape == (100, 100)
    assert scan.geometry == "nearfield" and scan.mask is not None and (~scan.mask).sum() == 5
    np.testing.assert_allclose(scan.pixel_size_m, (55e-6 / 307.8,) * 2, rtol=2e-3)
