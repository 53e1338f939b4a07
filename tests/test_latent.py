"""``LatentObject`` (Seifert, Shao & Mosk 2024): latent -> frozen decoder -> Mitchell resize ->
placement; gradients, L-BFGS, reconstruct(, engine="adam")/CLI integration and a fit with the shipped decoder."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.geometry import circular_aperture, raster_scan
from adptycho.model import PtychoModel
from adptycho.nn.irmae import IRMAE, build_decoder, save_irmae
from adptycho.objects.latent import LatentObject
from adptycho.simulate import simulate

LATENT = 16


def _decoder(seed=0):
    keras.utils.set_random_seed(seed)
    return build_decoder(LATENT)


def _setup(shape=(48, 48), region=(8, 8, 32, 32)):
    probe = circular_aperture((16, 16), 10, edge_px=1.0).astype(np.complex64)
    positions = raster_scan((4, 4), 8.0) + 4.0
    return shape, region, probe, positions


def test_transmission_is_resized_decoder_output_placed_in_the_grid():
    decoder = _decoder()
    h = np.random.default_rng(0).normal(size=LATENT).astype(np.float32)
    obj = LatentObject((60, 50), decoder, h, region_px=(5, 7, 40, 36), background=0.25)
    o = obj.to_numpy()
    assert o.shape == (60, 50) and o.dtype == np.complex64 and np.all(o.imag == 0)
    image = decoder(h[None]).numpy()[0]
    ref = tf.image.resize(image[None], (40, 36), method="mitchellcubic")[0, :, :, 0].numpy()
    np.testing.assert_allclose(o.real[5:45, 7:43], ref, atol=1e-5)
    outside = np.ones((60, 50), bool)
    outside[5:45, 7:43] = False
    np.testing.assert_allclose(o.real[outside], 0.25)
    np.testing.assert_allclose(obj.image(), image[:, :, 0], atol=1e-6)
    phase = LatentObject((60, 50), decoder, h, region_px=(5, 7, 40, 36), mode="phase",
                         phase_scale_rad=2.0).to_numpy()
    np.testing.assert_allclose(np.abs(phase), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.angle(phase[5:45, 7:43]), 2.0 * ref, atol=1e-5)
    # batched evaluation equals one-by-one
    hs = np.stack([h, -h, 0.5 * h])
    batched = obj.transmissions(hs).numpy()
    obj.assign_latent(-h)
    np.testing.assert_allclose(batched[1], obj.to_numpy(), atol=1e-6)


def test_bad_arguments_are_named():
    decoder = _decoder()
    with pytest.raises(AdptychoError, match="region_px"):
        LatentObject((20, 20), decoder, np.zeros(LATENT), region_px=(10, 10, 16, 16))
    with pytest.raises(AdptychoError, match="mode"):
        LatentObject((20, 20), decoder, np.zeros(LATENT), mode="complex")
    with pytest.raises(AdptychoError, match="non-finite"):
        LatentObject((20, 20), decoder, np.full(LATENT, np.nan))


@pytest.mark.parametrize("mode", ["amplitude", "phase"])
def test_gradient_reaches_the_latent_and_matches_finite_differences(mode):
    shape, region, probe, positions = _setup()
    decoder = _decoder(1)
    rng = np.random.default_rng(3)
    truth = LatentObject(shape, decoder, rng.normal(size=LATENT), region_px=region, mode=mode,
                         background=0.5)
    scan = simulate(truth.to_numpy(), probe, positions, photons_per_pattern=1e4)
    start = truth.latent_numpy() + 0.3 * rng.normal(size=LATENT)
    obj = LatentObject(shape, decoder, start, region_px=region, mode=mode, background=0.5)
    model = PtychoModel(obj, probe * np.sqrt(1e4 / np.sum(np.abs(probe) ** 2)), positions,
                        loss="amplitude")
    assert [w.name for w in model.groups["object"]] == ["latent"]
    patterns = tf.constant(scan.patterns)
    indices = tf.range(len(positions))

    def loss():
        return tf.reduce_mean(model.pattern_losses(patterns, model(indices)))

    with tf.GradientTape() as tape:
        value = loss()
    grad = tape.gradient(value, obj.latent).numpy().astype(np.float64)
    assert np.linalg.norm(grad) > 0
    h0 = obj.latent_numpy().astype(np.float64)
    for k in range(3):
        # the gradient direction itself, then random directions with a gradient component
        direction = grad / np.linalg.norm(grad) + k * rng.normal(size=LATENT) / np.sqrt(LATENT)
        direction /= np.linalg.norm(direction)
        eps = 3e-3
        obj.assign_latent(h0 + eps * direction)
        plus = float(loss().numpy())
        obj.assign_latent(h0 - eps * direction)
        minus = float(loss().numpy())
        obj.assign_latent(h0)
        numeric = (plus - minus) / (2 * eps)
        analytic = float(grad @ direction)
        assert abs(numeric - analytic) <= 0.03 * abs(analytic), \
            (numeric, analytic)


def test_adam_trains_only_the_latent_unless_decoder_is_trainable():
    shape, region, probe, positions = _setup()
    decoder = _decoder(2)
    rng = np.random.default_rng(4)
    truth = LatentObject(shape, decoder, rng.normal(size=LATENT), region_px=region)
    scan = simulate(truth.to_numpy(), probe, positions, photons_per_pattern=1e5)
    before = [w.copy() for w in decoder.get_weights()]
    # (not the zero latent: the decoder's ReLUs are all at their kink there, zero gradient)
    obj = LatentObject(shape, decoder, rng.normal(size=LATENT), region_px=region)
    model = PtychoModel(obj, probe * np.sqrt(1e5 / np.sum(np.abs(probe) ** 2)), positions)
    model.compile(refine=("object",), learning_rates={"object": 0.1})
    history = model.fit(np.arange(len(positions)), scan.patterns, batch_size=4, epochs=15,
                        verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    assert all(np.array_equal(a, b) for a, b in zip(before, decoder.get_weights()))
    trainable = LatentObject(shape, _decoder(2), np.zeros(LATENT), region_px=region,
                             train_decoder=True)
    assert len(trainable.trainable_weights) == 1 + len(trainable.decoder.trainable_weights) > 1


def test_lbfgs_recovers_a_latent_generated_object():
    from adptycho.training.lbfgs import lbfgs_fit

    shape, region, probe, positions = _setup()
    decoder = _decoder(5)
    rng = np.random.default_rng(5)
    h_true = rng.normal(size=LATENT).astype(np.float32)
    truth = LatentObject(shape, decoder, h_true, region_px=region)
    scan = simulate(truth.to_numpy(), probe, positions, photons_per_pattern=1e5)
    obj = LatentObject(shape, decoder, h_true + 0.5 * rng.normal(size=LATENT), region_px=region)
    model = PtychoModel(obj, probe * np.sqrt(1e5 / np.sum(np.abs(probe) ** 2)), positions)
    result = lbfgs_fit(model, scan.patterns, max_iterations=60, chunk_iterations=20)
    assert result.loss_history[-1] < 1e-3 * result.loss_history[0]
    sl = (slice(8, 40), slice(8, 40))
    error = np.abs(obj.to_numpy()[sl] - truth.to_numpy()[sl])
    assert np.sqrt(np.mean(error ** 2)) < 0.01


@pytest.fixture
def tiny_model_dir(tmp_path):
    keras.utils.set_random_seed(0)
    model = IRMAE(LATENT, 2)
    directory = tmp_path / "tiny-irmae"
    save_irmae(model, directory, np.random.default_rng(1).normal(size=LATENT).astype(np.float32))
    return directory


def test_reconstruct_with_a_latent_object_path_and_lbfgs(tiny_model_dir, tmp_path):
    from adptycho.io import load_reconstruction, save_reconstruction
    from adptycho.reconstruction import reconstruct

    shape, region, probe, positions = _setup()
    obj = LatentObject.from_pretrained(shape, str(tiny_model_dir),
                                       initial_latent=np.random.default_rng(0).normal(size=LATENT))
    scan = simulate(obj.to_numpy(), probe, positions, photons_per_pattern=1e5)
    for optimizer in ("adam", "lbfgs"):
        result = reconstruct(scan, object=str(tiny_model_dir), refine=("object",), epochs=8,
                             batch_size=8, probe=probe * np.sqrt(1e5 / np.sum(np.abs(probe) ** 2)),
                             verbose=0, optimizer=optimizer, engine="adam")
        assert result.extra_histories["latent"].shape == (LATENT,)
        assert result.object.shape == tuple(np.add(positions.max(0), 16 + 16).astype(int)) or \
            result.object.ndim == 2
        assert result.loss_history[-1] < result.loss_history[0]
        assert result.settings["optimizer"] == optimizer
    path = tmp_path / "rec.h5"
    save_reconstruction(path, result)
    loaded = load_reconstruction(path)
    np.testing.assert_allclose(loaded.extra_histories["latent"], result.extra_histories["latent"],
                               rtol=1e-6)
    with pytest.raises(AdptychoError, match="object only"):
        reconstruct(scan, object=str(tiny_model_dir), refine=("object", "probe"), epochs=1,
                    optimizer="lbfgs", verbose=0, engine="adam")
    with pytest.raises(AdptychoError, match="irmae-mnist"):
        reconstruct(scan, object="no-such-model", epochs=1, verbose=0, engine="adam")


def test_cli_reconstruct_latent_object(tiny_model_dir, tmp_path, capsys):
    import h5py

    from adptycho.cli import main

    scan_path = tmp_path / "scan.cxi"
    assert main(["simulate", "--out", str(scan_path), "--object-size", "64", "--probe-size", "16",
                 "--probe-diameter", "8", "--photons", "1e5"]) == 0
    out = tmp_path / "rec.h5"
    code = main(["reconstruct", str(scan_path), "--object", str(tiny_model_dir), "--refine", "",
                 "--epochs", "2", "--out", str(out), "--no-png", "--quiet"])
    assert code == 0
    with h5py.File(out) as f:
        assert f["latent"].shape == (LATENT,)
        assert f["object"].ndim == 2
    capsys.readouterr()
    code = main(["reconstruct", str(scan_path), "--object", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "bad.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "irmae-mnist" in err[0]
    assert not (tmp_path / "bad.h5").exists()


def test_latent_fit_of_a_training_digit_reaches_20_db(shared_data):
    """Noise-free near-field scan of an MNIST *training* '3' (not a decoder output): L-BFGS on
    the latent of the shipped digit-3 IRMAE from the mean latent reaches PSNR > 20 dB."""
    from adptycho.analysis import psnr
    from adptycho.model import NearFieldGeometry
    from adptycho.nn.irmae import model_directory
    from adptycho.nn.mnist import load_mnist, to_32
    from adptycho.nn.resize import mitchell_resize_matrices, resize_with_matrices
    from adptycho.training.lbfgs import lbfgs_fit

    try:
        directory = model_directory("irmae-mnist-3")
    except AdptychoError:
        pytest.skip("irmae-mnist-3 not trained yet")
    if not os.path.exists(os.path.join(directory, "card.md")):
        pytest.skip("irmae-mnist-3 not trained yet")
    digit = to_32(load_mnist(os.path.join(shared_data, "mnist"), "train", digit=3)[0][:1])[0, :, :, 0]
    shape, region = (96, 96), (16, 16, 64, 64)
    r_y, r_x = mitchell_resize_matrices((32, 32), (64, 64))
    truth = np.zeros(shape, np.float32)
    truth[16:80, 16:80] = resize_with_matrices(digit, r_y, r_x).numpy()
    probe = circular_aperture((32, 32), 16, edge_px=1.0).astype(np.complex64)
    probe *= np.sqrt(1e6 / np.sum(np.abs(probe) ** 2))
    positions = raster_scan((7, 7), 8.0) + 8.0
    near = NearFieldGeometry(561e-9, (13.8e-6, 13.8e-6), 0.01)
    scan = simulate(truth.astype(np.complex64), probe, positions, near_field=near)
    obj = LatentObject.from_pretrained(shape, "irmae-mnist-3", region_px=region)
    model = PtychoModel(obj, probe, positions, near_field=near, loss="amplitude")
    lbfgs_fit(model, scan.patterns, max_iterations=80, chunk_iterations=40)
    sl = (slice(16, 80), slice(16, 80))
    value = psnr(truth[sl], np.abs(obj.to_numpy())[sl], data_range=1.0)
    assert value > 20.0, value
