"""Scan patterns, probes, object grids and units."""

from adptycho.geometry.grids import (ObjectGrid, check_positions_inside, cone_beam_geometry,
                                     farfield_pixel_size_m, illumination_map, object_grid)
from adptycho.geometry.probes import (circular_aperture, defocused_aperture, gaussian_probe,
                                      normalize_probe_power)
from adptycho.geometry.scans import (area_overlap, fermat_spacing_for_overlap, fermat_spiral_scan,
                                     overlap_to_step, raster_scan, step_to_overlap)

__all__ = [
    "ObjectGrid", "check_positions_inside", "cone_beam_geometry", "farfield_pixel_size_m",
    "illumination_map", "object_grid", "circular_aperture", "defocused_aperture",
    "gaussian_probe", "normalize_probe_power", "area_overlap", "fermat_spacing_for_overlap",
    "fermat_spiral_scan", "overlap_to_step", "raster_scan", "step_to_overlap",
]
