"""The parts a ``PtychoModel`` is assembled from: the probe (``probe``), the scan geometry
(``scan_geometry``), the NaN guard (``guard``) and the per-epoch callbacks and metric of a fit
(``fit_helpers``), the Keras evaluation plumbing (``keras_steps``)."""
