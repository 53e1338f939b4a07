"""``GeneratorObject`` and the PtychoGAN fit with tiny randomly initialised StyleGAN2 networks:
placement, gradients through ``PtychoModel`` (latent and released blocks only), the
block-release schedule, the priors, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.geometry import circular_aperture, raster_scan
from adptycho.model import PtychoModel
from adptycho.nn.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from adptycho.objects.generator import GeneratorObject
from adptycho.objects.pixels import PixelObject
from adptycho.training.ptychogan import (PtychoGANSettings, ptychogan_fit, release_schedule)

TINY = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8)


def _generator(seed=1):
    return StyleGAN2Generator(16, **TINY, seed=seed)


def _latent(seed=0):
    return np.random.default_rng(seed).normal(size=(6, 8)).astype(np.float32)  # w+, 6 layers


def _setup(obj):
    probe = (20.0 * circular_aperture((16, 16), 10, edge_px=1.0)).astype(np.complex64)
    positions = raster_scan((4, 4), 8.0) + 4.0
    return PtychoModel(obj, probe, positions, loss="poisson")


def _snapshot(obj):
    variables = [obj.latent] + [v for i in range(obj.num_blocks) for v in obj.block_variables(i)]
    return [v.numpy().copy() for v in variables]


def _changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after)]


def _block_slices(obj):
    """Index ranges of each block's variables in ``_snapshot`` order (latent first)."""
    slices, start = [], 1
    for i in range(obj.num_blocks):
        n = len(obj.block_variables(i))
        slices.append(slice(start, start + n))
        start += n
    return slices


def test_transmission_is_phase_of_the_resized_generator_image_in_the_region():
    g = _generator()
    obj = GeneratorObject((50, 44), g, initial_latent=_latent(), region_px=(5, 6, 32, 30))
    o = obj.to_numpy()
    assert o.shape == (50, 44) and o.dtype == np.complex64
    np.testing.assert_allclose(np.abs(o), 1.0, atol=1e-6)
    outside = np.ones((50, 44), bool)
    outside[5:37, 6:36] = False
    np.testing.assert_allclose(o[outside], 1.0, atol=1e-6)  # phase 0 outside the region
    raw = g.synthesize(_latent()[None], noise_mode="const").numpy()[0, :, :, 0]
    expected = tf.image.resize(((raw + 1) / 2)[None, :, :, None], (32, 30),
                               method="mitchellcubic").numpy()[0, :, :, 0]
    np.testing.assert_allclose(np.angle(o[5:37, 6:36]), np.pi * expected, atol=2e-4)
    amp = GeneratorObject((50, 44), g, initial_latent=_latent(), region_px=(5, 6, 32, 30),
                          mode="amplitude", background=0.5)
    a = amp.to_numpy()
    assert np.all(a.imag == 0) and np.allclose(a.real[outside], 0.5)


def test_generator_object_validates_its_input():
    g = _generator()
    with pytest.raises(AdptychoError, match="mode"):
        GeneratorObject((32, 32), g, mode="complex")
    with pytest.raises(AdptychoError, match="does not fit"):
        GeneratorObject((32, 32), g, region_px=(10, 10, 32, 32))
    with pytest.raises(AdptychoError, match="shape"):
        GeneratorObject((32, 32), g, initial_latent=np.zeros((3, 8)))
    with pytest.raises(AdptychoError, match="released blocks"):
        GeneratorObject((32, 32), g, released_blocks=7)
    with pytest.raises(AdptychoError, match="StyleGAN2Generator"):
        GeneratorObject((32, 32), object())


def test_gradients_reach_the_latent_and_released_blocks_only():
    g = _generator()
    original = [w.copy() for w in g.get_weights()]
    obj = GeneratorObject((48, 48), g, initial_latent=_latent(), released_blocks=2)
    model = _setup(obj)
    expected = [obj.latent] + obj.block_variables(0) + obj.block_variables(1)
    assert [id(v) for v in model.groups["object"]] == [id(v) for v in expected]
    truth = PixelObject((48, 48), initial=np.exp(1j * np.random.default_rng(2).uniform(
        0, 1, (48, 48))).astype(np.complex64))
    patterns = _setup(truth)(tf.range(16)).numpy()
    mapping = [v.numpy().copy() for layer in obj.generator.mapping for v in layer.weights]
    before = _snapshot(obj)
    model.compile(refine=("object",), learning_rates={"object": 0.01}, jit_compile=False)
    model.fit(np.arange(16), patterns, batch_size=8, epochs=1, verbose=0)
    changed = _changed(before, _snapshot(obj))
    blocks = _block_slices(obj)
    assert changed[0]  # the latent
    assert all(changed[blocks[0]]) and all(changed[blocks[1]])
    assert not any(changed[blocks[2]])  # block 16x16 is frozen
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(
        mapping, [v for layer in obj.generator.mapping for v in layer.weights]))
    # the caller's generator is never modified (GeneratorObject works on a copy)
    assert all(np.array_equal(a, b) for a, b in zip(original, g.get_weights()))


def test_release_schedule():
    settings = PtychoGANSettings(latent_steps=5, block_steps=3, blocks=2,
                                 latent_learning_rate=0.1, latent_learning_rate_blocks=0.01,
                                 generator_learning_rate=0.002)
    stages = release_schedule(settings, num_blocks=5)
    assert [(s.released, s.steps) for s in stages] == [(0, 5), (1, 3), (2, 3)]
    assert stages[0].latent_learning_rate == 0.1 and stages[0].generator_learning_rate == 0
    assert stages[1].latent_learning_rate == 0.01 and stages[2].generator_learning_rate == 0.002
    assert len(release_schedule(PtychoGANSettings(), num_blocks=5)) == 6  # latent + 5 blocks
    with pytest.raises(AdptychoError, match="discriminator_loss"):
        PtychoGANSettings(discriminator_loss="wasserstein")


def test_ptychogan_fit_honours_the_block_release_schedule():
    g = _generator()
    obj = GeneratorObject((48, 48), g, initial_latent=_latent())
    model = _setup(obj)
    truth = PixelObject((48, 48), initial=np.exp(1j * np.random.default_rng(3).uniform(
        0, 1, (48, 48))).astype(np.complex64))
    patterns = _setup(truth)(tf.range(16)).numpy()
    d = StyleGAN2Discriminator(16, channel_base=64, channel_max=8)
    snapshots = [_snapshot(obj)]
    released = []

    def callback(index, stage, fitted):
        released.append(fitted.object_representation.released_blocks)
        snapshots.append(_snapshot(fitted.object_representation))

    settings = PtychoGANSettings(latent_steps=3, block_steps=2, blocks=2, run_eagerly=True,
                                 tv_weight=0.003, discriminator_weight=0.01)
    history = ptychogan_fit(model, patterns, settings, d, callback=callback)
    assert released == [0, 1, 2]
    blocks = _block_slices(obj)
    for stage in range(3):
        changed = _changed(snapshots[stage], snapshots[stage + 1])
        assert changed[0], stage
        for b, sl in enumerate(blocks):
            assert all(changed[sl]) == (b < stage) and any(changed[sl]) == (b < stage), (stage, b)
    assert list(history["stage"]) == [0, 0, 0, 1, 1, 2, 2]
    assert history["loss"].shape == (7,) and np.isfinite(history["loss"]).all()
    assert np.all(history["discriminator"] < 0)  # log(1 - D) <= 0
    np.testing.assert_allclose(history["loss"], history["data"] + 0.003 * history["tv"]
                               + 0.01 * history["discriminator"], rtol=1e-5)


def test_ptychogan_latent_stage_lowers_the_data_loss():
    target = GeneratorObject((48, 48), _generator(), initial_latent=_latent(5))
    patterns = _setup(target)(tf.range(16)).numpy()
    obj = GeneratorObject((48, 48), _generator(), initial_latent=_latent(6))
    model = _setup(obj)
    history = ptychogan_fit(model, patterns, PtychoGANSettings(
        latent_steps=30, blocks=0, tv_weight=0.0, discriminator_weight=0.0,
        latent_learning_rate=0.05))
    assert history["data"][-1] < 0.5 * history["data"][0]


def test_ptychogan_fit_rejects_bad_input():
    pixels = _setup(PixelObject((48, 48)))
    with pytest.raises(AdptychoError, match="GeneratorObject"):
        ptychogan_fit(pixels, np.zeros((16, 16, 16), np.float32))
    model = _setup(GeneratorObject((48, 48), _generator()))
    with pytest.raises(AdptychoError, match="discriminator"):
        ptychogan_fit(model, np.zeros((16, 16, 16), np.float32), PtychoGANSettings())
    with pytest.raises(AdptychoError, match="shape"):
        ptychogan_fit(model, np.zeros((3, 16, 16), np.float32),
                      PtychoGANSettings(discriminator_weight=0))


def test_cli_reconstruct_ptychogan(tmp_path):
    import h5py

    from adptycho.cli import main
    from adptycho.io import load_reconstruction
    from adptycho.nn.stylegan2 import save_stylegan2

    model_dir = tmp_path / "sg"
    g = _generator()
    save_stylegan2(model_dir, g, StyleGAN2Discriminator(16, channel_base=64, channel_max=8),
                   {"steps": 0})
    cxi = tmp_path / "scan.cxi"
    assert main(["simulate", "--out", str(cxi), "--object-size", "64", "--probe-size", "16",
                 "--probe-diameter", "10", "--overlap", "0.3", "--photons", "1e4"]) == 0
    out = tmp_path / "rec.h5"
    assert main(["reconstruct", str(cxi), "--out", str(out), "--object", str(model_dir),
                 "--ptychogan", "--latent-steps", "2", "--block-steps", "1", "--blocks", "1",
                 "--no-png"]) == 0
    result = load_reconstruction(out)
    with h5py.File(out, "r") as f:
        assert f["object"].dtype == np.complex64 and f["object"].ndim == 2
    assert result.settings["engine"] == "ptychogan" and result.settings["loss"] == "poisson"
    assert result.loss_history.shape == (3,)
    assert main(["reconstruct", str(cxi), "--out", str(tmp_path / "x.h5"), "--ptychogan"]) == 2


def test_ptychogan_stage_in_an_engine_schedule(tmp_path):
    """``engine="ptychogan:2,adam:2"``: the PtychoGAN stage runs through the registry on the
    same generator model, then Adam continues from its latent, with one history (loss and
    residual every epoch). A PtychoGAN stage after Adam is refused with one line."""
    from adptycho.nn.stylegan2 import save_stylegan2
    from adptycho.reconstruction import reconstruct
    from adptycho.simulate import simulate

    model_dir = tmp_path / "sg"
    save_stylegan2(model_dir, _generator(), StyleGAN2Discriminator(16, channel_base=64,
                                                                   channel_max=8), {"steps": 0})
    probe = (20.0 * circular_aperture((16, 16), 10, edge_px=1.0)).astype(np.complex64)
    truth = np.exp(1j * np.random.default_rng(2).uniform(0, 1, (48, 48))).astype(np.complex64)
    scan = simulate(truth, probe, raster_scan((4, 4), 8.0) + 4.0)
    options = dict(object=str(model_dir), refine=("object",), loss="poisson", probe=probe,
                   padding_px=0, verbose=0)
    result = reconstruct(scan, engine="ptychogan:2,adam:2", **options)
    assert result.settings["engine"] == "ptychogan:2,adam:2"
    assert list(result.extra_histories["stage_history"]) == [0, 0, 1, 1]
    assert result.loss_history.shape == (4,) and np.isfinite(result.loss_history).all()
    assert result.residual_history.shape == (4,) and np.all(result.residual_history > 0)
    assert result.extra_histories["data_history"].shape == (2,)  # the PtychoGAN stage's terms
    start = np.asarray(GeneratorObject((48, 48), _generator()).latent.numpy())
    assert not np.allclose(result.extra_histories["latent"], start)
    with pytest.raises(AdptychoError, match="at most one adam stage, and it comes last") as error:
        reconstruct(scan, engine="adam:2,ptychogan:2", **options)
    assert "\n" not in str(error.value)
