"""How a multi-worker trial's workers form their torch process group on one machine.

Ray Train meets its workers at a torch TCPStore, and torch binds that store's server to
every interface whatever address it is given (seen with `ss -ltnp`: `*:PORT`). When every
node of the Ray runs on 127.0.0.1 (an embedded Ray, or a test cluster on one machine),
the workers share a filesystem and meet through a torch FileStore instead: no listener
at all, and gloo's own listener takes the node address, 127.0.0.1. A cluster across
machines keeps Ray Train's TCP store (tuner's executors choose).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.torch import TorchConfig
from ray.train.torch.config import (
    _set_torch_distributed_env_vars,
    _setup_torch_process_group,
    _TorchBackend,
)

LOOPBACK = "127.0.0.1"


class FileStoreBackend(_TorchBackend):
    """Ray Train's torch backend with the process group set up through a file."""

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        assert isinstance(backend_config, FileStoreTorchConfig)  # only ever paired with it
        # A new file for every start of the worker group: a FileStore must begin empty,
        # and a group restarted after a worker died would hang on the old one's file.
        store_file = os.path.join(backend_config.store_dir, f"store-{uuid.uuid4().hex}")
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    _setup_torch_process_group,
                    backend=backend_config.backend,
                    world_rank=rank,
                    world_size=len(worker_group),
                    init_method=f"file://{store_file}",
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(len(worker_group))
            ]
        )


@dataclass
class FileStoreTorchConfig(TorchConfig):
    """TorchConfig whose workers meet at a file in `store_dir` (a directory on this
    machine that outlives the trial's worker groups). `backend` must be given."""

    store_dir: str = ""

    @property
    def backend_cls(self) -> type:
        return FileStoreBackend
