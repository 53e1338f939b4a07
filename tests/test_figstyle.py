"""The experiments' figure style (experiments/figstyle.py) and the plot-only entry points.

* ``scaled_label`` writes the scale of small quantities into the axis label (``MSE (x1e-3)``)
  and the scaled values are the originals times the factor.
* ``image_panel`` gives every image a colour bar with its label and axes with units (px, or
  micrometres from a pixel size, the extent matching the pixel size).
* The plot-only entry points redraw figures from saved results files alone (no TensorFlow
  fit): each writes a PNG into a copy of the saved files.
* The noise study's covering scan (``--cover-digit``) illuminates the whole digit.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import figstyle  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_matplotlib_settings():
    """figstyle applies the experiments' rcParams (constrained layout) globally, as a script
    should; here they must not leak into the library's figures in later tests (a colour bar
    drawn under constrained layout makes the library's tight_layout raise)."""
    import matplotlib

    with matplotlib.rc_context():
        yield


@pytest.mark.parametrize("values, label, factor", [
    ([0.38e-3, 6.32e-3], "MSE (x1e-3)", 1e3),
    ([0.5, 12.0], "MSE", 1.0),
    ([2.5e4, 1.2e5], "MSE (x1e3)", 1e-3),
    ([3e-7], "MSE (x1e-9)", 1e9),
])
def test_scaled_label_says_the_scale(values, label, factor):
    got_label, got_factor = figstyle.scaled_label("MSE", values)
    assert got_label == label
    assert got_factor == pytest.approx(factor)
    scaled = np.asarray(values) * got_factor
    assert 1 <= np.max(np.abs(scaled)) < 1000


def test_scaled_label_with_a_unit():
    assert figstyle.scaled_label("phase MSE", [2e-3], "rad^2")[0] == "phase MSE (x1e-3 rad^2)"
    assert figstyle.scaled_label("time", [5.0], "s")[0] == "time (s)"


def test_image_panel_has_a_labelled_colour_bar_and_units(tmp_path):
    fig, axes = figstyle.figure(1, 2)
    image = np.arange(20.0).reshape(4, 5)
    figstyle.image_panel(axes[0], image, "amplitude", "in px")
    figstyle.image_panel(axes[1], image, "phase (rad)", "in um", pixel_size_m=2e-6)
    assert axes[0].get_xlabel() == "x (px)" and axes[0].get_ylabel() == "y (px)"
    assert axes[1].get_xlabel() == "x (\u00b5m)"
    left, right, bottom, top = axes[1].images[0].get_extent()
    assert right - left == pytest.approx(5 * 2.0) and bottom - top == pytest.approx(4 * 2.0)
    bars = [ax for ax in fig.axes if ax not in axes]
    assert sorted(bar.get_ylabel() for bar in bars) == ["amplitude", "phase (rad)"]
    path = figstyle.save(fig, str(tmp_path / "sub" / "f.png"))
    assert os.path.getsize(path) > 1000 and not os.path.exists(path + ".tmp.png")


PLOT_ONLY = [
    ("experiments/latent_landscapes.py", "experiments/latent_landscapes",
     ["--plot-only", "--out-dir", "{out}"], "landscapes.png"),
    ("experiments/calibration_petra.py", "experiments/calibration_petra",
     ["--plot-only", "--out-dir", "{out}"], "z1_search.png"),
    ("experiments/effective_rank.py", "experiments/effective_rank",
     ["--plot-only", "--out-dir", "{out}"], "singular_values.png"),
    ("experiments/streaming_memory.py", "experiments/streaming_memory",
     ["--plot-only", "--out-dir", "{out}"], "streaming_memory.png"),
]


def _script(relpath):
    import importlib.util

    name = "_plot_only_" + os.path.basename(relpath)[:-3]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, folder, args, png", PLOT_ONLY)
def test_plot_only_redraws_from_saved_files(tmp_path, script, folder, args, png):
    out = tmp_path / "out"
    shutil.copytree(os.path.join(ROOT, folder), out,
                    ignore=shutil.ignore_patterns("*.png", "*.h5", "ae-mnist", "irmae-*"))
    assert not (out / png).exists()
    modules_before = set(sys.modules)
    _script(script).main([a.format(out=out) for a in args])
    assert (out / png).stat().st_size > 5000
    if "tensorflow" not in modules_before:
        assert "tensorflow" not in sys.modules  # drawn from the files, nothing fitted


def test_oversampling_table_figure_redraws_from_its_arrays(tmp_path, monkeypatch):
    """The table figures of experiments/oversampling.py (and ptychogan_oversampling) are drawn
    from the .npz they save: one colour bar labelled with the unit, the MSE unit in the title."""
    module = _script("experiments/oversampling.py")
    phases = np.random.default_rng(0).uniform(0, np.pi, (3, 240, 240)).astype(np.float16)
    arrays = tmp_path / "table9.npz"
    np.savez(arrays, phases=phases, titles=np.array(["truth", "w=20 0.38", "ePIE 6.32"]),
             ncols=2)
    drawn = []
    real_save = figstyle.save
    monkeypatch.setattr(figstyle, "save", lambda fig, path: drawn.append(fig) or
                        real_save(fig, path))
    module.draw_panels(str(arrays), str(tmp_path / "table9.png"))
    assert (tmp_path / "table9.png").stat().st_size > 5000
    (fig,) = drawn
    assert "x1e-3" in fig._suptitle.get_text()
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["truth", "w=20 0.38", "ePIE 6.32"]
    assert [ax.get_ylabel() for ax in fig.axes if not ax.images and ax.get_ylabel()] == \
        ["phase (rad)"]  # one colour bar, labelled
    assert fig.axes[0].get_ylabel() == "y (px)"


def test_cover_digit_scan_illuminates_the_whole_digit():
    """noise_robustness --cover-digit (issue 23, Seifert (a)): its scan illuminates (>= 30 % of
    the peak) at least 99 % of the digit's square; the study's default scan about half."""
    from adptycho.analysis import illuminated_region

    module = _script("experiments/noise_robustness.py")
    fractions = []
    for geometry in (dict(), dict(grid=module.COVER["grid"], region=module.COVER["region"],
                                  num_positions=module.COVER["positions"])):
        truth, probe, positions, _ = module.setup(**geometry)
        y0, x0, h, w = geometry.get("region", module.REGION)
        assert np.abs(truth[y0:y0 + h, x0:x0 + w]).sum() == pytest.approx(
            np.abs(truth).sum())  # the whole digit is in its square
        mask = illuminated_region(positions, probe, truth.shape, 0.3)
        fractions.append(mask[y0:y0 + h, x0:x0 + w].mean())
    assert fractions[0] < 0.6 and fractions[1] >= 0.99
