"""`noisetune submit/status/logs/stop/list` against a real Ray head on 127.0.0.1.

The head is started by this module (tests/_helpers.py `ray_head`) with `ray start
--head --block`, its own free ports, a private temp dir, the dashboard on 127.0.0.1 and
token auth with a throwaway token (DESIGN.md §4, research/ray.md §3). It is torn down by
signalling exactly the processes it started: the `ray start` process and its
descendants, and anything whose command line names the private temp dir (never
`ray stop`).
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _helpers import LOOPBACK, Head, free_port, proc_table, ray_head, run_noisetune

from tuner.cluster import jobs

ROOT = Path(__file__).resolve().parents[1]

WORKLOAD = '''\
"""A tiny regression that exists only in the submitted directory."""
import torch
from torch.utils.data import TensorDataset

from trainables import Workload


def build(args):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=gen)
    y = x @ torch.ones(4, 1) + 0.1 * torch.randn(512, 1, generator=gen)
    model = torch.nn.Linear(4, 1)

    def loss(model, batch):
        xb, yb = batch
        return torch.nn.functional.mse_loss(model(xb), yb)

    return Workload(model=model, train_data=TensorDataset(x, y), loss=loss,
                    eval_data=TensorDataset(x, y))
'''


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    """A real Ray head (2 CPUs) bound to 127.0.0.1 with token auth, stopped at the end.
    Its jobs import this checkout's code, not an installed copy."""
    with ray_head(num_cpus=2, env={"PYTHONPATH": str(ROOT)}) as started:
        yield started


def noisetune(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_noisetune(*args, cwd=cwd, env=env, timeout=timeout)


def client_env(token: str | None, home: Path) -> dict[str, str]:
    """A user's shell: no RAY_* settings (RAY_AUTH_MODE unset), maybe a token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH"))}
    env["HOME"] = str(home)  # no ~/.ray/auth_token of the real user
    if token:
        env["RAY_AUTH_TOKEN"] = token
    return env


def write_project(path: Path, storage: Path, **overrides: object) -> Path:
    """A directory with the workload module and spec.yaml, as a user would submit."""
    path.mkdir(parents=True)
    (path / "my_wl.py").write_text(WORKLOAD)
    spec: dict[str, object] = {
        "name": "tiny",
        "workload": "my_wl:build",
        "target": {"metric": "loss", "value": 0.05},
        "budget": {"max_steps": 60},
        "eval_every": 10,
        "space": {"batch_size": [16, 64], "lr": [0.1]},
        "search": {"algorithm": "grid", "max_concurrent": 2},
        "pruning": {"kind": "none"},
        "storage": str(storage),
    }
    spec.update(overrides)
    (path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (path / "runs").mkdir()
    (path / "runs" / "big.bin").write_bytes(b"\0" * 1024)  # must not travel
    return path / "spec.yaml"


# --- without a cluster -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:8265", "not a dashboard URL"),
        ("ftp://127.0.0.1:8265", "not a dashboard URL"),
        ("http://127.0.0.1:notaport", "not a dashboard URL"),
        ("http://", "not a dashboard URL"),
    ],
)
def test_malformed_address_exits_2(tmp_path: Path, address: str, message: str) -> None:
    spec = write_project(tmp_path / "proj", tmp_path / "storage")
    result = noisetune(
        "submit", str(spec), "--address", address, cwd=spec.parent, env=client_env(None, tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_input_exits_2_before_any_request(tmp_path: Path) -> None:
    """A closed port: had anything been sent, the exit code would be 1."""
    closed = f"http://{LOOPBACK}:{free_port()}"
    env = client_env("token", tmp_path)
    spec = write_project(tmp_path / "proj", tmp_path / "storage", extra_key=1)
    result = noisetune("submit", str(spec), "--address", closed, cwd=spec.parent, env=env)
    assert result.returncode == 2
    assert "extra_key" in result.stderr and "Traceback" not in result.stderr

    good = write_project(tmp_path / "other", tmp_path / "storage")
    result = noisetune("submit", str(good), "--address", closed, cwd=spec.parent, env=env)
    assert result.returncode == 2
    assert "inside the working directory" in result.stderr

    result = noisetune("status", "raysubmit_x", cwd=spec.parent, env=env)
    assert result.returncode == 2
    assert "--address" in result.stderr

    result = noisetune("list", "--address", closed, cwd=spec.parent, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("noisetune: error: cannot reach the Ray dashboard")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_prepare_builds_the_entrypoint_and_excludes(tmp_path: Path) -> None:
    spec = write_project(tmp_path / "proj", tmp_path / "storage")
    (tmp_path / "proj" / "myenv").mkdir()
    (tmp_path / "proj" / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")
    submission, parsed = jobs.prepare(
        spec, storage="s3://bucket/runs", name="n1", python='"/opt/py 3/python" -X utf8',
        working_dir=tmp_path / "proj",
    )  # fmt: skip
    assert parsed.name == "tiny"
    assert submission.entrypoint == (
        "'/opt/py 3/python' -X utf8 -m tuner run spec.yaml --storage s3://bucket/runs --name n1 "
        "--address auto --no-build"
    )
    excludes = submission.runtime_env["excludes"]
    assert {"/runs/", ".git/", "/.venv/", "/myenv/"} <= set(excludes)
    assert submission.runtime_env["working_dir"] == str((tmp_path / "proj").resolve())
    assert jobs.storage_warning(parsed, None) is None
    assert "relative" in str(jobs.storage_warning(parsed, "./runs"))


def test_token_is_found_as_ray_finds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert jobs.find_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    home = jobs.Token("from-home", str(tmp_path / ".ray" / "auth_token"), default_file=True)
    assert jobs.find_token() == home  # sent to loopback addresses only (test_security.py)
    (tmp_path / "tok").write_text(" from-path ")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert jobs.find_token() == jobs.Token("from-path", f"RAY_AUTH_TOKEN_PATH={tmp_path / 'tok'}")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs.find_token() == jobs.Token("from-env", "RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(jobs.JobsInputError, match="RAY_AUTH_TOKEN_PATH"):
        jobs.find_token()


# --- against a real head ------------------------------------------------------------------------


@pytest.mark.ray
def test_submit_status_logs_list_stop_against_a_real_head(head: Head, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    spec = write_project(tmp_path / "proj", storage)
    proj = spec.parent
    env = client_env(head.token, tmp_path)
    python = sys.executable  # the head runs on this machine, from this venv
    addr = ["--address", head.url]

    submitted = noisetune("submit", "spec.yaml", *addr, "--storage", str(storage),
                          "--python", python, cwd=proj, env=env)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    assert job.startswith("raysubmit_"), submitted.stdout

    long_spec = {"budget": {"max_steps": 10**6}, "eval_every": 1000}
    spec_long = proj / "long.yaml"
    spec_long.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), **long_spec}))
    second = noisetune("submit", "long.yaml", *addr, "--storage", str(storage),
                       "--name", "long", "--python", python, cwd=proj, env=env)  # fmt: skip
    assert second.returncode == 0, second.stderr
    long_job = second.stdout.strip()

    assert jobs.wait(head.url, long_job, until=("RUNNING",), timeout_s=60, token=head.token) == (
        "RUNNING"
    )
    stopped = noisetune("stop", long_job, *addr, cwd=proj, env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "STOPPED"
    assert not [cmd for _, cmd in proc_table().values() if "long.yaml" in cmd]  # driver gone

    # Without the token: refused with a clear message, nothing submitted (see list).
    refused = noisetune("submit", "spec.yaml", *addr, "--python", python, cwd=proj,
                        env=client_env(None, tmp_path))  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert "requires an auth token" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    wrong = noisetune("list", *addr, cwd=proj, env=client_env("not-the-token", tmp_path))
    assert wrong.returncode == 1 and "rejected the auth token" in wrong.stderr, wrong.stderr

    # An interpreter without noisetune on the head (the base Python, isolated from the
    # venv and PYTHONPATH): the job fails, and `status` says what to change.
    bare = f"{shlex.quote(sys._base_executable)} -I"
    without = noisetune("submit", "spec.yaml", *addr, "--storage", str(storage),
                        "--name", "bare", "--python", bare, cwd=proj, env=env)  # fmt: skip
    assert without.returncode == 0, without.stderr
    bare_job = without.stdout.strip()
    assert jobs.wait(head.url, bare_job, timeout_s=60, token=head.token) == "FAILED"
    bare_status = noisetune("status", bare_job, *addr, cwd=proj, env=env)
    assert bare_status.stdout.strip() == "FAILED", bare_status.stderr
    assert jobs.NO_NOISETUNE_HINT in bare_status.stderr, bare_status.stderr

    final = jobs.wait(head.url, job, timeout_s=180, token=head.token)
    log = noisetune("logs", job, *addr, cwd=proj, env=env)
    assert final == "SUCCEEDED", log.stdout[-3000:]

    status = noisetune("status", job, cwd=proj, env={**env, "RAY_ADDRESS": head.url})
    assert (status.returncode, status.stdout.strip()) == (0, "SUCCEEDED"), status.stderr
    assert log.returncode == 0 and "Results:" in log.stdout, log.stderr
    followed = noisetune("logs", job, "--follow", *addr, cwd=proj, env=env)
    assert followed.returncode == 0 and "Results:" in followed.stdout, followed.stderr
    assert f"job {job}: SUCCEEDED" in followed.stderr
    listed = noisetune("list", *addr, cwd=proj, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[2:]}
    assert rows == {job: "SUCCEEDED", long_job: "STOPPED", bare_job: "FAILED"}, listed.stdout

    followed = noisetune("logs", long_job, "--follow", *addr, cwd=proj, env=env)
    assert followed.returncode == 1 and f"job {long_job}: STOPPED" in followed.stderr

    unknown = noisetune("status", "raysubmit_nope", *addr, cwd=proj, env=env)
    assert unknown.returncode == 2 and "no job raysubmit_nope" in unknown.stderr, unknown.stderr

    unpacked = head.temp_dir / "ray" / "session_latest" / "runtime_resources"
    assert list(unpacked.glob("working_dir_files/*/my_wl.py"))  # the workload travelled
    assert not list(unpacked.glob("**/big.bin"))  # runs/ did not

    run_dir = storage / "tiny"
    assert (run_dir / "results" / "trials.csv").is_file()
    exported = noisetune("export", str(run_dir), "--format", "csv", cwd=proj, env=env)
    assert exported.returncode == 0, exported.stderr
    trials = pd.read_csv(io.StringIO(exported.stdout))
    assert sorted(trials["batch_size"]) == [16, 64]
