"""Build hook: the wheel carries the shipped model weights (``adptycho/nn/shipped.py``).

``models/`` at the top of the source tree stays the source of truth; ``build_py`` copies each
model's files named in ``SHIPPED_FILES`` into ``adptycho/models/NAME/`` of the build, so a wheel
(or ``pip install .``) finds them through ``importlib.resources``. Everything else is in setup.cfg.
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_FILES = ("card.md", "config.json", "encoder.weights.h5", "decoder.weights.h5",
                 "mean_latent.npy", "generator.weights.h5", "discriminator.weights.h5")


class build_py_with_models(build_py):
    """``build_py`` that also copies ``models/*/{SHIPPED_FILES}`` into ``adptycho/models/``."""

    def run(self):
        super().run()
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
        if not os.path.isdir(source):
            raise RuntimeError(f"{source} is missing: the wheel must carry the shipped models")
        for name in sorted(os.listdir(source)):
            if not os.path.isfile(os.path.join(source, name, "config.json")):
                continue
            target = os.path.join(self.build_lib, "adptycho", "models", name)
            os.makedirs(target, exist_ok=True)
            for file in SHIPPED_FILES:
                path = os.path.join(source, name, file)
                if os.path.isfile(path):
                    shutil.copy2(path, os.path.join(target, file))


setup(cmdclass={"build_py": build_py_with_models})
