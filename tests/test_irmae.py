"""IRMAE (Keras), MNIST IDX reading, Mitchell-Netravali resize matrices, training command and the
shipped weights."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from adptycho.errors import DataError
from adptycho.nn import irmae as irmae_module
from adptycho.nn.irmae import IRMAE, card_hashes, file_sha256, load_decoder, load_irmae
from adptycho.nn.mnist import load_mnist, read_idx, to_32
from adptycho.nn.resize import mitchell_matrix, mitchell_resize_matrices, resize_with_matrices


# -- resize -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape_in, shape_out, antialias", [
    ((32, 32), (96, 96), False), ((32, 32), (468, 468), False), ((13, 17), (40, 23), False),
    ((32, 32), (32, 32), False), ((40, 30), (17, 11), True), ((40, 30), (17, 11), False)])
def test_resize_matrices_equal_tf_image_resize_mitchellcubic(shape_in, shape_out, antialias):
    rng = np.random.default_rng(1)
    image = rng.uniform(size=shape_in).astype(np.float32)
    r_y, r_x = mitchell_resize_matrices(shape_in, shape_out, antialias)
    assert r_y.shape == (shape_out[0], shape_in[0]) and r_x.shape == (shape_out[1], shape_in[1])
    reference = tf.image.resize(image[None, :, :, None], shape_out, method="mitchellcubic",
                                antialias=antialias)[0, :, :, 0].numpy()
    ours = resize_with_matrices(image, r_y, r_x).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(r_y.sum(axis=1), 1.0, atol=1e-6)  # constants are preserved


def test_resize_complex_and_batched_and_under_xla():
    rng = np.random.default_rng(2)
    images = (rng.normal(size=(3, 32, 32)) + 1j * rng.normal(size=(3, 32, 32))).astype(np.complex64)
    r_y, r_x = mitchell_resize_matrices((32, 32), (50, 70))
    out = tf.function(lambda x: resize_with_matrices(x, r_y, r_x), jit_compile=True)(images).numpy()
    assert out.dtype == np.complex64 and out.shape == (3, 50, 70)
    for k in range(3):
        for part, get in ((out[k].real, np.real), (out[k].imag, np.imag)):
            ref = tf.image.resize(get(images[k])[None, :, :, None], (50, 70),
                                  method="mitchellcubic")[0, :, :, 0].numpy()
            np.testing.assert_allclose(part, ref, atol=1e-5)


def test_mitchell_matrix_rejects_empty_sizes():
    with pytest.raises(Exception, match="positive"):
        mitchell_matrix(0, 5)


# -- MNIST IDX ----------------------------------------------------------------------------------
def _write_idx(path, array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    """Synthetic IDX files: 96 training and 24 test 28x28 'digits' (bars at label-dependent rows)."""
    rng = np.random.default_rng(0)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, label in enumerate(labels):
            images[i, 4 + 2 * label:7 + 2 * label, 6:22] = 255
            images[i, 6:22, 12:15] = rng.integers(100, 255)
        return images, labels

    for prefix, n in (("train", 96), ("t10k", 24)):
        images, labels = make(n)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_idx_reader_and_digit_filter(tiny_mnist):
    images, labels = load_mnist(tiny_mnist, "train")
    assert images.shape == (96, 28, 28) and images.dtype == np.uint8 and labels.shape == (96,)
    threes, three_labels = load_mnist(tiny_mnist, "test", digit=3)
    assert np.all(three_labels == 3) and len(threes) == np.sum(load_mnist(tiny_mnist, "test")[1] == 3)
    x = to_32(images[:5])
    assert x.shape == (5, 32, 32, 1) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_idx_reader_errors(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04rubbish")
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    truncated = tmp_path / "t.idx"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="10"):
        read_idx(truncated)
    with pytest.raises(DataError, match="not a directory"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(DataError, match="digit"):
        load_mnist(tmp_path, digit=11)


def test_real_mnist_label_counts(shared_data):
    images, labels = load_mnist(os.path.join(shared_data, "mnist"), "test")
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels)[3] == 1010


# -- architecture -------------------------------------------------------------------------------
def test_irmae_layer_table_and_parameter_count():
    model = IRMAE(128, 8)
    # methods notes section 1: encoder 820,320 + linear 131,072 + decoder 1,220,737
    assert model.count_params() == 2_172_129
    linear = [model.encoder.get_layer(f"linear_{i}") for i in range(1, 9)]
    assert all(not layer.use_bias and layer.activation.__name__ == "linear" for layer in linear)
    shapes = [tuple(layer.output.shape[1:]) for layer in model.encoder.layers[:4]]
    assert shapes == [(16, 16, 32), (8, 8, 64), (4, 4, 128), (2, 2, 256)]
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 1)).astype(np.float32)
    h = model.encode(x)
    assert h.shape == (4, 128)
    out = model.decode(h)
    assert out.shape == (4, 32, 32) and out.min() >= 0 and out.max() <= 1
    # the latent is the output of the linear stack: h = W h0
    h0 = model.encoder.get_layer("to_latent").output
    pre = __import__("keras").Model(model.encoder.inputs, h0).predict(x, verbose=0)
    np.testing.assert_allclose(h, pre @ model.linear_product().T, rtol=1e-4, atol=1e-5)
    assert IRMAE(16, 0).count_params() == IRMAE(16, 2).count_params() - 2 * 16 * 16


def test_train_command_writes_loadable_model_with_matching_card(tiny_mnist, tmp_path, capsys):
    from adptycho.cli import main

    out = tmp_path / "model"
    code = main(["train-irmae", "--data", str(tiny_mnist), "--out", str(out), "--epochs", "2",
                 "--latent-dim", "16", "--linear-layers", "2", "--batch-size", "32"])
    assert code == 0
    for name in ("card.md", "samples.png", "config.json", "history.csv") + irmae_module.WEIGHT_FILES:
        assert (out / name).exists(), name
    hashes = card_hashes(out)
    assert set(irmae_module.WEIGHT_FILES) <= set(hashes)
    for name, digest in hashes.items():
        assert file_sha256(out / name) == digest
    card = (out / "card.md").read_text()
    assert "train-irmae" in card and "epochs: 2" in card and "validation BCE" in card
    model, mean, config = load_irmae(out)
    assert config["linear_layers"] == 2 and mean.shape == (16,)
    images = to_32(load_mnist(tiny_mnist, "train")[0])
    np.testing.assert_allclose(model.encode(images).mean(axis=0), mean, rtol=1e-3, atol=1e-4)
    decoder, mean2, _ = load_decoder(out)
    np.testing.assert_allclose(decoder.predict(mean[None], verbose=0)[0, :, :, 0],
                               model.decode(mean[None])[0], atol=1e-6)
    # training reduced the loss
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 3
    assert float(rows[2].split(",")[1]) < float(rows[1].split(",")[1])


def test_train_command_bad_input(tmp_path, capsys):
    from adptycho.cli import main

    code = main(["train-irmae", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("adptycho: error:")
    assert "not a directory" in err[0]
    assert not (tmp_path / "m" / "card.md").exists()


# -- shipped weights ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["irmae-mnist", "irmae-mnist-3"])
def test_shipped_weights_load_and_match_their_card(name):
    try:
        directory = irmae_module.model_directory(name)
    except DataError:
        pytest.skip(f"{name} not trained yet")
    if not os.path.exists(os.path.join(directory, "card.md")):
        pytest.skip(f"{name} not trained yet")
    hashes = card_hashes(directory)
    for file in irmae_module.WEIGHT_FILES + ("config.json",):
        assert hashes[file] == file_sha256(os.path.join(directory, file)), file
        assert os.path.getsize(os.path.join(directory, file)) < 6e6
    model, mean, config = load_irmae(name)
    assert config["latent_dim"] == 128 and config["linear_layers"] == 8
    image = model.decode(mean[None])[0]
    assert image.shape == (32, 32) and 0 <= image.min() and image.max() <= 1
    assert image.max() > 0.3  # the mean latent decodes to a stroke image, not a blank


def test_activation_is_saved_and_restored(tmp_path):
    """A smooth (gelu) IRMAE round-trips through save/load with its activation; a directory
    written before the option (no ``activation`` in config.json) loads as the paper's relu."""
    import json

    from adptycho.errors import AdptychoError
    from adptycho.nn.irmae import save_irmae

    model = IRMAE(8, 1, "gelu")
    mean = np.random.default_rng(0).normal(size=8).astype(np.float32)
    save_irmae(model, tmp_path / "smooth", mean)
    decoder, _, config = load_decoder(tmp_path / "smooth")
    assert config["activation"] == "gelu"
    h = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    np.testing.assert_allclose(decoder(h).numpy(), model.decoder(h).numpy(), atol=1e-6)
    relu_decoder = irmae_module.build_decoder(8)
    relu_decoder.set_weights(model.decoder.get_weights())
    assert np.abs(relu_decoder(h).numpy() - model.decoder(h).numpy()).max() > 1e-4
    assert load_irmae(tmp_path / "smooth")[0].activation == "gelu"

    save_irmae(IRMAE(8, 1), tmp_path / "old", mean)
    path = tmp_path / "old" / "config.json"
    config = json.loads(path.read_text())
    del config["activation"]
    path.write_text(json.dumps(config))
    assert load_irmae(tmp_path / "old")[0].activation == "relu"
    with pytest.raises(AdptychoError, match="activation"):
        IRMAE(8, 1, "swish")
