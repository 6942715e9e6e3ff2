"""What runs on the workers: the training loop, noise-scale capture, built-in workloads."""

from trainables.workload import Workload, WorkloadError, build_workload, resolve_workload

__all__ = ["Workload", "WorkloadError", "build_workload", "resolve_workload"]
