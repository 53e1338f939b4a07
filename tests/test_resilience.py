"""Scale and resilience: streaming, validation split, resume after SIGKILL, NaN guard,
tf.distribute (MirroredStrategy over logical CPUs, MultiWorkerMirroredStrategy on 127.0.0.1)."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from adptycho.errors import AdptychoError, DataError
from adptycho.geometry import circular_aperture, normalize_probe_power, raster_scan
from adptycho.io import ScanData, load_cxi, load_reconstruction, save_cxi
from adptycho.io.streaming import HDF5Patterns
from adptycho.reconstruction import build_model, reconstruct
from adptycho.simulate import simulate
from adptycho.training.checkpoint import KILL_AFTER_CHECKPOINT
from adptycho.training.data import epoch_order, split_validation, training_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scan(probe_size=32, grid=6, photons=1e4, seed=0):
    size = 36 + 10 * grid
    rng = np.random.default_rng(seed)
    obj = (0.7 + 0.3 * rng.random((size, size))) * np.exp(1j * rng.random((size, size)))
    probe = normalize_probe_power(circular_aperture((probe_size, probe_size), 16, 2.0), photons)
    positions = raster_scan((grid, grid), 10.0, start_px=(4, 4), jitter_px=0.7, seed=seed)
    scan = simulate(obj, probe, positions).replace(
        wavelength_m=1e-9, detector_distance_m=1.0, detector_pixel_size_m=(75e-6, 75e-6),
        pixel_size_m=(1e-9 / (probe_size * 75e-6),) * 2)
    return scan, obj.astype(np.complex64), probe


FIT = dict(refine=("object",), batch_size=7, verbose=0, decay_rate=1.0)


# -- streaming -------------------------------------------------------------------------------
def test_streamed_patterns_read_like_the_array_and_report_bad_values(tmp_path):
    scan, _, _ = _scan()
    path = tmp_path / "scan.cxi"
    save_cxi(path, scan)
    streamed = load_cxi(path, stream=True)
    assert streamed.streamed and isinstance(streamed.patterns, HDF5Patterns)
    order = np.array([5, 3, 4, 30, 3, 0])
    np.testing.assert_array_equal(streamed.read_patterns(order), scan.patterns[order])
    np.testing.assert_allclose(streamed.mean_pattern(), scan.mean_pattern(), rtol=1e-6)
    np.testing.assert_allclose(streamed.mean_counts(), scan.mean_counts(), rtol=1e-6)
    sub = streamed.subset([7, 2, 9])
    np.testing.assert_array_equal(sub.read_patterns([0, 1, 2]), scan.patterns[[7, 2, 9]])
    np.testing.assert_array_equal(np.asarray(sub.patterns), scan.patterns[[7, 2, 9]])
    streamed.patterns.close()  # the reader keeps the file open for reading
    sub.patterns.close()
    with h5py.File(path, "r+") as f:
        f["entry_1/instrument_1/detector_1/data"][11, 3, 4] = np.nan
        f["entry_1/instrument_1/detector_1/data"][20, 0, 0] = -5
    broken = load_cxi(path, stream=True)
    with pytest.raises(DataError, match="pattern 11 .*non-finite"):
        broken.read_patterns([2, 11])
    with pytest.raises(DataError, match="pattern 20 .*negative"):
        broken.read_patterns([20])
    with pytest.raises(DataError, match="pattern 11"):
        broken.mean_counts()


def test_streamed_fit_equals_in_memory_fit_and_never_loads_all_patterns(tmp_path, monkeypatch):
    scan, obj, probe = _scan()
    path = tmp_path / "scan.cxi"
    save_cxi(path, scan)
    streamed = load_cxi(path, stream=True)
    in_memory = load_cxi(path)

    def refuse(*args, **kwargs):
        raise AssertionError("the streamed fit loaded every pattern")

    kwargs = dict(FIT, probe=probe, object_shape=obj.shape, epochs=3)
    expected = reconstruct(in_memory, **kwargs, engine="adam")
    monkeypatch.setattr(HDF5Patterns, "__array__", refuse)
    result = reconstruct(streamed, **kwargs, engine="adam")
    np.testing.assert_array_equal(result.object, expected.object)
    np.testing.assert_array_equal(result.loss_history, expected.loss_history)


# -- validation ------------------------------------------------------------------------------
def test_validation_patterns_never_enter_a_training_batch():
    scan, obj, probe = _scan()
    training, validation = split_validation(scan.num_patterns, 0.25, seed=3)
    assert len(validation) == 9 and not set(training) & set(validation)
    assert sorted(np.concatenate([training, validation])) == list(range(scan.num_patterns))
    seen = np.concatenate([i.numpy() for i, _ in training_dataset(scan, training, 5, 3, 0, 4)])
    assert len(seen) == 4 * len(training) and not set(seen) & set(validation)
    # the fit itself: garbage in the validation patterns changes the validation loss only
    kwargs = dict(FIT, probe=probe, object_shape=obj.shape, epochs=3, validation_fraction=0.25,
                  seed=3)
    clean = reconstruct(scan, **kwargs, engine="adam")
    np.testing.assert_array_equal(clean.extra_histories["validation_indices"], validation)
    patterns = scan.patterns.copy()
    patterns[validation] = np.random.default_rng(1).random(patterns[validation].shape) * 1e4
    corrupted = reconstruct(ScanData(patterns, scan.positions_px), **kwargs, engine="adam")
    np.testing.assert_array_equal(corrupted.object, clean.object)
    np.testing.assert_array_equal(corrupted.loss_history, clean.loss_history)
    assert np.all(corrupted.extra_histories["validation_loss_history"]
                  > 10 * clean.extra_histories["validation_loss_history"])
    # clean held-out patterns are predicted about as well as the training ones
    assert clean.extra_histories["validation_loss_history"][-1] < 5 * clean.loss_history[-1]


def test_validation_history_is_saved_and_early_stopping_watches_it(tmp_path):
    scan, obj, probe = _scan()
    result = reconstruct(scan, **dict(FIT, probe=probe, object_shape=obj.shape, epochs=40,
                                      validation_fraction=0.2, early_stopping_patience=1,
                                      learning_rates={"object": 0.5}), engine="adam")
    epochs = len(result.loss_history)
    assert 2 <= epochs < 40  # the large step makes the validation loss stall: it stopped
    history = result.extra_histories["validation_loss_history"]
    assert len(history) == epochs
    from adptycho.io import save_reconstruction
    save_reconstruction(tmp_path / "r.h5", result)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        names = []
        f.visit(names.append)
    assert any(n.endswith("validation_loss_history") for n in names)
    loaded = load_reconstruction(tmp_path / "r.h5")
    np.testing.assert_allclose(loaded.extra_histories["validation_loss_history"], history)
    with pytest.raises(AdptychoError, match="validation_fraction"):
        reconstruct(scan, probe=probe, epochs=1, validation_fraction=1.0, verbose=0, engine="adam")


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = epoch_order(np.arange(50), 7, 3)
    np.testing.assert_array_equal(a, epoch_order(np.arange(50), 7, 3))
    assert not np.array_equal(a, epoch_order(np.arange(50), 7, 4))
    assert sorted(a) == list(range(50))


# -- NaN guard -------------------------------------------------------------------------------
def _split_steps(monkeypatch, split):
    """With ``split``, make the 32x32 test windows take the fused far-field path, so that
    ``compile(jit_compile="auto")`` runs the step as XLA pieces joined by TensorFlow FFTs
    (``accel.xla_pieces``; the guard and Adam are one of the pieces)."""
    if split:
        import adptycho.accel.plan as accel_plan

        monkeypatch.setattr(accel_plan, "WINDOW_MIN_PIXELS", 0)


@pytest.mark.parametrize("split", [False, True])
def test_injected_nan_step_is_rolled_back_and_reported(split, monkeypatch):
    _split_steps(monkeypatch, split)
    scan, obj, probe = _scan()
    model, _ = build_model(scan, probe=probe, object_shape=obj.shape)
    model.compile(refine=("object",), decay_rate=1.0)
    assert model.execution_plan.pieces == split
    patterns = scan.patterns.copy()
    patterns[13, 5, 5] = np.nan  # one poisoned pattern: its batch must not move the object
    with pytest.warns(RuntimeWarning, match="rolled back"):
        history = model.fit(np.arange(scan.num_patterns), patterns, batch_size=6, epochs=3,
                            shuffle=False, verbose=0)
    assert np.isfinite(model.get_object()).all()
    assert np.all(np.isfinite(history.history["loss"]))
    assert float(model.rollback_count.numpy()) == 3  # one batch per epoch
    assert float(model.step_size_factor.numpy()) == pytest.approx(0.5 ** 3)
    assert history.history["loss"][-1] < history.history["loss"][0]  # the other batches train
    # a single poisoned step leaves the parameters exactly as before it
    model2, _ = build_model(scan, probe=probe, object_shape=obj.shape)
    model2.compile(refine=("object",), jit_compile=False)
    before = model2.get_object()
    with pytest.warns(RuntimeWarning):
        model2.fit(np.arange(6) + 12, patterns[12:18], batch_size=6, epochs=1, verbose=0)
    np.testing.assert_array_equal(model2.get_object(), before)


@pytest.mark.parametrize("split", [False, True])
def test_nan_guard_stops_a_fit_that_cannot_recover(split, monkeypatch):
    _split_steps(monkeypatch, split)
    scan, obj, probe = _scan()
    with pytest.raises(AdptychoError, match="non-finite values"), \
            pytest.warns(RuntimeWarning):
        reconstruct(scan, **dict(FIT, probe=probe, object_shape=obj.shape, epochs=20,
                                 learning_rates={"object": float("inf")}), engine="adam")


# -- resume after SIGKILL --------------------------------------------------------------------
def _run(args, env=None, **kwargs):
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-m", "adptycho.cli"] + args, env=environment,
                          capture_output=True, text=True, **kwargs)


def test_sigkill_after_a_checkpoint_and_rerun_equals_the_uninterrupted_fit(tmp_path):
    """Deterministic kill: the fault-injection point ADPTYCHO_KILL_AFTER_CHECKPOINT=3 makes the
    fit SIGKILL itself right after epoch 3's checkpoint is written (no timer, no polling)."""
    scan, obj, probe = _scan(grid=7)
    scan = scan.replace(probe=probe[None].astype(np.complex64))
    path = tmp_path / "scan.cxi"
    save_cxi(path, scan)
    # an engine schedule: the PIE stage is redone on resume, the adam stage continues from its
    # checkpoint (epochs of the adam stage: the kill comes after its third)
    common = [str(path), "--engine", "epie:3,adam:12", "--batch-size", "7", "--refine", "probe",
              "--quiet", "--no-png", "--seed", "5"]
    reference = _run(["reconstruct"] + common + ["--out", str(tmp_path / "ref.h5"), "--no-checkpoint"])
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = str(tmp_path / "run.h5")
    checkpoints = tmp_path / "run.h5.checkpoint"
    killed = _run(["reconstruct"] + common + ["--out", out],
                  env={KILL_AFTER_CHECKPOINT: "3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    index = (checkpoints / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-3"' in index  # killed right after epoch 3, not later
    assert not os.path.exists(out)  # nothing half-written
    resumed = _run(["reconstruct"] + common + ["--out", out])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "after epoch 3" in resumed.stdout
    assert not checkpoints.exists()  # removed once the output was written
    a, b = load_reconstruction(tmp_path / "ref.h5"), load_reconstruction(out)
    assert len(b.loss_history) == 15
    assert b.settings["engine"] == "epie:3,adam:12"
    np.testing.assert_allclose(b.loss_history, a.loss_history, rtol=1e-5)
    np.testing.assert_allclose(b.object, a.object, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.probe, a.probe, rtol=1e-5, atol=1e-4)


def test_checkpoint_of_another_fit_is_refused(tmp_path):
    scan, obj, probe = _scan()
    kwargs = dict(FIT, probe=probe, object_shape=obj.shape, checkpoint_dir=tmp_path / "ck")
    first = reconstruct(scan, epochs=2, **kwargs, engine="adam")
    again = reconstruct(scan, epochs=2, **kwargs, engine="adam")  # complete: nothing to do, same result
    np.testing.assert_array_equal(again.object, first.object)
    longer = reconstruct(scan, epochs=4, **kwargs, engine="adam")  # continues for two more epochs
    assert len(longer.loss_history) == 4
    np.testing.assert_allclose(longer.loss_history[:2], first.loss_history)
    with pytest.raises(AdptychoError, match="different fit: option batch_size differs"):
        reconstruct(scan, epochs=4, **dict(kwargs, batch_size=5), engine="adam")
    # the refusal names what differs, in one line, for every part of the fingerprint
    mask = np.ones(scan.detector_shape, bool)
    mask[0, 0] = False
    changes = [
        ({"scan": scan.replace(patterns=scan.patterns * np.float32(1.001))},
         "the patterns (data content) differ"),
        ({"scan": scan.replace(positions_px=scan.positions_px + 0.25)}, "the scan positions"),
        ({"scan": scan.replace(mask=mask)}, "the detector mask"),
        ({"scan": scan.replace(wavelength_m=2e-9)}, "wavelength_m differs"),
        ({"probe": probe * 1.5}, "the initial object/probe"),
        ({"initial_object": obj}, "the initial object/probe"),
        ({"seed": 1}, "option seed differs"),
        ({"loss": "poisson"}, "option loss differs"),
        ({"learning_rates": {"object": 0.2}}, "option learning_rates.object differs"),
        ({"decay_rate": 0.9}, "option decay_rate differs"),
        ({"readout_noise": 2.0}, "option readout_noise differs"),
        ({"probe_power": 5e3}, "option probe_power differs"),
        ({"probe_support": np.ones(scan.detector_shape, np.float32)},
         "option probe_support differs"),
        ({"refine": ("object", "probe")}, "option refine differs"),
        ({"validation_fraction": 0.2}, "option validation differs"),
        ({"early_stopping_patience": 3}, "option early_stopping_patience differs"),
    ]
    for change, named in changes:
        arguments = dict(kwargs, **{k: v for k, v in change.items() if k != "scan"})
        with pytest.raises(AdptychoError) as info:
            reconstruct(change.get("scan", scan), epochs=4, **arguments, engine="adam")
        message = str(info.value)
        assert "different fit" in message and named in message, (change.keys(), message)
        assert "\n" not in message


def test_patterns_digest_is_the_same_streamed_in_blocks_and_in_memory(tmp_path):
    from adptycho.training.fingerprint import patterns_digest

    scan, _, _ = _scan()
    save_cxi(tmp_path / "scan.cxi", scan)
    digest = patterns_digest(scan)
    streamed = load_cxi(tmp_path / "scan.cxi", stream=True)
    assert patterns_digest(streamed, block_patterns=5) == digest  # 36 patterns: uneven blocks
    assert patterns_digest(scan, block_patterns=1) == digest
    streamed.patterns.close()
    patterns = scan.patterns.copy()
    patterns[35, 31, 31] += 1  # one count in the last pattern
    assert patterns_digest(scan.replace(patterns=patterns)) != digest


def test_cli_refuses_to_resume_with_another_file_of_the_same_shape(tmp_path, capsys):
    from adptycho.cli import main

    scan, _, probe = _scan(grid=3)
    first, second = tmp_path / "a.cxi", tmp_path / "b.cxi"
    save_cxi(first, scan)
    save_cxi(second, scan.replace(patterns=scan.patterns[::-1].copy()))  # same shape, other data
    out = tmp_path / "rec.h5"
    common = ["--out", str(out), "--batch-size", "9", "--keep-checkpoint", "--no-png", "--quiet"]
    assert main(["reconstruct", str(first), "--epochs", "2"] + common) == 0
    written = out.read_bytes()
    capsys.readouterr()
    assert main(["reconstruct", str(second), "--epochs", "3"] + common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adptycho: error: the checkpoint in "), err
    assert "different fit: the patterns (data content) differ (checkpoint " in err[0]
    assert "option" not in err[0]  # the data, and only the data, differ
    assert out.read_bytes() == written  # the old result stands


# -- tf.distribute ---------------------------------------------------------------------------
_DISTRIBUTED = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    mode, out = sys.argv[1], sys.argv[2]
    from adptycho.training.distribute import logical_cpu_devices, make_strategy
    if mode == "mirrored":
        logical_cpu_devices(2)
    strategy = make_strategy(mode if mode != "single" else None)
    sys.path.insert(0, {tests!r})
    from test_resilience import _scan
    from adptycho.reconstruction import reconstruct
    scan, obj, probe = _scan(grid=7)
    result = reconstruct(scan, probe=probe, object_shape=obj.shape, refine=("object", "probe"),
                         batch_size=8, epochs=4, verbose=0, seed=2, strategy=strategy,
                         validation_fraction=0.1, jit_compile=False, engine="adam")
    # (a distributed step is not XLA-compiled: compare with the same program on one device;
    # XLA's FFTs round differently, which a joint object/probe fit amplifies)
    np.savez(out, object=result.object, probe=result.probe, loss=result.loss_history,
             val=result.extra_histories["validation_loss_history"],
             replicas=result.settings["replicas"], chief=result.settings["chief"])
""")


def _distributed_script(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(_DISTRIBUTED.format(root=ROOT, tests=os.path.join(ROOT, "tests")))
    return script


def _python(script, *args, env=None):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    environment.pop("TF_CONFIG", None)
    environment.update(env or {})
    return subprocess.Popen([sys.executable, str(script)] + [str(a) for a in args],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]


def _assert_same_fit(a, b):
    assert np.linalg.norm(a["object"] - b["object"]) < 1e-4 * np.linalg.norm(b["object"])
    assert np.linalg.norm(a["probe"] - b["probe"]) < 1e-4 * np.linalg.norm(b["probe"])
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(a["val"], b["val"], rtol=1e-5)


@pytest.fixture(scope="module")
def single_device_fit(tmp_path_factory):
    """The one-device reference fit of ``_DISTRIBUTED`` (run once for both strategy tests)."""
    directory = tmp_path_factory.mktemp("single")
    _finish(_python(_distributed_script(directory), "single", directory / "single.npz"))
    return np.load(directory / "single.npz")


def test_mirrored_strategy_on_two_logical_cpus_matches_the_single_device_fit(
        tmp_path, single_device_fit):
    script = _distributed_script(tmp_path)
    mirrored = _python(script, "mirrored", tmp_path / "mirrored.npz")
    _finish(mirrored)
    a, b = np.load(tmp_path / "mirrored.npz"), single_device_fit
    assert int(a["replicas"]) == 2 and int(b["replicas"]) == 1
    _assert_same_fit(a, b)


def _free_ports(count, rng):
    """``count`` distinct ports of 127.0.0.1 that are free now, taken below the kernel's
    ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), so no process that asks the
    kernel for a port (bind to port 0, outgoing connections) can be handed one of them before
    the workers bind them. TensorFlow's gRPC server refuses SO_REUSEPORT, so a port cannot be
    held open and handed over; a process choosing the same port explicitly is still possible,
    and the caller retries with new ports when a worker cannot bind."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    low = low if low > 2048 else 32768
    ports = []
    while len(ports) < count:
        port = rng.randrange(max(1024, low - 16384), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def _launch_workers(script, tmp_path, rng):
    """Start the two multi-worker processes (output in files: no pipe can fill up) and wait
    for both; when one fails, end the other (it would wait for its peer). Returns
    ``(return codes, stderr texts)``."""
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2, rng)]
    processes, logs = [], []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(config))
        log = open(tmp_path / f"worker{index}.log", "w+")
        logs.append(log)
        processes.append(subprocess.Popen(
            [sys.executable, str(script), "multiworker", str(tmp_path / f"worker{index}.npz")],
            env=environment, stdout=log, stderr=subprocess.STDOUT, text=True))
    running = list(processes)
    while running:
        try:
            running[0].wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        running = [p for p in processes if p.poll() is None]
        if any(p.returncode not in (None, 0) for p in processes):
            for p in running:
                p.kill()
                p.wait()
            running = []
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    return [p.returncode for p in processes], texts


def test_two_multiworker_processes_agree_with_the_single_process_fit(tmp_path,
                                                                   single_device_fit):
    import random

    script = _distributed_script(tmp_path)
    rng = random.Random(os.getpid())
    for attempt in range(3):
        codes, logs = _launch_workers(script, tmp_path, rng)
        if codes == [0, 0]:
            break
        bind_failure = any("Could not start gRPC server" in text for text in logs)
        assert bind_failure and attempt < 2, "\n".join(text[-3000:] for text in logs)
    reference = single_device_fit
    for index in range(2):
        result = np.load(tmp_path / f"worker{index}.npz")
        assert int(result["replicas"]) == 2
        assert bool(result["chief"]) == (index == 0)
        _assert_same_fit(result, reference)


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "multiworker"], "TF_CONFIG"),
    (["--cpu-replicas", "2"], "needs --strategy mirrored"),
    (["--strategy", "mirrored", "--engine", "epie"], "adam engine"),
])
def test_cli_scaling_options_report_bad_combinations(tmp_path, capsys, monkeypatch, extra, message):
    from adptycho.cli import main

    scan, _, probe = _scan()
    path = tmp_path / "scan.cxi"
    save_cxi(path, scan)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "out.h5"
    assert main(["reconstruct", str(path), "--out", str(out)] + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adptycho: error:") and message in err[0]
    assert not out.exists() and not (tmp_path / "out.h5.checkpoint").exists()
