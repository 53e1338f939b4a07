"""The wheel carries the shipped model weights and an installed copy finds them from anywhere.

Builds the sdist and from it the wheel (``python -m build --no-isolation``), checks that every
shipped file is in it and matches its model card's sha256, installs it into a fresh virtual
environment (with the already-installed dependencies visible, ``--no-deps``: no download) and, from
a directory outside the checkout, loads the shipped IRMAE and StyleGAN2 through the installed
package. ``.ci/run`` does the full check: a clean environment with the wheel's dependencies
resolved by pip, then ``adptycho demo`` and a latent and a generator reconstruction from ``/tmp``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"irmae-mnist": ("encoder.weights.h5", "decoder.weights.h5", "mean_latent.npy"),
          "irmae-mnist-3": ("encoder.weights.h5", "decoder.weights.h5", "mean_latent.npy"),
          "stylegan2-faces": ("generator.weights.h5", "discriminator.weights.h5")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    # sdist first, then the wheel from the unpacked sdist in a temporary folder: a clean build
    # (no stale build/ of the tree) that also checks MANIFEST.in carries the models
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), ROOT],
                   check=True, capture_output=True, text=True, env=env)
    wheels = [name for name in os.listdir(out) if name.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return out / wheels[0]


def _card_hashes(text):
    hashes = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            hashes[parts[1]] = parts[0]
    return hashes


def test_wheel_carries_every_shipped_weight_file_matching_its_card(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for model, files in MODELS.items():
            prefix = f"adptycho/models/{model}/"
            for file in ("card.md", "config.json") + files:
                assert prefix + file in names, prefix + file
            hashes = _card_hashes(archive.read(prefix + "card.md").decode())
            assert set(files) <= set(hashes)
            for file, expected in hashes.items():
                assert hashlib.sha256(archive.read(prefix + file)).hexdigest() == expected, file
        # figures, histories and training checkpoints stay in the source tree
        assert not any("/checkpoint/" in name or name.endswith(".png") for name in names)


_LOAD = r"""
import os, sys
import adptycho
from adptycho.nn.irmae import load_decoder, model_directory
from adptycho.nn.stylegan2 import load_stylegan2, stylegan2_directory
decoder, mean_latent = load_decoder("irmae-mnist")[:2]
generator = load_stylegan2("stylegan2-faces")[0]
print(adptycho.__file__)
print(model_directory("irmae-mnist-3"))
print(stylegan2_directory("stylegan2-faces"))
print(mean_latent.shape[-1], generator is not None)
"""


def test_installed_wheel_loads_the_shipped_models_from_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", str(wheel)],
                   check=True, capture_output=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    away = tmp_path / "elsewhere"
    away.mkdir()
    result = subprocess.run([python, "-c", _LOAD], cwd=away, env=env, capture_output=True,
                            text=True, check=True)
    package_file, irmae_dir, stylegan_dir, latent_dim, loaded = result.stdout.split()
    site = str(venv)
    assert package_file.startswith(site), package_file
    for directory in (irmae_dir, stylegan_dir):
        assert directory.startswith(site) and "adptycho/models/" in directory, directory
    assert int(latent_dim) > 0 and loaded == "True"
    version = subprocess.run([str(venv / "bin" / "adptycho"), "--version"], cwd=away, env=env,
                             capture_output=True, text=True, check=True)
    assert "0.1.0" in version.stdout + version.stderr
