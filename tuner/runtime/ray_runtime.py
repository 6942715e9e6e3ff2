"""Starting or joining Ray for the CLI: an embedded instance bound to 127.0.0.1 by default.

Only tuner.cli (and the test fixtures) call these; library code assumes Ray is running.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

# Ray Train's controller polls workers this often; every report waits for a poll, and
# the 2 s default makes a 20-report trial take ~40 s (DESIGN.md §4).
TRAIN_HEALTH_CHECK_S = "0.1"


LOOPBACK = "127.0.0.1"
# Ray reads this once, when `ray` is first imported: with "0" a local Ray takes
# 127.0.0.1 as its node address and every process it starts listens there; otherwise it
# replaces a loopback address by the machine's own and listens on every interface
# (DESIGN.md §4, measured with `ss -ltnp`). Its processes inherit it from this one.
LOOPBACK_ENV_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class LoopbackError(RuntimeError):
    """A local Ray that would not be bound to 127.0.0.1."""


def keep_local_ray_on_loopback() -> None:
    """Set what keeps a local Ray on 127.0.0.1, whatever the environment held (a user's
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 included), and drop RAY_ADDRESS (an embedded Ray
    never joins another cluster). Must run before `ray` is imported in this process."""
    os.environ[LOOPBACK_ENV_VAR] = "0"
    os.environ.pop("RAY_ADDRESS", None)


def _ray_would_leave_loopback() -> bool:
    """Whether this process imported Ray before `keep_local_ray_on_loopback` ran."""
    constants = sys.modules.get("ray._private.ray_constants")
    return bool(getattr(constants, "ENABLE_RAY_CLUSTER", False))


def worker_env_vars(local_temp_dir: str | None = None) -> dict[str, str]:
    """Environment of every Ray worker process: of an embedded Ray whose temp dir is
    `local_temp_dir`, or (None) a cluster's."""
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": TRAIN_HEALTH_CHECK_S}
    if local_temp_dir is not None:
        # Nothing preempts one machine's processes: Ray Train's preemption watcher, an
        # actor process started for every multi-worker trial, has nothing to watch there.
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
        # Where a worker looks for "the" local Ray when it uses the State API
        # (`bootstrap_file`), as Ray Train's placement-group cleaner does.
        env["RAY_TMPDIR"] = local_temp_dir
    return env


def bootstrap_file(temp_dir: str) -> Path:
    """The file a process whose RAY_TMPDIR is `temp_dir` reads the address of its local
    Ray from. Ray Train frees a stopped multi-worker trial's placement group from a
    detached cleaner that finds its cluster through the State API: with no such file and
    two Rays on the machine (two sweeps, a sweep beside the tests) it finds both, gives
    up, and the group's CPUs stay reserved; the next trial's workers never start."""
    return Path(temp_dir) / "ray" / "ray_current_cluster"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    verbose: bool = False,
) -> Any:
    """Start an embedded Ray bound to 127.0.0.1, or connect to the cluster at `address`.

    For the embedded Ray, LoopbackError (before anything starts) when Ray was imported
    before the loopback environment was set, and after the start when its node address
    is not 127.0.0.1 (the Ray it started is shut down again)."""
    if not address:
        keep_local_ray_on_loopback()
        if _ray_would_leave_loopback():
            raise LoopbackError(
                "Ray was imported before noisetune could keep a local Ray on 127.0.0.1: "
                f"set {LOOPBACK_ENV_VAR}=0 before importing ray"
            )
    import ray

    common: dict[str, Any] = {
        "logging_level": "INFO" if verbose else "ERROR",
        "log_to_driver": verbose,
    }
    if address:
        return ray.init(address=address, runtime_env={"env_vars": worker_env_vars()}, **common)
    temp_dir = tempfile.mkdtemp(prefix="noisetune-ray-")
    context = ray.init(
        address="local",  # never attach to another cluster found under /tmp/ray
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=True,  # the State API it serves frees stopped Train trials' PGs
        dashboard_host=LOOPBACK,
        dashboard_port=free_loopback_port(),
        _temp_dir=temp_dir,
        runtime_env={"env_vars": worker_env_vars(temp_dir)},
        **common,
    )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise LoopbackError(f"the local Ray took node address {node_ip}, not {LOOPBACK}")
    bootstrap = bootstrap_file(temp_dir)
    bootstrap.parent.mkdir(exist_ok=True)
    bootstrap.write_text(ray.get_runtime_context().gcs_address)
    return context
