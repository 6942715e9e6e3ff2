"""Starting or joining Ray for the CLI: an embedded instance bound to 127.0.0.1 by default.

Only tuner.cli (and the test fixtures) call these; library code assumes Ray is running.
"""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any

# Ray Train's controller polls workers this often; every report waits for a poll, and
# the 2 s default makes a 20-report trial take ~40 s (DESIGN.md §4).
TRAIN_HEALTH_CHECK_S = "0.1"


def loopback_environment() -> dict[str, str]:
    """Process environment that keeps a local Ray on 127.0.0.1 (DESIGN.md §4).

    Must be in the environment before Ray starts its processes; the CLI applies it
    before importing ray.
    """
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def worker_env_vars(local: bool = False) -> dict[str, str]:
    """Environment of every Ray worker process: of a `local` embedded Ray, or a cluster's."""
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": TRAIN_HEALTH_CHECK_S}
    if local:
        # Nothing preempts one machine's processes: Ray Train's preemption watcher, an
        # actor process started for every multi-worker trial, has nothing to watch there.
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return env


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    verbose: bool = False,
) -> Any:
    """Start an embedded Ray bound to loopback, or connect to `address`."""
    import ray

    common: dict[str, Any] = {
        "logging_level": "INFO" if verbose else "ERROR",
        "log_to_driver": verbose,
    }
    if address:
        return ray.init(address=address, runtime_env={"env_vars": worker_env_vars()}, **common)
    return ray.init(
        address="local",  # never attach to another cluster found under /tmp/ray
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=True,  # the State API it serves frees stopped Train trials' PGs
        dashboard_host="127.0.0.1",
        dashboard_port=free_loopback_port(),
        _temp_dir=tempfile.mkdtemp(prefix="noisetune-ray-"),
        runtime_env={"env_vars": worker_env_vars(local=True)},
        **common,
    )


def apply_loopback_environment() -> None:
    for name, value in loopback_environment().items():
        os.environ.setdefault(name, value)
