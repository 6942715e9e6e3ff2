"""A sweep submitted with `noisetune submit` to a Ray cluster of two nodes.

Both nodes run on this machine, on 127.0.0.1, each with its own ports and temp dir and
one CPU (tests/_helpers.py `ray_head` and `ray_worker_node`; token auth). A trial needs
one CPU and two run at a time, so they must spread over both nodes. The run goes to an
s3:// URI (moto on 127.0.0.1), the storage every node shares, as on a real cluster.
Which node ran a trial: its reports carry the pid of its Tune actor, and the State API
knows the node of every actor. The module stops exactly the processes it started.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _helpers import ROOT, Head, S3Server, alive_nodes, ray_head, ray_worker_node, run_noisetune

from tuner.cluster import jobs
from tuner.results.tune_state import read_trials
from tuner.runtime import storage

pytestmark = pytest.mark.ray

SPEC = {
    "name": "spread",
    "workload": "linear_regression",
    "workload_args": {"dim": 16, "noise": 0.5, "n_train": 4096},
    "target": {"metric": "loss", "value": 0.0},  # never reached: every trial runs its budget
    "budget": {"max_steps": 4000},  # a few seconds: the second trial actor is up by then
    "eval_every": 200,
    "space": {"batch_size": [64], "lr": [0.01, 0.02, 0.03, 0.04]},
    "search": {"algorithm": "grid", "max_concurrent": 2},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "stall": {"patience_steps": 0},  # slow progress is the point: run the whole budget
}


@pytest.fixture(scope="module")
def cluster(s3_server: S3Server) -> Iterator[tuple[Head, set[str]]]:
    """A head and a worker node of one CPU each; their nodes see the S3 credentials, and
    this checkout's code (not an installed copy)."""
    env = {**s3_server.env, "PYTHONPATH": str(ROOT)}
    with ray_head(num_cpus=1, env=env) as head, ray_worker_node(head, num_cpus=1) as worker:
        head_id = {node["node_id"] for node in alive_nodes(head) if node["is_head_node"]}
        yield head, head_id | {worker}


def test_a_submitted_sweep_runs_trials_on_both_nodes(
    cluster: tuple[Head, set[str]], s3_server: S3Server, tmp_path: Path
) -> None:
    head, node_ids = cluster
    assert len(node_ids) == 2
    project = tmp_path / "project"
    project.mkdir()
    (project / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    uri = s3_server.uri("cluster")
    user = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH"))}
    env = {**user, "HOME": str(tmp_path), "RAY_AUTH_TOKEN": head.token, "PYTHONPATH": str(ROOT)}

    submitted = run_noisetune(
        "submit", "spec.yaml", "--address", head.url, "--storage", uri,
        "--python", sys.executable, cwd=project, env=env,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    final = jobs.wait(head.url, job, timeout_s=300, token=head.token)
    log = jobs.logs(head.url, job, token=head.token)
    assert final == "SUCCEEDED", log[-3000:]
    run = storage.resolve(uri).join("spread")
    assert f"Results: {run.join('results')}" in log

    with tempfile.TemporaryDirectory() as tmp:
        run.download(Path(tmp), lambda rel: "/" not in rel or rel.endswith("/result.json"))
        trials = read_trials(Path(tmp))
    assert len(trials) == 4
    actors = head.get("/api/v0/actors?limit=1000&detail=1")["data"]["result"]["result"]
    node_of_pid = {actor["pid"]: actor["node_id"] for actor in actors if actor.get("pid")}
    ran_on = {trial.trial_id: node_of_pid[trial.results[-1]["pid"]] for trial in trials}
    assert set(ran_on.values()) == node_ids, ran_on

    exported = run_noisetune(
        "export", str(run.uri), "--format", "csv", cwd=tmp_path, env={**env, **s3_server.env}
    )
    assert exported.returncode == 0, exported.stderr
    table = pd.read_csv(io.StringIO(exported.stdout))
    assert sorted(table["lr"]) == [0.01, 0.02, 0.03, 0.04]
    assert (table["status"] == "exhausted").all() and (table["steps"] == 4000).all()
