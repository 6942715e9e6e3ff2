"""Helpers shared by test modules: gloo worker processes, `noisetune` subprocesses, and
Ray nodes started with `ray start` on 127.0.0.1 (a head with token auth, worker nodes
joining it), each stopped by signalling exactly the processes it started."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
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


# --- Ray nodes started with `ray start` -------------------------------------------------------


def free_port_range(count: int) -> int:
    """The first port of `count` consecutive free loopback ports below the ephemeral range."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        try:
            socks = []
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((LOOPBACK, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of this user's processes."""
    table: dict[int, tuple[int, str]] = {}
    uid = os.getuid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        table[int(entry.name)] = (ppid, cmdline)
    return table


def processes_of(root_pid: int, marker: str) -> set[int]:
    """`root_pid`, its descendants, and every process naming `marker`, with descendants."""
    table = proc_table()
    found = {pid for pid, (_, cmd) in table.items() if marker in cmd}
    if root_pid in table:
        found.add(root_pid)
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        grew = bool(children)
        found |= children
    found.discard(os.getpid())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def terminate(pids: set[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still alive after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Head:
    url: str  # the dashboard, http://127.0.0.1:<port>
    token: str
    temp_dir: Path
    gcs_address: str  # 127.0.0.1:<port>, what `ray start --address` joins
    env: dict[str, str]  # the environment its processes run with

    def get(self, route: str) -> Any:
        """GET a dashboard route with the token; the decoded JSON."""
        request = urllib.request.Request(
            f"{self.url}{route}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def ray_env(temp_dir: Path, token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a Ray node: no RAY_* or PYTHONPATH of ours, every listener on
    127.0.0.1, token auth, plus `extra` (which its workers inherit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH"))}
    env.update(
        RAY_TMPDIR=str(temp_dir),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every listener on 127.0.0.1
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        **(extra or {}),
    )
    return env


def _node_ports(temp_dir: Path, num_cpus: int) -> dict[str, Any]:
    """What every node needs: its own ports, all on 127.0.0.1, and its own temp dir
    (`ray start` flags, or RayParams fields with - for _)."""
    worker_base = free_port_range(100)
    return {
        "node-ip-address": LOOPBACK,
        "metrics-agent-port": free_port(),  # `ray start --dashboard-agent-grpc-port`
        "dashboard-agent-listen-port": free_port(),
        "node-manager-port": free_port(),
        "object-manager-port": free_port(),
        "metrics-export-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "min-worker-port": worker_base,
        "max-worker-port": worker_base + 99,
        "temp-dir": str(temp_dir / "ray"),
        "num-cpus": num_cpus,
        "num-gpus": 0,
        "object-store-memory": 100_000_000,
    }


@contextlib.contextmanager
def _node_process(
    command: list[str], env: dict[str, str], temp_dir: Path, ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a node's process and wait until `ready()`; on the way out, every process it
    started (its descendants and whatever names its private temp dir) is signalled, and
    only those."""
    log_path = temp_dir / "node.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not ready():
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{command[1]} exited with {proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[1]}: the node was not up after 90 s")
            time.sleep(0.25)
        yield proc
    finally:
        terminate(processes_of(proc.pid, str(temp_dir)))
        proc.wait(timeout=10)
        terminate(processes_of(proc.pid, str(temp_dir)) - {proc.pid})
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/api/version", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # it answers (401 without a token): up
    except OSError:
        return False
    return True


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, env: dict[str, str] | None = None) -> Iterator[Head]:
    """A real Ray head (`ray start --head --block`) bound to 127.0.0.1 with its own free
    ports, a private temp dir, the dashboard (Ray Jobs) and token auth with a throwaway
    token; `env` joins its environment (and its workers')."""
    temp_dir = Path(tempfile.mkdtemp(prefix="nt-head-"))  # short: Ray's socket paths
    token = secrets.token_hex(16)
    dashboard, gcs = free_port(), free_port()
    ports = _node_ports(temp_dir, num_cpus)
    ports["dashboard-agent-grpc-port"] = ports.pop("metrics-agent-port")
    command = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
        "--disable-usage-stats", f"--port={gcs}", "--include-dashboard=true",
        f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}",
        *(f"--{flag}={value}" for flag, value in ports.items()),
    ]  # fmt: skip
    url = f"http://{LOOPBACK}:{dashboard}"
    head = Head(url, token, temp_dir, f"{LOOPBACK}:{gcs}", ray_env(temp_dir, token, env))
    with _node_process(command, head.env, temp_dir, lambda: _answers(url)):
        yield head


def alive_nodes(head: Head) -> list[dict[str, Any]]:
    """The cluster's alive nodes, from the State API of the head's dashboard."""
    reply = head.get("/api/v0/nodes?limit=100&detail=1")
    return [n for n in reply["data"]["result"]["result"] if n["state"] == "ALIVE"]


def _wait_for_head_node(head: Head, timeout_s: float = 60) -> set[str]:
    """The ids of the alive nodes once the head's own node is among them (the dashboard
    answers a moment before it registers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = alive_nodes(head)
        if any(node["is_head_node"] for node in nodes):
            return {node["node_id"] for node in nodes}
        time.sleep(0.25)
    raise RuntimeError(f"the head node did not register in {timeout_s:g} s")


# What `ray start --address=... --block` does, less its address handling: on Linux Ray
# 2.60's CLI replaces a loopback --address and --node-ip-address by the machine's own IP
# (so the node would dial the head on a non-loopback address), and with
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps every listener on 127.0.0.1, it
# refuses to start a worker node at all. ray.cluster_utils.Cluster.add_node starts its
# nodes the same way.
_WORKER_NODE = """
import json, signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams
node = Node(RayParams(**json.loads(sys.argv[1])), head=False, shutdown_at_exit=True,
            spawn_reaper=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("node", node.node_id, flush=True)
while True:
    time.sleep(1)
"""


@contextlib.contextmanager
def ray_worker_node(head: Head, num_cpus: int = 1) -> Iterator[str]:
    """A worker node joining `head` on 127.0.0.1 (same token and environment, its own
    ports and temp dir); yields its node id once the head counts it alive."""
    temp_dir = Path(tempfile.mkdtemp(prefix="nt-node-"))
    known = _wait_for_head_node(head)
    params = {k.replace("-", "_"): v for k, v in _node_ports(temp_dir, num_cpus).items()}
    params.update(gcs_address=head.gcs_address, include_log_monitor=True)
    command = [sys.executable, "-c", _WORKER_NODE, json.dumps(params)]
    env = {**head.env, "RAY_TMPDIR": str(temp_dir)}
    joined: list[str] = []

    def ready() -> bool:
        joined[:] = [n["node_id"] for n in alive_nodes(head) if n["node_id"] not in known]
        return bool(joined)

    with _node_process(command, env, temp_dir, ready):
        yield joined[0]


# --- the TCP listeners of a process tree, read from /proc ----------------------------------------


def _listening_sockets() -> dict[int, str]:
    """socket inode -> local address (host:port) of every TCP socket in LISTEN state."""
    found: dict[int, str] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            host_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(host_hex)
            # /proc prints each 32-bit word of the address in host (little-endian) order.
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
            packed = b"".join(words)
            family = socket.AF_INET if width == 8 else socket.AF_INET6
            found[int(fields[9])] = f"{socket.inet_ntop(family, packed)}:{int(port_hex, 16)}"
    return found


def descendants(root_pid: int) -> set[int]:
    """`root_pid` and every process below it."""
    table = proc_table()
    found = {root_pid}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        grew = bool(children)
        found |= children
    return found


def listeners_of(pids: set[int]) -> set[tuple[str, str]]:
    """(process name, local address) of every TCP listener the processes `pids` hold."""
    sockets = _listening_sockets()
    found = set()
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue  # gone, or not ours
        for link in links:
            if link.startswith("socket:[") and int(link[8:-1]) in sockets:
                found.add((name, sockets[int(link[8:-1])]))
    return found


def is_loopback_address(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped 127.x address (a dual-stack socket bound there)."""
    import ipaddress

    host = ipaddress.ip_address(address.rsplit(":", 1)[0])
    mapped = getattr(host, "ipv4_mapped", None)
    return bool(host.is_loopback or (mapped is not None and mapped.is_loopback))


def run_watching_listeners(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], set[tuple[str, str]]]:
    """Run `args` to its end, reading the TCP listeners of its process tree every 0.2 s
    while it runs; returns its result and every (process name, address) seen."""
    seen: set[tuple[str, str]] = set()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                terminate(descendants(proc.pid))
                raise TimeoutError(f"{args} still running after {timeout:g} s")
            seen |= listeners_of(descendants(proc.pid))
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(args, proc.returncode, out.read(), err.read())
    return result, seen


def spec_trial_settings(**fields: Any) -> Any:
    """TrialSettings as a sweep gives its trials, the spec's defaults for everything not in
    `fields` (flat TrialSettings fields): linear regression, target loss 0, 100 steps."""
    import dataclasses

    from tuner.config.spec import parse_spec
    from tuner.config.trial_settings import trial_settings as from_spec

    spec = parse_spec(
        {
            "name": "test",
            "workload": "linear_regression",
            "target": {"metric": "loss", "value": 0.0},
            "budget": {"max_steps": 100},
            "space": {"batch_size": [16], "lr": [0.1]},
        }
    )
    return dataclasses.replace(from_spec(spec, ""), **fields)


def spec_problems(data: dict[str, Any]) -> list[str]:
    """The problems `parse_spec` refuses `data` with, each checked to be one line that
    names its field ("field: what is wrong")."""
    import pytest

    from tuner.config.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as info:
        parse_spec(data)
    lines = info.value.problems
    assert all("\n" not in line and ": " in line for line in lines), lines
    return list(lines)


def tables_read_row_by_row(run_dir: Path) -> tuple[Any, Any]:
    """The trials and curves tables of `run_dir` as DESIGN.md §3 defines them, read with
    json line by line (`read_trials`): the reference `build_tables` must equal, which
    reads column-wise with pyarrow and from its caches.

    A curve holds, per trial, the reports of its last run (a report at a step not after
    an earlier one's replaces it and the ones after it) that have a step (a whole
    number), with their numbers that are not bookkeeping; a boolean counts as 0 or 1.
    """
    import pandas as pd

    from trainables import keys
    from tuner.results import columns
    from tuner.results.tables import CURVE_COLUMNS, _bookkeeping, trials_table
    from tuner.results.tune_state import read_trials

    trials = read_trials(run_dir)
    lasts = [trial.results[-1] if trial.results else {} for trial in trials]
    rows: list[dict[str, Any]] = []
    for trial in trials:
        run: list[dict[str, Any]] = []
        for report in trial.results:
            step = report.get(keys.STEP)
            whole = isinstance(step, (int, float)) and not isinstance(step, bool)
            if not whole or not math.isfinite(step) or step != int(step):
                continue
            while run and run[-1][keys.STEP] >= step:
                run.pop()
            numbers = {
                name: _number(value)
                for name, value in report.items()
                if not _bookkeeping(name) and isinstance(value, (int, float))
            }
            run.append({**numbers, keys.STEP: int(step)})
        rows.extend({columns.TRIAL_ID: trial.trial_id, **row} for row in run)
    curves = pd.DataFrame(rows) if rows else pd.DataFrame({columns.TRIAL_ID: pd.Series(dtype=str)})
    for column in CURVE_COLUMNS[1:]:
        if column not in curves:
            curves[column] = pd.Series(dtype=float)
    extra = sorted(c for c in curves.columns if c not in CURVE_COLUMNS)
    curves = curves[CURVE_COLUMNS + extra].reset_index(drop=True)
    return trials_table(trials, run_dir, lasts), curves


def _number(value: int | float) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return float(value)
    return value


def recorded_curve(
    batch_size: int,
    lr: float,
    reached_at: float | None,
    last: int,
    value: Callable[[int], float],
    wall_per_step: float,
) -> list[dict[str, Any]]:
    """A trial's reports as bench/curves.py records them, every 10 steps: `value(step)`
    as the target value, reaching the target at `reached_at` (None: never, the last
    report says exhausted)."""
    from trainables import keys

    rows: list[dict[str, Any]] = []
    for step in range(0, last + 1, 10):
        done = reached_at is not None and step >= reached_at
        rows.append(
            {
                keys.BATCH_SIZE: batch_size,
                keys.LR: lr,
                keys.MOMENTUM: 0.0,
                keys.WARMUP_STEPS: 0,
                keys.STEP: step,
                keys.TARGET_VALUE: value(step),
                keys.TRIAL_STATUS: keys.REACHED if done else keys.RUNNING,
                keys.STEPS_TO_TARGET: step if done else math.nan,
                keys.WALL_S: step * wall_per_step,
            }
        )
        if done:
            break
    if rows[-1][keys.TRIAL_STATUS] != keys.REACHED:
        rows[-1][keys.TRIAL_STATUS] = keys.EXHAUSTED
    return rows
