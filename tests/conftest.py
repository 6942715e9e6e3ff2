"""Shared fixtures: one local Ray runtime per session, bound to 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tuner.ray_runtime import apply_loopback_environment

apply_loopback_environment()
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A real embedded Ray (2 CPUs, loopback only), started once and stopped at the end."""
    import ray

    from tuner.ray_runtime import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()
