"""Physics of adptycho against independent numpy (float64) references.

Nothing here checks the library against itself except where a property is the point of the test
(composition of propagators, mixed-state sums, masks, gradients vs finite differences).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from adptycho.geometry import circular_aperture
from adptycho.model import NearFieldGeometry, PtychoModel
from adptycho.objects import PixelObject
from adptycho.physics import (angular_spectrum_transfer, extract_patches, far_field,
                              forward_intensities, fourier_shift, inverse_far_field, near_field)

# Realistic geometries: hard X-ray near field (PETRA-like; band limit inactive at 100x100) and
# visible-light near field (band limit active: only |k| <= 21 of +-50 frequency bins pass).
XRAY = dict(wavelength=1e-10, pixel=180e-9, distance=3.6e-3)
OPTICAL = dict(wavelength=561e-9, pixel=3.45e-6, distance=5e-3)
OPTICAL_FAR = dict(wavelength=561e-9, pixel=3.45e-6, distance=0.065)  # only |k| <= 1 passes
# For 16x16 probes: X-ray (no band limit, up to ~1.7 rad of Fresnel phase) and optical with the
# band limit active (|k| <= 5 of +-8 bins).
XRAY_16 = XRAY
OPTICAL_16 = dict(wavelength=561e-9, pixel=3.45e-6, distance=0.5e-3)


# --------------------------------------------------------------------------------------------
# numpy references (float64 / complex128)
# --------------------------------------------------------------------------------------------
def rng_field(rng, shape):
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def np_far_field(x):
    h, w = x.shape[-2:]
    return np.fft.fftshift(np.fft.fft2(x, axes=(-2, -1)), axes=(-2, -1)) / np.sqrt(h * w)


def np_dft_far_field(x):
    """Centred orthonormal DFT written as an explicit sum (loop over output frequencies)."""
    h, w = x.shape
    out = np.zeros((h, w), complex)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for u in range(h):
        for v in range(w):
            ku, kv = u - h // 2, v - w // 2  # centred frequency index
            out[u, v] = np.sum(x * np.exp(-2j * np.pi * (ku * yy / h + kv * xx / w)))
    return out / np.sqrt(h * w)


def np_asm_transfer(shape, pixel, wavelength, z):
    """Band-limited angular spectrum transfer function (Matsushima & Shimobaba 2009), FFT order.

    H = exp(i 2 pi z (sqrt(1/l^2 - f^2) - 1/l)) * rect(fx / 2 f_lim,x) rect(fy / 2 f_lim,y),
    f_lim = 1 / (l sqrt((2 df z)^2 + 1)), df = 1 / (N dx); evanescent waves removed.
    """
    h, w = shape
    dy, dx = np.broadcast_to(np.asarray(pixel, float), (2,))
    fy = np.fft.fftfreq(h, d=dy)[:, None]
    fx = np.fft.fftfreq(w, d=dx)[None, :]
    f2 = fy ** 2 + fx ** 2
    arg = 1.0 / wavelength ** 2 - f2
    propagating = arg > 0
    kz = np.sqrt(np.where(propagating, arg, 0.0))
    transfer = np.exp(2j * np.pi * z * (kz - 1.0 / wavelength))
    lim_y = 1.0 / (wavelength * np.sqrt((2.0 * z / (h * dy)) ** 2 + 1.0))
    lim_x = 1.0 / (wavelength * np.sqrt((2.0 * z / (w * dx)) ** 2 + 1.0))
    window = (np.abs(fy) < lim_y) & (np.abs(fx) < lim_x) & propagating
    return np.where(window, transfer, 0.0)


def np_near_field(x, transfer):
    return np.fft.ifft2(np.fft.fft2(x, axes=(-2, -1)) * transfer, axes=(-2, -1))


def np_fourier_shift(x, shift):
    h, w = x.shape[-2:]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    ramp = np.exp(-2j * np.pi * (shift[0] * fy + shift[1] * fx))
    return np.fft.ifft2(np.fft.fft2(x, axes=(-2, -1)) * ramp, axes=(-2, -1))


def np_forward(obj, probe, positions, transfer=None):
    """Numpy reference of I_j = sum_m |Prop{ shift(P_m, frac_j) * O[corner_j window] }|^2.

    Near field: the detector is fixed to the probe, so the propagated wave is shifted back by
    -frac_j (in far field that shift only adds a phase ramp, invisible in the intensity).
    """
    m, h, w = probe.shape
    out = np.zeros((len(positions), h, w))
    for j, pos in enumerate(np.asarray(positions, float)):
        corner = np.floor(pos).astype(int)
        frac = pos - corner
        patch = obj[corner[0]:corner[0] + h, corner[1]:corner[1] + w]
        for mode in range(m):
            exit_wave = np_fourier_shift(probe[mode], frac) * patch
            if transfer is None:
                wave = np_far_field(exit_wave)
            else:
                wave = np_fourier_shift(np_near_field(exit_wave, transfer), -frac)
            out[j] += np.abs(wave) ** 2
    return out


def low_pass(x, keep):
    """Keep only FFT bins with |k_y|, |k_x| <= keep (a field strictly inside a band limit)."""
    h, w = x.shape[-2:]
    ky = np.abs(np.fft.fftfreq(h) * h)[:, None]
    kx = np.abs(np.fft.fftfreq(w) * w)[None, :]
    return np.fft.ifft2(np.fft.fft2(x) * ((ky <= keep) & (kx <= keep)))


def c64(x):
    return tf.constant(np.asarray(x), tf.complex64)


def assert_close_complex(actual, expected, rel):
    actual = np.asarray(actual)
    scale = np.max(np.abs(expected))
    err = np.max(np.abs(actual - expected))
    assert err <= rel * scale, f"max error {err:.3g} > {rel:g} * {scale:.3g}"


# --------------------------------------------------------------------------------------------
# far field
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(16, 16), (5, 7), (3, 4, 12, 10)])
def test_far_field_matches_numpy_fft(shape):
    x = rng_field(np.random.default_rng(1), shape)
    assert_close_complex(far_field(c64(x)).numpy(), np_far_field(x), 1e-5)


@pytest.mark.parametrize("shape", [(6, 6), (5, 7)])
def test_far_field_matches_explicit_dft_loop(shape):
    x = rng_field(np.random.default_rng(2), shape)
    assert_close_complex(far_field(c64(x)).numpy(), np_dft_far_field(x), 1e-5)


def test_far_field_zero_frequency_is_centred():
    x = np.ones((8, 9), complex)  # a flat wave has all its energy at zero frequency
    out = np.abs(far_field(c64(x)).numpy())
    assert np.unravel_index(np.argmax(out), out.shape) == (4, 4)
    np.testing.assert_allclose(out[4, 4], np.sqrt(72), rtol=1e-6)


def test_far_field_parseval():
    x = rng_field(np.random.default_rng(3), (2, 32, 24))
    out = far_field(c64(x)).numpy()
    energy_in = np.sum(np.abs(x) ** 2, axis=(-2, -1))
    energy_out = np.sum(np.abs(out.astype(np.complex128)) ** 2, axis=(-2, -1))
    np.testing.assert_allclose(energy_out, energy_in, rtol=1e-5)


@pytest.mark.parametrize("shape", [(16, 16), (7, 10)])
def test_inverse_far_field_inverts(shape):
    x = rng_field(np.random.default_rng(4), shape)
    assert_close_complex(inverse_far_field(far_field(c64(x))).numpy(), x, 1e-5)
    # and the other way round: inverse is numpy's inverse of the centred orthonormal DFT
    y = rng_field(np.random.default_rng(5), shape)
    expected = np.fft.ifft2(np.fft.ifftshift(y)) * np.sqrt(np.prod(shape))
    assert_close_complex(inverse_far_field(c64(y)).numpy(), expected, 1e-5)


# --------------------------------------------------------------------------------------------
# angular spectrum
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("geometry, band_limited", [(XRAY, False), (OPTICAL, True),
                                                     (OPTICAL_FAR, True)])
def test_angular_spectrum_transfer_matches_numpy(geometry, band_limited):
    shape = (100, 100)
    lam, dx, z = geometry["wavelength"], geometry["pixel"], geometry["distance"]
    expected = np_asm_transfer(shape, dx, lam, z)
    # the test parameters must not put a frequency on the float32 edge of the band limit
    f = np.fft.fftfreq(100, d=dx)
    f_lim = 1.0 / (lam * np.sqrt((2 * z / (100 * dx)) ** 2 + 1))
    assert np.min(np.abs(np.abs(f) - f_lim)) > 1e-4 * f_lim
    assert (np.count_nonzero(expected) < expected.size) == band_limited
    actual = angular_spectrum_transfer(shape, dx, lam, z).numpy()
    assert actual.dtype == np.complex64
    np.testing.assert_array_equal(actual != 0, expected != 0)  # same band-limit window
    assert_close_complex(actual, expected, 2e-5)
    # with diffraction strong enough that the test means something
    assert np.ptp(np.angle(expected[expected != 0])) > 1.0

    field = rng_field(np.random.default_rng(6), shape)
    assert_close_complex(near_field(c64(field), angular_spectrum_transfer(shape, dx, lam, z)).numpy(),
                         np_near_field(field, expected), 2e-5)


def test_angular_spectrum_transfer_rectangular_pixels():
    shape, pixel, lam, z = (48, 64), (2.0e-6, 3.45e-6), 561e-9, 4e-3
    expected = np_asm_transfer(shape, pixel, lam, z)
    actual = angular_spectrum_transfer(shape, pixel, lam, z).numpy()
    np.testing.assert_array_equal(actual != 0, expected != 0)
    assert_close_complex(actual, expected, 2e-5)


def test_angular_spectrum_tensor_distance_matches_float():
    lam, dx, z = OPTICAL["wavelength"], OPTICAL["pixel"], OPTICAL["distance"]
    a = angular_spectrum_transfer((32, 32), dx, lam, tf.constant(z, tf.float32)).numpy()
    assert_close_complex(a, np_asm_transfer((32, 32), dx, lam, z), 2e-5)


@pytest.mark.parametrize("geometry", [XRAY, OPTICAL])
def test_angular_spectrum_composition(geometry):
    lam, dx, z = geometry["wavelength"], geometry["pixel"], geometry["distance"]
    shape = (100, 100)
    z1, z2 = 0.4 * z, 0.6 * z
    # spectrum strictly inside the band limit of z1 + z2 (|k| <= 21 for OPTICAL)
    field = low_pass(rng_field(np.random.default_rng(7), shape), keep=15)
    total = np_asm_transfer(shape, dx, lam, z1 + z2)
    assert np.all(total[np.abs(np.fft.fft2(field)) > 1e-9] != 0)
    two_steps = near_field(near_field(c64(field), angular_spectrum_transfer(shape, dx, lam, z1)),
                           angular_spectrum_transfer(shape, dx, lam, z2)).numpy()
    one_step = near_field(c64(field), angular_spectrum_transfer(shape, dx, lam, z1 + z2)).numpy()
    assert_close_complex(two_steps, one_step, 2e-5)
    assert_close_complex(one_step, np_near_field(field, total), 2e-5)
    # and propagation did change the field (not a trivially-true identity)
    assert np.max(np.abs(one_step - field)) > 0.1 * np.max(np.abs(field))


def test_angular_spectrum_zero_distance_is_identity():
    lam, dx = OPTICAL["wavelength"], OPTICAL["pixel"]
    field = rng_field(np.random.default_rng(8), (40, 50))  # full bandwidth: nothing may be cut
    transfer = angular_spectrum_transfer(field.shape, dx, lam, 0.0)
    np.testing.assert_allclose(transfer.numpy(), np.ones(field.shape), atol=1e-7)
    assert_close_complex(near_field(c64(field), transfer).numpy(), field, 1e-5)


@pytest.mark.parametrize("geometry", [XRAY, OPTICAL, OPTICAL_FAR])
def test_angular_spectrum_back_propagation_and_energy(geometry):
    lam, dx, z = geometry["wavelength"], geometry["pixel"], geometry["distance"]
    shape = (100, 100)
    keep = 1 if geometry is OPTICAL_FAR else 15
    field = low_pass(rng_field(np.random.default_rng(9), shape), keep=keep)
    forward = near_field(c64(field), angular_spectrum_transfer(shape, dx, lam, z))
    back = near_field(forward, angular_spectrum_transfer(shape, dx, lam, -z)).numpy()
    assert_close_complex(back, field, 3e-5)
    forward = forward.numpy().astype(np.complex128)
    np.testing.assert_allclose(np.sum(np.abs(forward) ** 2), np.sum(np.abs(field) ** 2), rtol=1e-5)
    assert np.max(np.abs(forward - field)) > 0.05 * np.max(np.abs(field))


def test_angular_spectrum_band_limit_removes_energy_of_broadband_field():
    lam, dx, z = OPTICAL["wavelength"], OPTICAL["pixel"], OPTICAL["distance"]
    field = rng_field(np.random.default_rng(10), (100, 100))
    out = near_field(c64(field), angular_spectrum_transfer(field.shape, dx, lam, z)).numpy()
    expected = np_near_field(field, np_asm_transfer(field.shape, dx, lam, z))
    ratio = np.sum(np.abs(out) ** 2) / np.sum(np.abs(field) ** 2)
    np.testing.assert_allclose(ratio, np.sum(np.abs(expected) ** 2) / np.sum(np.abs(field) ** 2),
                               rtol=1e-4)
    assert ratio < 0.3  # 43 x 43 of 100 x 100 bins pass


# --------------------------------------------------------------------------------------------
# shifts and patches
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [(1, 0), (0, -2), (3, 5)])
@pytest.mark.parametrize("shape", [(16, 16), (9, 12)])
def test_fourier_shift_whole_pixels_is_roll(shift, shape):
    x = rng_field(np.random.default_rng(11), shape)
    out = fourier_shift(c64(x), tf.constant(shift, tf.float32)).numpy()
    assert_close_complex(out, np.roll(x, shift, axis=(0, 1)), 1e-5)


def test_fourier_shift_broadcasts_over_batch():
    x = rng_field(np.random.default_rng(12), (2, 3, 8, 10))
    shifts = np.array([[[1, 0]], [[0, -2]]], float)  # (2, 1, 2) -> applies to all 3 modes
    out = fourier_shift(c64(x), tf.constant(shifts, tf.float32)).numpy()
    for b in range(2):
        for m in range(3):
            assert_close_complex(out[b, m], np.roll(x[b, m], shifts[b, 0].astype(int), axis=(0, 1)),
                                 1e-5)


def test_fourier_shift_fractional_matches_numpy_and_inverts():
    x = rng_field(np.random.default_rng(13), (12, 15))
    shift = np.array([0.37, -1.61])
    out = fourier_shift(c64(x), tf.constant(shift, tf.float32))
    assert_close_complex(out.numpy(), np_fourier_shift(x, shift), 1e-5)
    back = fourier_shift(out, tf.constant(-shift, tf.float32)).numpy()
    assert_close_complex(back, x, 1e-5)
    assert np.max(np.abs(out.numpy() - x)) > 0.5  # the shift did something


def test_fourier_shift_gradient_matches_finite_differences():
    rng = np.random.default_rng(14)
    field = low_pass(rng_field(rng, (24, 24)), keep=5)
    yy, xx = np.mgrid[:24, :24]
    weight = np.exp(-((yy - 8.0) ** 2 + (xx - 15.0) ** 2) / 30.0)  # not shift invariant

    def np_loss(s):
        return np.sum(weight * np.abs(np_fourier_shift(field, s)) ** 2)

    shift0 = np.array([0.3, -0.7])
    s = tf.Variable(shift0, dtype=tf.float32)
    with tf.GradientTape() as tape:
        out = fourier_shift(c64(field), s)
        loss = tf.reduce_sum(tf.constant(weight, tf.float32) * tf.abs(out) ** 2)
    grad = tape.gradient(loss, s).numpy()
    step = 1e-2
    fd = np.array([(np_loss(shift0 + step * e) - np_loss(shift0 - step * e)) / (2 * step)
                   for e in np.eye(2)])
    assert np.all(np.abs(fd) > 1e-2 * np.abs(np_loss(shift0)))
    np.testing.assert_allclose(grad, fd, rtol=2e-2)


def test_extract_patches_equals_numpy_slicing():
    image = np.random.default_rng(15).normal(size=(20, 25)) + 1j * np.arange(500).reshape(20, 25)
    corners = np.array([[0, 0], [3, 7], [12, 17], [0, 17], [12, 0], [5, 5]])
    patches = extract_patches(c64(image), tf.constant(corners, tf.int32), (8, 8)).numpy()
    assert patches.shape == (6, 8, 8)
    for b, (cy, cx) in enumerate(corners):
        np.testing.assert_allclose(patches[b], image[cy:cy + 8, cx:cx + 8], rtol=1e-6)


def test_extract_patches_non_square():
    image = np.arange(30 * 40, dtype=np.float64).reshape(30, 40)
    corners = np.array([[2, 9], [25, 0]])
    patches = extract_patches(tf.constant(image), tf.constant(corners, tf.int32), (5, 11)).numpy()
    for b, (cy, cx) in enumerate(corners):
        np.testing.assert_array_equal(patches[b], image[cy:cy + 5, cx:cx + 11])


@pytest.mark.parametrize("jit,dus", [(False, False), (True, False), (True, True)])
def test_extract_patches_gradient_is_scatter_add(jit, dus):
    """Eagerly the adjoint is TF's scatter-add; under XLA, for large windows, the patches are a
    loop of dynamic slices and the adjoint a loop of dynamic-update-slices (forced here for
    small ones)."""
    from adptycho.accel import ExecutionPlan
    from adptycho.accel.windows import extract_patches as planned_patches

    plan = ExecutionPlan(xla=jit, window_min_pixels=0 if dus else 10 ** 9)
    rng = np.random.default_rng(16)
    image = tf.Variable(rng.normal(size=(18, 20)))
    corners = np.array([[0, 0], [2, 3], [2, 3], [10, 12], [5, 1]])  # overlapping and repeated
    upstream = rng.normal(size=(len(corners), 8, 8))

    def gradient():
        with tf.GradientTape() as tape:
            patches = planned_patches(image, tf.constant(corners, tf.int32), (8, 8), plan)
            loss = tf.reduce_sum(patches * upstream)
        return patches, tape.gradient(loss, image)

    patches, grad = tf.function(gradient, jit_compile=True)() if jit else gradient()
    for b, (cy, cx) in enumerate(corners):  # forward: the dynamic-slice loop under XLA
        np.testing.assert_array_equal(patches.numpy()[b], image.numpy()[cy:cy + 8, cx:cx + 8])
    grad = tf.convert_to_tensor(grad).numpy()
    expected = np.zeros((18, 20))
    for b, (cy, cx) in enumerate(corners):
        expected[cy:cy + 8, cx:cx + 8] += upstream[b]
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# forward model
# --------------------------------------------------------------------------------------------
def _scene(rng, obj_shape=(40, 46), probe_shape=(16, 16), modes=2):
    obj = (1.0 + 0.3 * rng.normal(size=obj_shape)) * np.exp(1j * rng.normal(size=obj_shape))
    yy, xx = np.mgrid[:probe_shape[0], :probe_shape[1]]
    cy, cx = (probe_shape[0] - 1) / 2, (probe_shape[1] - 1) / 2
    envelope = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
    probe = np.stack([envelope * np.exp(1j * 0.05 * (yy - cy) ** 2),
                      0.5 * envelope * (xx - cx) / 4.0 * np.exp(0.3j)])[:modes]
    probe = (probe * 10.0).astype(np.complex64)
    positions = np.array([[0.0, 0.0], [3.25, 7.5], [10.9, 2.1], [20.5, 24.75], [23.0, 27.999]])
    return obj.astype(np.complex64), probe, positions


@pytest.mark.parametrize("probe_shape", [(16, 16), (16, 18), (15, 16), (15, 17)],
                         ids=["even", "even-rect", "odd-even", "odd"])
def test_forward_intensities_far_field_matches_numpy(probe_shape):
    # even shapes take the fast path (fftshift folded into the probe), odd ones the plain one
    obj, probe, positions = _scene(np.random.default_rng(17), probe_shape=probe_shape)
    actual = forward_intensities(c64(obj), c64(probe), tf.constant(positions, tf.float32)).numpy()
    expected = np_forward(obj.astype(complex), probe.astype(complex), positions)
    assert actual.shape == expected.shape == (5,) + probe_shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * expected.max())


def _fused_plan(enabled=True, xla=True, pieces=False):
    """An execution plan that makes the fused far-field path apply to the small test windows
    (or switches it off)."""
    from adptycho.accel import ExecutionPlan

    return ExecutionPlan(xla=xla, pieces=pieces, fused=enabled, window_min_pixels=0)


def _scene_variables(obj, probe, positions):
    """Object and probe parts as variables, positions as a float32 constant."""
    return (tf.Variable(obj.real), tf.Variable(obj.imag), tf.Variable(probe.real),
            tf.Variable(probe.imag), tf.constant(positions.astype(np.float32)))


def _fused_then_composed(run, pos, calls):
    """``run(pos, plan)`` compiled with XLA (unknown batch size, as Keras traces it), first on
    the fused path (it must be taken: ``calls`` filled), then with it switched off."""
    def compiled(plan):
        return tf.function(lambda p: run(p, plan), jit_compile=True,
                           input_signature=[tf.TensorSpec([None, 2], tf.float32)])(pos)

    with_fused = compiled(_fused_plan(True))
    assert calls, "the fused path was not taken"
    calls.clear()
    composed = compiled(_fused_plan(False))
    assert not calls
    return with_fused, composed


def _split_run(run, pos, calls):
    """``run(pos, plan)`` traced as a plain tf.function on the XLA-pieces plan (fused path
    forced): the FFTs must be TensorFlow ops of the outer graph and the window loops
    XLA-compiled calls."""
    plan = _fused_plan(True, xla=False, pieces=True)
    fn = tf.function(lambda p: run(p, plan),
                     input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    calls.clear()
    ops = fn.get_concrete_function().graph.get_operations()
    assert calls, "the fused path was not taken"
    types = {op.type for op in ops}
    assert {"FFT2D", "IFFT2D"} <= types, "the FFTs are not ops of the outer graph"
    assert any("_XlaMustCompile" in op.node_def.attr and op.node_def.attr["_XlaMustCompile"].b
               for op in ops), "no XLA-compiled piece"
    return fn(pos)


def _assert_all_close(names, with_fused, composed, subpixel, rtol, atol_factor):
    for name, a, b in zip(names, with_fused, composed):
        if b is None:
            assert a is None or not subpixel
            continue
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol_factor * np.abs(b).max(),
                                   err_msg=name)


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("subpixel", [False, True])
def test_fused_far_field_matches_numpy_and_its_gradient_matches_autodiff(modes, subpixel,
                                                                          monkeypatch):
    """Under XLA the far field runs through the fused gather/FFT loop with a hand-written
    adjoint: its intensities equal the numpy reference and its gradients (object parts, probe,
    positions) equal those of the composed ops (tested against finite differences below)."""
    import adptycho.accel.forward as accel_forward

    obj, probe, positions = _scene(np.random.default_rng(40 + modes), modes=modes)
    if not subpixel:
        positions = np.floor(positions)
    rng = np.random.default_rng(7)
    measured = tf.constant(rng.uniform(0.0, 2.0, (len(positions), 16, 16)), tf.float32)
    re, im, pr, pi, pos = _scene_variables(obj, probe, positions)
    calls = []
    original = accel_forward.fused_far_field_intensities
    monkeypatch.setattr(accel_forward, "fused_far_field_intensities",
                        lambda *a: calls.append(1) or original(*a))

    def run(pos, plan):  # traced with an unknown batch size, as Keras does
        with tf.GradientTape() as tape:
            tape.watch(pos)
            intensity = accel_forward.forward_intensities((re, im), tf.complex(pr, pi), pos,
                                                          subpixel=subpixel, plan=plan)
            loss = tf.reduce_sum((tf.sqrt(intensity + 1e-6) - tf.sqrt(measured)) ** 2)
        return [intensity] + tape.gradient(loss, [re, im, pr, pi, pos])

    with_fused, composed = _fused_then_composed(run, pos, calls)
    expected = np_forward(obj.astype(complex), probe.astype(complex), positions)
    np.testing.assert_allclose(with_fused[0].numpy(), expected, rtol=1e-4,
                               atol=1e-4 * expected.max())
    _assert_all_close(("object real", "object imag", "probe real", "probe imag", "positions"),
                      with_fused[1:], composed[1:], subpixel, rtol=1e-4, atol_factor=1e-5)
    # XLA pieces joined by TensorFlow FFTs (xla_pieces): the same values
    split = _split_run(run, pos, calls)
    _assert_all_close(("intensity", "object real", "object imag", "probe real", "probe imag",
                       "positions"), split, composed, subpixel, rtol=1e-4, atol_factor=1e-5)


@pytest.mark.parametrize("loss_name,modes,subpixel,masked", [
    ("amplitude", 1, False, False), ("amplitude", 2, True, True),
    ("poisson", 1, True, False), ("poisson-gaussian", 2, False, True)])
def test_fused_losses_equal_composed_losses_and_gradients(loss_name, modes, subpixel, masked,
                                                          monkeypatch):
    """``forward_losses`` under XLA evaluates the loss from the far field in one reduction and
    forms its gradient from the analytic per-pixel derivative (``fused_far_field_losses``): the
    losses, the amplitude residual sums, the count sums and the object, probe and position
    gradients equal those of the composed path (intensities, then the loss, autodiff)."""
    import adptycho.accel.forward as accel_forward
    from adptycho.losses import amplitude_loss, get_loss

    obj, probe, positions = _scene(np.random.default_rng(60 + modes), modes=modes)
    if not subpixel:
        positions = np.floor(positions)
    rng = np.random.default_rng(8)
    counts = rng.poisson(3.0 * np_forward(obj.astype(complex), probe.astype(complex),
                                          positions)).astype(np.float32)
    if loss_name == "poisson-gaussian":
        counts = counts + rng.normal(0.0, 1.0, counts.shape).astype(np.float32)
        readout = rng.uniform(0.5, 1.5, (16, 16)).astype(np.float32)
    else:
        readout = None
    counts = tf.constant(counts / 3.0)
    mask = tf.constant((rng.uniform(size=(16, 16)) > 0.15).astype(np.float32)) if masked else None
    re, im, pr, pi, pos = _scene_variables(obj, probe, positions)
    calls = []
    original = accel_forward.fused_far_field_losses
    monkeypatch.setattr(accel_forward, "fused_far_field_losses",
                        lambda *a: calls.append(1) or original(*a))

    def run(pos, plan):  # traced with an unknown batch size, as Keras does
        with tf.GradientTape() as tape:
            tape.watch(pos)
            losses, residuals, counts_sums = accel_forward.forward_losses(
                (re, im), tf.complex(pr, pi), pos, counts, loss_name, subpixel=subpixel,
                mask=mask, readout_noise=readout, plan=plan)
            loss = tf.reduce_mean(losses * tf.linspace(0.5, 1.5, tf.shape(losses)[0]))
        return [losses, residuals, counts_sums] + tape.gradient(loss, [re, im, pr, pi, pos])

    with_fused, composed = _fused_then_composed(run, pos, calls)
    predicted = forward_intensities((re, im), tf.complex(pr, pi), pos, subpixel=subpixel)
    expected_losses = get_loss(loss_name)(counts, predicted, mask, readout).numpy()
    np.testing.assert_allclose(with_fused[0].numpy(), expected_losses, rtol=2e-4)
    np.testing.assert_allclose(with_fused[1].numpy(),
                               amplitude_loss(counts, predicted, mask).numpy(), rtol=2e-4)
    valid = np.maximum(counts.numpy(), 0.0) * (1.0 if mask is None else mask.numpy())
    np.testing.assert_allclose(with_fused[2].numpy(), valid.sum(axis=(1, 2)), rtol=1e-5)
    _assert_all_close(("losses", "residuals", "counts", "object real", "object imag",
                       "probe real", "probe imag", "positions"), with_fused, composed, subpixel,
                      rtol=2e-4, atol_factor=2e-5)
    # XLA pieces joined by TensorFlow FFTs (xla_pieces): the same values
    split = _split_run(run, pos, calls)
    _assert_all_close(("losses", "residuals", "counts", "object real", "object imag",
                       "probe real", "probe imag", "positions"), split, composed, subpixel,
                      rtol=2e-4, atol_factor=2e-5)


def test_gradient_traced_after_the_fft_outside_xla_scope_keeps_its_xla_pieces():
    """``PtychoModel.train_step`` computes the losses inside the pieces plan's scope
    (``fft_outside_xla()``) and the gradient after it: the custom gradients re-enter the mode
    they were defined in, so the backward pass is XLA pieces (the adjoint loop, the far-field
    gradient, the shift adjoint) joined by TensorFlow FFTs as well, with the same values as
    inside the scope."""
    import adptycho.accel.forward as accel_forward
    from adptycho.accel.xla_pieces import fft_outside_xla

    plan = _fused_plan(True, xla=False, pieces=True)
    obj, probe, positions = _scene(np.random.default_rng(70), modes=1)
    rng = np.random.default_rng(9)
    counts = tf.constant(rng.uniform(0.0, 2.0, (len(positions), 16, 16)), tf.float32)
    re, im, pr, pi, pos = _scene_variables(obj, probe, positions)

    def run(pos, gradient_in_scope):
        with tf.GradientTape() as tape:
            tape.watch(pos)
            with fft_outside_xla():
                losses, _, _ = accel_forward.forward_losses(
                    (re, im), tf.complex(pr, pi), pos, counts, "amplitude", subpixel=True,
                    plan=plan)
                loss = tf.reduce_sum(losses)
                if gradient_in_scope:
                    return tape.gradient(loss, [re, im, pr, pi, pos])
        return tape.gradient(loss, [re, im, pr, pi, pos])

    results = {}
    for inside in (True, False):
        fn = tf.function(lambda p: run(p, inside),
                         input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        ops = fn.get_concrete_function().graph.get_operations()
        compiled = [op for op in ops if "_XlaMustCompile" in op.node_def.attr
                    and op.node_def.attr["_XlaMustCompile"].b]
        types = [op.type for op in ops]
        # forward: ramp product, exit-wave loop, loss sums; backward: far-field gradient,
        # adjoint loop, shift adjoint sums
        assert len(compiled) == 6, (inside, len(compiled))
        # FFT2D: probe spectrum, far field, shift adjoint; IFFT2D: shifted probes, back-
        # propagation, the gradient of the probe spectrum
        assert types.count("IFFT2D") == 3 and types.count("FFT2D") == 3, (inside, types)
        results[inside] = fn(pos)
    _assert_all_close(("object real", "object imag", "probe real", "probe imag", "positions"),
                      results[False], results[True], True, rtol=1e-5, atol_factor=1e-6)


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_sub_pixel_shift_adjoint_matches_autodiff(fold, jit):
    """``accel.forward.shifted_probes`` has a hand-written adjoint (probe spectrum and fraction
    gradients from one pass over the back-propagated spectrum); it equals autodiff of the
    composed ramp ops, eagerly and under XLA, with two modes and the folded fftshift."""
    import adptycho.accel.forward as accel_forward
    from adptycho.accel import ExecutionPlan

    rng = np.random.default_rng(12)
    probe = tf.constant((rng.normal(size=(2, 16, 16))
                         + 1j * rng.normal(size=(2, 16, 16))).astype(np.complex64))
    fractions = tf.constant(rng.uniform(-0.5, 0.5, (5, 2)).astype(np.float32))
    weights = tf.constant((rng.normal(size=(5, 2, 16, 16))
                           + 1j * rng.normal(size=(5, 2, 16, 16))).astype(np.complex64))

    def run(plan):
        with tf.GradientTape() as tape:
            tape.watch([probe, fractions])
            shifted = accel_forward.shifted_probes(probe, fractions, fold, plan)
            loss = (tf.reduce_sum(tf.abs(shifted * weights) ** 2)
                    + tf.reduce_sum(tf.math.real(shifted * tf.math.conj(weights))))
        return [shifted] + tape.gradient(loss, [probe, fractions])

    results = []
    for adjoint in (True, False):
        plan = ExecutionPlan(xla=jit, shift_adjoint=adjoint)
        results.append(tf.function(lambda: run(plan), jit_compile=True)() if jit else run(plan))
    for name, a, b in zip(("shifted", "probe", "fractions"), *results):
        a, b = a.numpy(), b.numpy()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("near", [False, True])
def test_planned_forward_equals_the_reference_ops(near):
    """``accel.forward`` under one XLA program with the window loops forced (materialised
    ramps and transfer, shift adjoint) gives the intensities and gradients of the reference
    ``physics.forward`` ops."""
    import adptycho.accel.forward as accel_forward
    from adptycho.accel import ExecutionPlan

    obj, probe, positions = _scene(np.random.default_rng(21))
    re, im, pr, pi, pos = _scene_variables(obj, probe, positions)
    transfer = (angular_spectrum_transfer((16, 16), 1e-6, 5e-7, 2e-5) if near else None)

    def run(fn):
        with tf.GradientTape() as tape:
            tape.watch(pos)
            intensity = fn((re, im), tf.complex(pr, pi), pos, transfer)
            loss = tf.reduce_sum(tf.sqrt(intensity + 1e-6))
        return [intensity] + tape.gradient(loss, [re, im, pr, pi, pos])

    plan = ExecutionPlan(xla=True, fused=False, window_min_pixels=0)
    fast = tf.function(lambda: run(lambda *a: accel_forward.forward_intensities(*a, plan=plan)),
                       jit_compile=True)()
    plain = run(forward_intensities)
    _assert_all_close(("intensity", "object real", "object imag", "probe real", "probe imag",
                       "positions"), fast, plain, True, rtol=1e-4, atol_factor=1e-5)


@pytest.mark.parametrize("probe_shape", [(16, 16), (15, 17)])
def test_forward_intensities_subpixel_false_ignores_fraction(probe_shape):
    obj, probe, positions = _scene(np.random.default_rng(18), probe_shape=probe_shape)
    actual = forward_intensities(c64(obj), c64(probe), tf.constant(positions, tf.float32),
                                 subpixel=False).numpy()
    expected = np_forward(obj.astype(complex), probe.astype(complex), np.floor(positions))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * expected.max())
    with_fraction = np_forward(obj.astype(complex), probe.astype(complex), positions)
    assert np.max(np.abs(expected[1:] - with_fraction[1:])) > 1e-2 * expected.max()


@pytest.mark.parametrize("probe_shape", [(16, 16), (15, 17)])
@pytest.mark.parametrize("geometry", [XRAY_16, OPTICAL_16])
def test_forward_intensities_near_field_matches_numpy(geometry, probe_shape):
    obj, probe, positions = _scene(np.random.default_rng(19), probe_shape=probe_shape)
    lam, dx, z = geometry["wavelength"], geometry["pixel"], geometry["distance"]
    transfer = angular_spectrum_transfer(probe.shape[1:], dx, lam, z)
    actual = forward_intensities(c64(obj), c64(probe), tf.constant(positions, tf.float32),
                                 transfer).numpy()
    np_transfer = np_asm_transfer(probe.shape[1:], dx, lam, z)
    expected = np_forward(obj.astype(complex), probe.astype(complex), positions, np_transfer)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * expected.max())
    far = np_forward(obj.astype(complex), probe.astype(complex), positions)
    assert np.max(np.abs(far - expected)) > 0.1 * expected.max()


@pytest.mark.parametrize("probe_shape", [(16, 16), (15, 17)])
@pytest.mark.parametrize("near", [False, True])
def test_mixed_state_intensity_is_sum_of_modes(near, probe_shape):
    obj, probe, positions = _scene(np.random.default_rng(20), probe_shape=probe_shape)
    transfer = (angular_spectrum_transfer(probe.shape[1:], 1e-6, 561e-9, 1e-4) if near else None)
    pos = tf.constant(positions, tf.float32)
    both = forward_intensities(c64(obj), c64(probe), pos, transfer).numpy()
    single = [forward_intensities(c64(obj), c64(probe[m:m + 1]), pos, transfer).numpy()
              for m in range(2)]
    np.testing.assert_allclose(both, single[0] + single[1], rtol=1e-5, atol=1e-5 * both.max())
    coherent = forward_intensities(c64(obj), c64(probe.sum(0, keepdims=True)), pos, transfer).numpy()
    assert np.max(np.abs(coherent - both)) > 1e-2 * both.max()


# --------------------------------------------------------------------------------------------
# PtychoModel: mask and gradients
# --------------------------------------------------------------------------------------------
def _model_scene(rng, near=None, loss="amplitude", mask=None, probe_shape=(16, 16),
                 farfield_distance_m=None):
    obj, probe, positions = _scene(rng, obj_shape=(30, 32), probe_shape=probe_shape, modes=2)
    positions = np.array([[1.3, 2.6], [6.7, 10.2], [12.4, 4.9], [9.5, 14.35]])
    true_obj = obj
    start_obj = np.exp(0.2j * rng.normal(size=obj.shape)) * (1 + 0.1 * rng.normal(size=obj.shape))
    model = PtychoModel(PixelObject(obj.shape, initial=start_obj.astype(np.complex64)), probe,
                        positions, near_field=near, mask=mask, loss=loss,
                        farfield_distance_m=farfield_distance_m)
    transfer = None
    if near is not None:
        transfer = angular_spectrum_transfer(probe.shape[1:], near.pixel_size_m, near.wavelength_m,
                                             near.distance_m)
    data = forward_intensities(c64(true_obj), c64(probe), tf.constant(positions, tf.float32),
                               transfer)
    return model, data, positions


@pytest.mark.parametrize("probe_shape", [(16, 16), (15, 17)])
@pytest.mark.parametrize("geometry", [None, XRAY_16, OPTICAL_16])
def test_model_call_matches_numpy(geometry, probe_shape):
    near = None
    if geometry is not None:
        near = NearFieldGeometry(geometry["wavelength"], (geometry["pixel"],) * 2,
                                 geometry["distance"])
    model, _, positions = _model_scene(np.random.default_rng(26), near=near,
                                       probe_shape=probe_shape)
    transfer = None
    if near is not None:
        transfer = np_asm_transfer(probe_shape, near.pixel_size_m, near.wavelength_m,
                                   near.distance_m)
    expected = np_forward(model.get_object().astype(complex), model.get_probe().astype(complex),
                          positions, transfer)
    actual = model(np.arange(len(positions))).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * expected.max())
    # a subset of indices, in any order
    np.testing.assert_allclose(model(np.array([3, 0])).numpy(), expected[[3, 0]], rtol=1e-4,
                               atol=1e-4 * expected.max())


def test_model_mask_ignores_masked_pixels():
    rng = np.random.default_rng(21)
    mask = np.ones((16, 16), bool)
    mask[0, :] = False
    mask[7, 3] = mask[8, 8] = mask[15, 11] = False
    model, data, positions = _model_scene(rng, mask=mask)
    indices = np.arange(len(positions))
    predicted = model(indices)
    corrupted = data.numpy().copy()
    corrupted[:, ~mask] = 1e6  # wrong only where the detector is invalid
    clean_loss = model.pattern_losses(data, predicted).numpy()
    corrupt_loss = model.pattern_losses(tf.constant(corrupted), predicted).numpy()
    assert np.all(clean_loss > 0)
    np.testing.assert_allclose(corrupt_loss, clean_loss, rtol=1e-6)
    # without the mask the same corruption dominates the loss
    unmasked = PtychoModel(PixelObject(model.object_shape, initial=model.get_object()),
                           model.get_probe(), positions)
    assert np.all(unmasked.pattern_losses(tf.constant(corrupted), predicted).numpy()
                  > 10 * clean_loss)


def _model_loss(model, data, indices, dtype=tf.float32):
    predicted = model(indices)
    return tf.reduce_mean(model.pattern_losses(tf.cast(data, dtype), tf.cast(predicted, dtype)))


def _check_gradient(model, data, variable, index, step, rtol=5e-3):
    """Tape gradient of one element of ``variable`` vs a central finite difference.

    The finite-difference loss is reduced in float64 (the float32 model predictions are cast),
    so its rounding error is ~1e-7 relative per pixel instead of that of a float32 sum.
    """
    indices = np.arange(model.num_patterns)
    with tf.GradientTape() as tape:
        loss = _model_loss(model, data, indices)
    grad = tape.gradient(loss, variable.value)
    grad = tf.convert_to_tensor(grad).numpy()[index]
    original = np.array(variable.numpy())
    values = []
    for sign in (1.0, -1.0):
        changed = original.copy()
        changed[index] += sign * step
        variable.assign(changed)
        values.append(float(_model_loss(model, data, indices, tf.float64)))
    variable.assign(original)
    fd = (values[0] - values[1]) / (2 * step)
    # the loss change is far above float32 rounding: the parameter matters
    assert abs(values[0] - values[1]) > 1e-6 * abs(float(loss))
    np.testing.assert_allclose(grad, fd, rtol=rtol)
    return grad, fd


def test_model_gradient_object():
    model, data, _ = _model_scene(np.random.default_rng(22))
    real = [v for v in model.object_representation.trainable_weights if "real" in v.name][0]
    _check_gradient(model, data, real, (9, 12), step=1e-2)
    imag = [v for v in model.object_representation.trainable_weights if "imag" in v.name][0]
    _check_gradient(model, data, imag, (14, 10), step=1e-2)


@pytest.mark.parametrize("probe_shape", [(16, 16), (15, 17)])
def test_model_gradient_probe(probe_shape):
    model, data, _ = _model_scene(np.random.default_rng(23), probe_shape=probe_shape)
    _check_gradient(model, data, model.probe_real, (0, 7, 8), step=1e-2)
    _check_gradient(model, data, model.probe_imag, (1, 6, 10), step=1e-2)


@pytest.mark.parametrize("probe_shape", [(16, 16), (15, 17)])
def test_model_gradient_positions(probe_shape):
    model, data, positions = _model_scene(np.random.default_rng(24), probe_shape=probe_shape)
    assert model._subpixel_now  # fractional positions: the Fourier shift path is used
    _check_gradient(model, data, model.position_corrections, (1, 0), step=1e-2)
    _check_gradient(model, data, model.position_corrections, (2, 1), step=1e-2)


@pytest.mark.parametrize("geometry", [XRAY_16, OPTICAL_16])
def test_model_gradient_distance(geometry):
    near = NearFieldGeometry(geometry["wavelength"], (geometry["pixel"], geometry["pixel"]),
                             geometry["distance"])
    model, data, _ = _model_scene(np.random.default_rng(25), near=near)
    # data from a different object *and* a 5% different distance
    model.log_distance_scale.assign(0.05)
    _check_gradient(model, data, model.log_distance_scale, (), step=1e-3)


@pytest.mark.parametrize("geometry", [XRAY_16, OPTICAL_16])
def test_model_gradient_distance_with_copropagation(geometry):
    """With the distance refined in parallel-beam near field, object and probe are propagated by
    z0 - z (``copropagate``): identity at z = z0, and the gradient still matches finite
    differences."""
    near = NearFieldGeometry(geometry["wavelength"], (geometry["pixel"], geometry["pixel"]),
                             geometry["distance"])
    model, data, _ = _model_scene(np.random.default_rng(25), near=near)
    before = model(np.arange(model.num_patterns)).numpy()
    model.compile(refine=("object", "distance"))
    assert model._copropagating
    np.testing.assert_allclose(model(np.arange(model.num_patterns)).numpy(), before,
                               rtol=1e-4, atol=1e-4 * before.max())
    model.log_distance_scale.assign(0.05)
    _check_gradient(model, data, model.log_distance_scale, (), step=1e-3)


def test_copropagation_absorbs_most_of_a_distance_change():
    """Changing z with object and probe co-propagated by z0 - z changes the predicted patterns
    far less than changing z alone: the coupled direction follows the valley of the loss."""
    rng = np.random.default_rng(41)
    obj = low_pass(rng.normal(size=(128, 128)) + 1j * rng.normal(size=(128, 128)), 8)
    obj = obj / np.abs(obj).max() * 0.3 + 1.0
    # a smooth-edged pinhole image (sharp edges diffract: that part identifies the distance)
    probe = np.abs(circular_aperture((64, 64), 40, 4.0))[None].astype(np.complex64)
    positions = np.array([[4.0, 6.0], [20.0, 30.0], [40.0, 12.0], [33.0, 41.0]])
    near = NearFieldGeometry(561e-9, (13.8e-6, 13.8e-6), 0.065)
    changes = {}
    for coupled in (False, True):
        model = PtychoModel(PixelObject(obj.shape, initial=obj.astype(np.complex64)), probe,
                            positions, near_field=near, copropagate=coupled)
        model.compile(refine=("object", "probe", "distance"))
        reference = model(np.arange(4)).numpy()
        model.log_distance_scale.assign(0.05)
        changes[coupled] = np.linalg.norm(model(np.arange(4)).numpy() - reference)
    assert changes[True] < 0.3 * changes[False], changes  # measured 0.18


def test_model_gradient_farfield_distance():
    """Far field: the distance z sets the object pixel lambda z / (N dx), so the positions in
    pixels scale as z0 / z about their centroid; the gradient reaches z through that scale."""
    model, data, positions = _model_scene(np.random.default_rng(27), farfield_distance_m=0.5)
    model.log_distance_scale.assign(0.03)
    # the scale acts on the positions as documented: p = c + (p0 - c) z0 / z
    centroid = positions.mean(axis=0)
    expected = centroid + (positions - centroid) * np.exp(-0.03)
    np.testing.assert_allclose(model.get_positions(), expected, atol=1e-5)
    np.testing.assert_allclose(model.get_distance(), 0.5 * np.exp(0.03), rtol=1e-6)
    _check_gradient(model, data, model.log_distance_scale, (), step=1e-3)


def test_near_field_detector_is_fixed_to_the_probe_for_subpixel_positions():
    """Moving the scan by 0.5 px equals moving the object by -0.5 px (probe, detector fixed)."""
    rng = np.random.default_rng(33)
    obj = low_pass(rng.normal(size=(64, 64)) + 1j * rng.normal(size=(64, 64)), 6) + 3.0
    yy, xx = np.mgrid[:32, :32] - 15.5
    probe = np.exp(-(yy ** 2 + xx ** 2) / (2 * 4.0 ** 2))[None].astype(complex)  # compact
    transfer = angular_spectrum_transfer((32, 32), 1e-6, 561e-9, 2e-4)
    moved_scan = forward_intensities(c64(obj), c64(probe), tf.constant([[10.5, 12.5]], tf.float32),
                                     transfer).numpy()
    moved_object = np.fft.ifft2(np.fft.fft2(obj) * np.exp(
        2j * np.pi * (0.5 * np.fft.fftfreq(64)[:, None] + 0.5 * np.fft.fftfreq(64)[None, :])))
    reference = forward_intensities(c64(moved_object), c64(probe), tf.constant([[10.0, 12.0]], tf.float32),
                                    transfer).numpy()
    np.testing.assert_allclose(moved_scan, reference, rtol=0, atol=2e-3 * reference.max())


def test_execution_plan_is_chosen_once_from_geometry_and_device():
    """``compile(jit_compile="auto")``'s plan: XLA pieces for large even far-field windows on a
    CPU (the fused path), one XLA program otherwise; an explicit choice is kept."""
    from adptycho.accel import choose_plan

    on_cpu = not tf.config.list_logical_devices("GPU")
    plan, jit = choose_plan(True, (128, 128), "auto")
    assert plan.pieces == on_cpu and jit == (not on_cpu) and plan.use_fused((128, 128))
    for far, shape, fused in ((False, (128, 128), True), (True, (64, 64), True),
                              (True, (127, 128), True), (True, (128, 128), False)):
        plan, jit = choose_plan(far, shape, "auto", fused=fused)
        assert plan.xla and jit and not plan.pieces, (far, shape, fused)
    plan, jit = choose_plan(True, (128, 128), False)
    assert not (plan.xla or plan.pieces or jit or plan.use_fused((128, 128)))
    assert not plan.window_loops((128, 128))
