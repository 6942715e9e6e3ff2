"""Sweeps on a Ray cluster: Ray Jobs submission, status, logs and results."""
