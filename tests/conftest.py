"""Shared fixtures: one local Ray runtime per session, bound to 127.0.0.1, and an S3
server (moto) on 127.0.0.1 for storage URIs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import torch
from _helpers import S3Server, free_port

from tuner.runtime.ray_runtime import keep_local_ray_on_loopback

keep_local_ray_on_loopback()  # before any test module imports Ray
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

    from tuner.runtime.ray_runtime import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 API (moto's server, in a thread of this process) on a free loopback
    port; the dummy AWS credentials are in this process's environment while it runs."""
    import boto3
    from moto.server import ThreadedMotoServer

    endpoint = f"127.0.0.1:{free_port()}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata service
        "AWS_CONFIG_FILE": os.devnull,  # nor read the user's profiles
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
    host, port = endpoint.split(":")
    server = ThreadedMotoServer(ip_address=host, port=int(port), verbose=False)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket="noisetune")
            yield S3Server(endpoint, "noisetune", env)
    finally:
        server.stop()
