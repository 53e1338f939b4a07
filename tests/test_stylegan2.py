"""StyleGAN2 in Keras: shapes, demodulation, save/load, the resumable training command on
stand-in data, the held-out split, and the shipped ``stylegan2-faces`` weights."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from adptycho.errors import AdptychoError, DataError
from adptycho.nn.stylegan2 import (ModulatedConv, StyleGAN2Discriminator, StyleGAN2Generator,
                                   generator_blocks, load_stylegan2, num_ws, save_stylegan2,
                                   stylegan2_directory)

TINY = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8)


def test_generator_and_discriminator_shapes():
    g = StyleGAN2Generator(32, **TINY)
    d = StyleGAN2Discriminator(32, channel_base=64, channel_max=8)
    z = tf.random.normal([4, 8])
    images = g(z, noise_mode="random")
    assert images.shape == (4, 32, 32, 1) and images.dtype == tf.float32
    assert d(images).shape == (4, 1)
    assert g.num_ws == num_ws(32) == 8
    ws = tf.random.normal([4, g.num_ws, 8])
    assert g.synthesize(ws, noise_mode="const").shape == (4, 32, 32, 1)
    blocks = generator_blocks(g)
    assert len(blocks) == 4  # 4, 8, 16, 32
    assert all(len(b) > 0 for b in blocks)
    # constant noise makes the generator deterministic, random noise does not
    w = tf.random.normal([2, 8])
    a, b = g.synthesize(w, noise_mode="const"), g.synthesize(w, noise_mode="const")
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_demodulation_gives_unit_output_variance():
    conv = ModulatedConv(16, 32, 8, 16, use_noise=False, activation=None, seed=3)
    x = tf.random.normal([8, 16, 16, 16])
    w = 3.0 * tf.random.normal([8, 8])  # large styles: only demodulation keeps the scale
    y = conv(x, w).numpy()
    interior = y[:, 2:-2, 2:-2, :]
    assert abs(interior.std() - 1.0) < 0.15
    nodemod = ModulatedConv(16, 32, 8, 16, demodulate=False, use_noise=False, activation=None,
                            seed=3)
    assert abs(nodemod(x, w).numpy()[:, 2:-2, 2:-2].std() - 1.0) > 0.3


def test_bad_resolution_and_noise_mode():
    with pytest.raises(AdptychoError, match="power of two"):
        StyleGAN2Generator(48, **TINY)
    g = StyleGAN2Generator(16, **TINY)
    with pytest.raises(AdptychoError, match="noise_mode"):
        g.synthesize(tf.zeros([1, 8]), noise_mode="fresh")


def test_save_load_round_trip(tmp_path):
    g = StyleGAN2Generator(16, **TINY, seed=4)
    d = StyleGAN2Discriminator(16, channel_base=64, channel_max=8, seed=5)
    g.w_avg.assign(np.arange(8, dtype=np.float32))
    save_stylegan2(tmp_path, g, d, {"steps": 1})
    g2, d2, config = load_stylegan2(str(tmp_path))
    w = tf.random.normal([2, 8])
    np.testing.assert_array_equal(g.synthesize(w, noise_mode="const").numpy(),
                                  g2.synthesize(w, noise_mode="const").numpy())
    np.testing.assert_array_equal(g2.w_avg.numpy(), np.arange(8))
    x = tf.random.normal([4, 16, 16, 1])
    np.testing.assert_allclose(d(x).numpy(), d2(x).numpy(), rtol=1e-6)
    assert config["steps"] == 1 and config["resolution"] == 16
    with pytest.raises(DataError, match="neither"):
        stylegan2_directory(str(tmp_path / "missing"))


def _fake_faces(path):
    """(400, 64, 64) uint8 stand-in data: image i is filled with the value i // 2 (so the
    training set reveals which images it used)."""
    faces = np.repeat((np.arange(400) // 2).astype(np.uint8)[:, None, None], 64, 1)
    faces = np.repeat(faces, 64, 2)
    np.save(path, faces)
    return path


def test_held_out_subjects_never_in_training_set(tmp_path):
    from adptycho.nn.stylegan2_training import load_faces

    train, held_out = load_faces(_fake_faces(tmp_path / "faces.npy"))
    assert train.shape == (360, 64, 64, 1) and held_out.shape == (40, 64, 64, 1)
    train_ids = set(np.round((train[:, 0, 0, 0] + 1) * 127.5).astype(int))
    held_ids = set(np.round((held_out[:, 0, 0, 0] + 1) * 127.5).astype(int))
    assert held_ids == set(range(180, 200)) and not train_ids & held_ids
    np.save(tmp_path / "bad.npy", np.zeros((10, 64, 64), np.uint8))
    with pytest.raises(DataError, match="expected"):
        load_faces(tmp_path / "bad.npy")


def test_training_resumes_and_exports_a_card(tmp_path):
    from adptycho.nn.irmae import card_hashes, file_sha256
    from adptycho.nn.stylegan2_training import train_stylegan2

    data = _fake_faces(tmp_path / "faces.npy")
    out = tmp_path / "model"
    options = dict(resolution=16, batch_size=4, r1_interval=2, projection_steps=2,
                   verbose=0, sample_every=1000, eager=True, **TINY)
    first = train_stylegan2(out, data, steps=3, export=False, **options)
    assert first["step"] == 3 and (out / "checkpoint" / "state.npz").exists()
    assert not (out / "generator.weights.h5").exists()
    second = train_stylegan2(out, data, steps=5, command="adptycho train-stylegan2 test",
                             **options)
    assert second["step"] == 5 and second["finished"]
    log = (out / "checkpoint" / "train.log").read_text()
    assert "resumed at step 3" in log
    for name in ("generator.weights.h5", "discriminator.weights.h5", "config.json",
                 "samples.png", "projection.png", "projection.csv", "card.md"):
        assert (out / name).exists(), name
    hashes = card_hashes(out)
    assert hashes["generator.weights.h5"] == file_sha256(out / "generator.weights.h5")
    assert "held-out projection MSE" in (out / "card.md").read_text()
    # a different architecture must not silently load the checkpoint
    with pytest.raises(DataError, match="architecture"):
        train_stylegan2(out, data, steps=6, **{**options, "channel_max": 4})


def test_training_steps_go_to_tensorboard(tmp_path):
    """``--tensorboard`` of train-stylegan2: the step scalars every step and the EMA generator's
    sample grid every ``image_every`` steps, read back with TensorBoard's event reader."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from adptycho.nn.stylegan2_training import train_stylegan2
    from adptycho.training.tensorboard import GANStepLogger

    data = _fake_faces(tmp_path / "faces.npy")
    logger = GANStepLogger(tmp_path / "tb", image_every=2, settings={"steps": 3})
    train_stylegan2(tmp_path / "model", data, steps=3, export=False, resolution=16,
                    batch_size=4, r1_interval=2, verbose=0, sample_every=1000, eager=True,
                    on_step=logger, **TINY)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    for name in ("g", "d", "r1", "D(x)", "D(G)"):
        assert [e.step for e in events.Tensors(name)] == [1, 2, 3], name
    assert [e.step for e in events.Tensors("samples")] == [1, 2]
    assert "settings" in tags


SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                       "stylegan2-faces")


@pytest.mark.skipif(not os.path.exists(os.path.join(SHIPPED, "card.md")),
                    reason="models/stylegan2-faces not shipped yet")
def test_shipped_weights_load_and_match_their_hash():
    from adptycho.nn.irmae import card_hashes, file_sha256

    hashes = card_hashes(SHIPPED)
    for name in ("generator.weights.h5", "discriminator.weights.h5", "config.json"):
        assert hashes[name] == file_sha256(os.path.join(SHIPPED, name)), name
        assert os.path.getsize(os.path.join(SHIPPED, name)) < 8e6
    g, d, config = load_stylegan2("stylegan2-faces")
    assert config["resolution"] == 64 and config["held_out_subjects"] == [36, 37, 38, 39]
    images = g(tf.random.normal([2, g.z_dim]), noise_mode="const")
    assert images.shape == (2, 64, 64, 1) and np.isfinite(images.numpy()).all()
    assert d(images).shape == (2, 1)
