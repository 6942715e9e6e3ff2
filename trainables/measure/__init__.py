"""The noise-scale instrument: two-batch norms, curvature (GᵀHG, tr(HΣ)), the meter."""
