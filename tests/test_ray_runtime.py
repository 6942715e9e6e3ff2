"""The environment noisetune gives Ray's worker processes (no Ray started here)."""

from __future__ import annotations

from tuner.runtime.ray_runtime import worker_env_vars


def test_train_polls_fast_everywhere_and_skips_the_preemption_watcher_locally() -> None:
    local, cluster = worker_env_vars("/tmp/noisetune-ray-x"), worker_env_vars()
    interval = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    assert local[interval] == cluster[interval] == "0.1"
    assert local["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in cluster  # a cluster's nodes may go
    # A local Ray's workers find it, not another one on the machine, by its temp dir.
    assert local["RAY_TMPDIR"] == "/tmp/noisetune-ray-x"
    assert "RAY_TMPDIR" not in cluster
