"""``import adptycho`` changes nothing in the importing process; ``reconstruct`` leaves the
caller's random generators as they were; the CLI and ``adptycho.runtime.configure()`` opt in."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The "caller" imports TensorFlow, Keras and adptycho's other dependencies itself (their own
# import-time settings, e.g. the warning filters TensorFlow Probability and SciPy add, are theirs),
# seeds every global generator and sets a logging level; then it imports adptycho and every one
# of its modules. It prints what it sees.
_IMPORT_EVERYTHING = r"""
import json, logging, os, pkgutil, random, sys, warnings
import numpy as np, tensorflow as tf, keras
import h5py, matplotlib, scipy.special, skimage, tensorflow_probability
logging.getLogger("tensorflow").setLevel(logging.ERROR)
def loggers():
    named = {name: getattr(logger, "level", None)
             for name, logger in logging.root.manager.loggerDict.items()}
    return {"root": logging.root.level, "handlers": len(logging.root.handlers), **named}
def draws(seed):
    if seed is not None:
        random.seed(seed); np.random.seed(seed); tf.random.set_seed(seed)
    return [random.random(), float(np.random.rand()), float(tf.random.uniform([]))]
SEED = int(sys.argv[1])
env = dict(os.environ)
levels = loggers()
filters = [repr(f) for f in warnings.filters]
random.seed(SEED); np.random.seed(SEED); tf.random.set_seed(SEED)
if sys.argv[2] == "import":
    import adptycho
    for info in pkgutil.walk_packages(adptycho.__path__, "adptycho."):
        __import__(info.name)
    import adptycho.runtime as runtime
    configured = runtime.allocator_configured()
else:
    configured = None
after_levels = loggers()
print(json.dumps({
    "env_changed": sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)),
    "levels_changed": sorted(k for k in levels if levels[k] != after_levels.get(k)),
    "filters_changed": filters != [repr(f) for f in warnings.filters],
    "draws": draws(None),
    "allocator_configured": configured,
}))
"""


def _run(mode, seed=7):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("ADPTYCHO_MALLOC", None)
    result = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING, str(seed), mode],
                            capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def imported():
    return _run("import"), _run("baseline")


def test_import_leaves_the_environment_and_logging_levels_alone(imported):
    after, _ = imported
    assert after["env_changed"] == [], after["env_changed"]  # TF_CPP_MIN_LOG_LEVEL included
    assert after["levels_changed"] == [], after["levels_changed"]
    assert after["filters_changed"] is False


def test_import_neither_reseeds_nor_advances_any_global_generator(imported):
    """Python's, NumPy's and TensorFlow's next draws after importing every adptycho module
    equal those of a process that seeded the same and never imported adptycho."""
    after, baseline = imported
    assert after["draws"] == baseline["draws"]


def test_import_leaves_the_allocator_alone(imported):
    after, _ = imported
    assert after["allocator_configured"] is False


PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "allocator_probe.py")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the allocator settings are for glibc")
def test_allocator_is_only_tuned_on_request():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("ADPTYCHO_MALLOC", None)

    def faults(mode):
        out = subprocess.run([sys.executable, PROBE, mode], capture_output=True,
                             text=True, env=env, check=True).stdout
        return int(out.split()[1])

    assert faults("import") > 10 * 16384 * 0.9  # glibc's defaults: every round faults again
    assert faults("configure") < 1000


def test_configure_sets_the_log_level_only_when_unset():
    code = ("import os, adptycho.runtime as r; r.configure(); "
            "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["2"]
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["0"]


def _tiny_scan():
    from adptycho.geometry import circular_aperture, normalize_probe_power, raster_scan
    from adptycho.simulate import simulate

    rng = np.random.default_rng(0)
    obj = (0.7 + 0.3 * rng.random((64, 64))) * np.exp(1j * rng.random((64, 64)))
    probe = normalize_probe_power(circular_aperture((32, 32), 16, 2.0), 1e4)
    positions = raster_scan((3, 3), 10.0, start_px=(4, 4))
    return simulate(obj, probe, positions), probe


def _draws():
    return [random.random(), float(np.random.rand()), float(tf.random.uniform([]))]


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def test_reconstruct_neither_reseeds_nor_advances_the_callers_generators():
    from adptycho.reconstruction import reconstruct

    scan, probe = _tiny_scan()
    _seed_all(5)
    expected = _draws()
    _seed_all(5)
    result = reconstruct(scan, probe=probe, refine=("object",), epochs=2, batch_size=4,
                         verbose=0, engine="adam", seed=0, validation_fraction=0.2)
    assert len(result.loss_history) == 2
    assert _draws() == expected
    # a caller without a TensorFlow global seed still has none afterwards
    tf.random.set_seed(None)
    keras_seed = keras.utils.get_random_seed() if hasattr(keras.utils, "get_random_seed") else None
    reconstruct(scan, probe=probe, refine=("object",), epochs=1, batch_size=4, verbose=0,
                engine="adam", seed=3)
    assert tf.compat.v1.get_seed(None) == (None, None)
    if hasattr(keras.utils, "get_random_seed"):
        assert keras.utils.get_random_seed() == keras_seed


def test_reconstruct_with_a_seed_is_repeatable_whatever_the_callers_state():
    from adptycho.reconstruction import reconstruct

    scan, probe = _tiny_scan()
    kwargs = dict(probe=probe, refine=("object",), epochs=2, batch_size=4, verbose=0,
                  engine="adam", seed=11, validation_fraction=0.2)
    _seed_all(1)
    first = reconstruct(scan, **kwargs).loss_history
    _seed_all(2)
    second = reconstruct(scan, **kwargs).loss_history
    np.testing.assert_allclose(first, second, rtol=1e-6)
