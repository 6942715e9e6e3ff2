"""What runs on the workers: the training loop, noise-scale capture, built-in workloads.

`from trainables import Workload` works; torch is imported only when it is used, so the
driver's tables and plots (which need only `trainables.keys`) load quickly.
"""

from typing import Any

__all__ = ["Workload", "WorkloadError", "build_workload", "resolve_workload"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from trainables import workload

        return getattr(workload, name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
