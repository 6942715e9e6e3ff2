"""Helpers shared by test modules: gloo worker processes and `noisetune` subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server on 127.0.0.1 with one bucket, and what a client needs for it."""

    endpoint: str  # 127.0.0.1:PORT
    bucket: str
    env: dict[str, str]  # dummy credentials; a process that talks to the server needs them

    def uri(self, path: str) -> str:
        """s3://BUCKET/PATH with the query parameters that point pyarrow at the server."""
        return f"s3://{self.bucket}/{path}?endpoint_override={self.endpoint}&scheme=http"


def run_gloo_workers(target: Callable[..., None], world: int, *args: Any) -> list[Any]:
    """Start `world` spawned processes running target(rank, world, port, *args, queue),
    collect what each puts on the queue, and check they all exit cleanly."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [
        context.Process(target=target, args=(rank, world, port, *args, queue))
        for rank in range(world)
    ]
    for worker in workers:
        worker.start()
    outputs = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return outputs


def run_noisetune(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m tuner ARGS` as a user runs it, the project importable."""
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else {**os.environ, "PYTHONPATH": str(ROOT)},
    )


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """A 6-5-3 tanh MLP with weights drawn from its own generator."""
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model


def tiny_batch(size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 6, generator=generator), torch.randn(size, 3, generator=generator)


def tiny_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()
