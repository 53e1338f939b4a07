"""One style for the experiment figures (issue 23, item 4).

Every PNG under ``experiments/`` is drawn through these helpers, so that all figures share:

* constrained layout (titles and colour-bar labels are never clipped), one font size family;
* image panels with a labelled colour bar (quantity and unit) and labelled axes with units
  (``x (px)`` or ``x (um)`` from a pixel size);
* small quantities on a scaled axis that says its scale: ``MSE (x1e-3)``.

Usage::

    from figstyle import figure, image_panel, save, scaled_label

    fig, axes = figure(1, 2, panel=(3.2, 3.0))
    image_panel(axes[0], amplitude, "amplitude", "object amplitude", pixel_size_m=1e-6)
    factor, label = scaled_label("MSE", values)           # ("MSE (x1e-3)", 1e3) ...
    save(fig, "experiments/x/figure.png")

Only matplotlib and numpy are imported (no TensorFlow): figures redraw from saved files in a
second or two.
"""

from __future__ import annotations

import math
import os

import numpy as np

RC = {
    "figure.constrained_layout.use": True,
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7,
    "legend.framealpha": 0.8,
    "figure.titlesize": 10,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "image.origin": "upper",
    "image.interpolation": "nearest",
    "lines.markersize": 4,
}


def pyplot():
    """matplotlib.pyplot on the Agg backend with the house rcParams applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(RC)
    return plt


def figure(nrows: int = 1, ncols: int = 1, panel=(3.4, 3.0), title: str = None, **kwargs):
    """A figure of ``nrows`` x ``ncols`` panels, each ``panel`` = (width, height) inches, in
    constrained layout. Returns (fig, axes) with ``axes`` a 2-D array unless 1 x 1 (then one
    Axes) or one row/column (then 1-D)."""
    plt = pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows),
                             layout="constrained", **kwargs)
    if title:
        fig.suptitle(title)
    return fig, axes


def scale_exponent(values) -> int:
    """Power of ten, a multiple of 3, that brings the largest finite |value| into [1, 1000)
    (0 when the values are already in that range or none is finite and non-zero)."""
    values = np.abs(np.asarray(values, np.float64))
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return 0
    exponent = 3 * math.floor(math.log10(values.max()) / 3)
    return 0 if 0 <= exponent < 3 else exponent


def scaled_label(quantity: str, values, unit: str = "") -> tuple:
    """(label, factor): multiply the values by ``factor`` and label the axis ``label``, e.g.
    ``("phase MSE (x1e-3 rad^2)", 1000.0)``. No scale is written when none is needed."""
    exponent = scale_exponent(values)
    scale = f"x1e{exponent}" if exponent else ""
    inside = " ".join(p for p in (scale, unit) if p)
    label = f"{quantity} ({inside})" if inside else quantity
    return label, 10.0 ** -exponent


def extent_of(shape, pixel_size_m=None, unit: str = "um", origin_px=(0.0, 0.0)):
    """imshow extent (left, right, bottom, top) and the axis unit for an image of ``shape``
    (rows, cols): pixels when ``pixel_size_m`` is None, else ``unit`` (``um``, ``mm`` or
    ``nm``); ``origin_px`` (y, x) is the pixel coordinate of the image's first pixel."""
    rows, cols = shape[:2]
    y0, x0 = origin_px
    if pixel_size_m is None:
        return (x0 - 0.5, x0 + cols - 0.5, y0 + rows - 0.5, y0 - 0.5), "px"
    per = {"nm": 1e-9, "um": 1e-6, "mm": 1e-3}[unit]
    sy, sx = (pixel_size_m, pixel_size_m) if np.ndim(pixel_size_m) == 0 else pixel_size_m
    sy, sx = sy / per, sx / per
    return ((x0 - 0.5) * sx, (x0 + cols - 0.5) * sx, (y0 + rows - 0.5) * sy,
            (y0 - 0.5) * sy), "\u00b5m" if unit == "um" else unit


def image_panel(ax, image, colour_label: str, title: str = None, cmap: str = "gray",
                vmin=None, vmax=None, pixel_size_m=None, unit: str = "um", origin_px=(0, 0),
                axes_labels: bool = True, colorbar: bool = True, **imshow):
    """Draw a real 2-D ``image`` on ``ax`` with a colour bar labelled ``colour_label`` (say the
    quantity and unit: ``"amplitude"``, ``"phase (rad)"``), axes in px or physical units, and
    ``title``. Returns the AxesImage."""
    extent, axis_unit = extent_of(np.shape(image), pixel_size_m, unit, origin_px)
    im = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, **imshow)
    if title:
        ax.set_title(title)
    if axes_labels:
        ax.set_xlabel(f"x ({axis_unit})")
        ax.set_ylabel(f"y ({axis_unit})")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if colorbar:
        colour_bar(ax, im, colour_label)
    return im


def colour_bar(ax, mappable, label: str, shrink: float = 0.85, **kwargs):
    """A colour bar beside ``ax`` (or beside a list/array of axes sharing one scale) with
    ``label``."""
    fig = mappable.figure if hasattr(mappable, "figure") and mappable.figure else \
        np.ravel(ax)[0].figure
    bar = fig.colorbar(mappable, ax=ax, shrink=shrink, **kwargs)
    bar.set_label(label)
    return bar


def robust_limits(image, percentiles=(1, 99)):
    """(low, high) colour limits from percentiles of the finite values of ``image``."""
    values = np.asarray(image, np.float64)
    values = values[np.isfinite(values)]
    low, high = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
    return float(low), float(high if high > low else low + 1e-12)


def positions_panel(ax, sets, unit: str = "px", title: str = None):
    """Scatter of scan positions: ``sets`` is a list of ((N, 2) (y, x) array, label, style)
    tuples; y points down as in the images."""
    for positions, label, style in sets:
        positions = np.asarray(positions)
        ax.plot(positions[:, 1], positions[:, 0], style, label=label)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    if title:
        ax.set_title(title)
    ax.legend(loc="best")


def save(fig, path: str, dpi: int = None) -> str:
    """Write ``fig`` to ``path`` (PNG, parent folders made; written to a temporary name then
    renamed, so an interrupted draw never leaves half a figure) and close it."""
    plt = pyplot()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=dpi or RC["savefig.dpi"], format="png")
    os.replace(tmp, path)
    plt.close(fig)
    return path
