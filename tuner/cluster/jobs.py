"""Cluster submission through Ray Jobs: thin functions over `JobSubmissionClient`.

`submit` (`prepare`, then `send`) validates the spec here first (a bad spec raises
`SpecError` and nothing is sent), ships the working directory as the job's runtime_env
`working_dir` (so a user's own workload module travels with it) and starts
`<python> -m tuner run SPEC --address auto --no-build` on the head. `status`, `logs`,
`follow_logs`, `stop`, `list_jobs` and `wait` talk to the job server of the dashboard
at `address` (http://HOST:8265).

Auth: the token is found as Ray finds it (RAY_AUTH_TOKEN, then the file named by
RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token) and sent as an `Authorization: Bearer`
header, so it works even where RAY_AUTH_MODE is unset in the user's shell. Where it
goes (`choose_token`): a token the user gave (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, the
`token=` argument) goes to the address the user names; the ~/.ray/auth_token fallback
goes only to a loopback address (127.0.0.0/8, ::1, localhost: the SSH port-forward of
`ray dashboard`) and is withheld from any other, and a cluster that then asks for a
token gets an error saying why none was sent. Ray's own client would add the token it
finds itself (when RAY_AUTH_MODE=token was set at start), to any address: it is kept
from doing so, so that only this decision counts. `token_warning` says when a given
token would travel unencrypted (plain http:// to a host that is not loopback); the
CLI prints it. Nothing here ever turns auth off, and no token ever appears in a
message. Entrypoints and messages read back from the job server (`list_jobs`,
`status`) have their URIs redacted (`tuner.config.uris.redact_uris`), for jobs submitted
before credentials in storage URIs were refused.

Errors: `JobsInputError` for bad input (exit 2: a malformed address, a spec outside the
working directory, an unknown job id), `JobsError` for everything that failed on the
way to or at the cluster (exit 1: refused connection, missing or wrong token).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tuner.config.uris import one_line

DEFAULT_PYTHON = "python"
# Never shipped: results, version control, virtualenvs and caches (gitignore patterns,
# relative to the working directory; Ray also honours the directory's .gitignore).
WORKING_DIR_EXCLUDES: tuple[str, ...] = (
    "/runs/",
    ".git/",
    "/.venv/",
    "/venv/",
    "/.ci-venv/",
    "__pycache__/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_ADDRESS_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


class JobsError(RuntimeError):
    """A request to the cluster failed (exit code 1); the message is one line."""


class JobsInputError(ValueError):
    """Bad input for a Jobs command (exit code 2); the message is one line."""


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # where it came from, for messages (never the token itself)
    default_file: bool = False  # ~/.ray/auth_token, not given: sent to loopback only


@dataclass(frozen=True)
class TokenChoice:
    """What `choose_token` decided for one address."""

    sent: Token | None  # goes in the Authorization header
    withheld: Token | None  # the ~/.ray/auth_token fallback, kept from a non-loopback host


@dataclass(frozen=True)
class JobRow:
    """One submitted job as `list_jobs` reports it."""

    job_id: str
    status: str
    start_time: float | None  # seconds since the epoch
    end_time: float | None
    entrypoint: str
    message: str


# --- address and token ---------------------------------------------------------------------


def resolve_address(address: str | None) -> str:
    """`address`, else $RAY_ADDRESS: the dashboard URL http(s)://HOST[:PORT]."""
    chosen = address or os.environ.get("RAY_ADDRESS")
    if not chosen:
        raise JobsInputError("give --address http://HOST:8265 (or set RAY_ADDRESS)")
    parts = urlsplit(chosen.strip())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise JobsInputError(f"address {chosen!r} is not a dashboard URL like http://HOST:8265")
    return f"{parts.scheme}://{parts.netloc}"


def find_token() -> Token | None:
    """The auth token, looked up as Ray does: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH,
    ~/.ray/auth_token. None when there is none."""
    value = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if value:
        return Token(value, "RAY_AUTH_TOKEN")
    named = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if named:
        path = Path(named).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise JobsInputError(
                f"RAY_AUTH_TOKEN_PATH={named}: cannot read it ({exc.strerror or exc})"
            ) from exc
        if not value:
            raise JobsInputError(f"RAY_AUTH_TOKEN_PATH={named}: the file is empty")
        return Token(value, f"RAY_AUTH_TOKEN_PATH={named}")
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        try:
            value = default.read_text().strip()
        except OSError as exc:
            raise JobsInputError(f"{default}: cannot read it ({exc.strerror or exc})") from exc
        if value:
            return Token(value, str(default), default_file=True)
    return None


def is_loopback(url: str) -> bool:
    """Whether the host of `url` is this machine's loopback: 127.0.0.0/8, ::1 (also as
    ::ffff:127.x.y.z) or the name localhost. No name is looked up."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def choose_token(url: str, token: str | None = None) -> TokenChoice:
    """The token to send to the dashboard at `url`: `token` if given, else the one
    `find_token` finds; the ~/.ray/auth_token fallback only where `url` is loopback
    (elsewhere it is withheld: a file found on disk is not a request to send it to
    whatever --address names)."""
    found = Token(token, "the token argument") if token else find_token()
    if found is not None and found.default_file and not is_loopback(url):
        return TokenChoice(None, found)
    return TokenChoice(found, None)


def token_warning(address: str | None, token: str | None = None) -> str | None:
    """A one-line warning when the token would travel unencrypted: it was given (the
    fallback is never sent there) and `address` (or $RAY_ADDRESS) is plain http:// on a
    host that is not loopback. None otherwise. Raises JobsInputError as
    `resolve_address` and `find_token` do."""
    url = resolve_address(address)
    sent = choose_token(url, token).sent
    if sent is None or urlsplit(url).scheme != "http" or is_loopback(url):
        return None
    return (
        f"the auth token from {sent.source} goes to {url} unencrypted (plain http to a host "
        "that is not loopback): reach the dashboard through `ray dashboard` (an SSH "
        "port-forward to http://127.0.0.1:8265) or over https"
    )


@contextlib.contextmanager
def _explicit_address() -> Iterator[None]:
    """Ray lets RAY_ADDRESS override the address a client is given; ours must win."""
    saved = {name: os.environ.pop(name) for name in _ADDRESS_VARS if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _auth_message(url: str, choice: TokenChoice, text: str) -> str:
    token = choice.sent
    if "Missing" in text or "401" in text or "required" in text.lower():
        if choice.withheld is not None:
            host = urlsplit(url).hostname
            return (
                f"{url} requires an auth token; the default token file "
                f"{choice.withheld.source} was not sent because {host} is not a loopback "
                "address; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token "
                "to send it there"
            )
        where = (
            f"sent the token from {token.source}"
            if token
            else "found none in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
        )
        return f"{url} requires an auth token ({where}); set RAY_AUTH_TOKEN to the cluster's token"
    source = token.source if token else "no token"
    return (
        f"{url} rejected the auth token from {source}; set RAY_AUTH_TOKEN to the "
        "cluster's token (`ray get-auth-token` on the head prints it)"
    )


@contextlib.contextmanager
def _errors(url: str, choice: TokenChoice, job_id: str | None = None) -> Iterator[None]:
    """Turn what the Ray client raises into one-line JobsError / JobsInputError."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except (JobsError, JobsInputError):
        raise
    except AuthenticationError as exc:
        raise JobsError(_auth_message(url, choice, str(exc))) from exc
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        raise JobsError(
            f"cannot reach the Ray dashboard at {url} (is the cluster up, and is this the "
            "dashboard port, 8265 by default?)"
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise JobsError(f"request to {url} failed: {one_line(exc)}") from exc
    except RuntimeError as exc:
        text = str(exc)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise JobsInputError(f"no job {job_id} on {url}") from exc
        raise JobsError(f"{url}: {one_line(exc)}") from exc


@dataclass(frozen=True)
class _Connection:
    url: str
    choice: TokenChoice
    raw: Any  # the JobSubmissionClient

    @contextlib.contextmanager
    def call(self, job_id: str | None = None) -> Iterator[Any]:
        with _errors(self.url, self.choice, job_id):
            yield self.raw


@contextlib.contextmanager
def _no_token_from_ray() -> Iterator[None]:
    """While a JobSubmissionClient is built: Ray's client adds an Authorization header of
    its own (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) to every request,
    to any address, when RAY_AUTH_MODE=token was set as the process started, unless one
    is given. Only `choose_token` decides here; the header is fixed when the client is
    built."""
    from ray.dashboard.modules import dashboard_sdk

    name = "get_auth_headers_if_auth_enabled"
    original = getattr(dashboard_sdk, name, None)
    if original is None:  # a Ray that does not add one (tests/test_security.py checks)
        yield
        return
    setattr(dashboard_sdk, name, lambda headers: {})
    try:
        yield
    finally:
        setattr(dashboard_sdk, name, original)


def _connect(address: str | None, token: str | None) -> _Connection:
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    choice = choose_token(url, token)
    headers = {"Authorization": f"Bearer {choice.sent.value}"} if choice.sent else None
    with _errors(url, choice), _explicit_address(), _no_token_from_ray():
        raw = JobSubmissionClient(url, headers=headers)
    return _Connection(url, choice, raw)


def client(address: str | None, *, token: str | None = None) -> Any:
    """A JobSubmissionClient for the dashboard at `address` (or $RAY_ADDRESS), sending
    `token` (default: the one `find_token` finds, ~/.ray/auth_token to a loopback
    address only; see `choose_token`) as a bearer header."""
    return _connect(address, token).raw


# --- submit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """What `submit` sends: the entrypoint and the runtime_env."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]


def _excludes(working_dir: Path, spec: Any, storage: str | None) -> list[str]:
    """The fixed excludes, every top-level virtualenv whatever its name, and a local
    storage directory that lies inside the working directory."""
    excludes = list(WORKING_DIR_EXCLUDES)
    for child in sorted(working_dir.iterdir()):
        if child.is_dir() and (child / "pyvenv.cfg").is_file():
            excludes.append(f"/{child.name}/")
    chosen = storage or spec.storage
    if chosen.startswith("file://"):
        chosen = urlsplit(chosen).path
    if "://" not in chosen:
        local = Path(chosen).expanduser()
        local = (working_dir / local if not local.is_absolute() else local).resolve()
        with contextlib.suppress(ValueError):
            rel = local.relative_to(working_dir)
            if rel.parts:
                excludes.append(f"/{rel.as_posix()}/")
    return excludes


def storage_warning(spec: Any, storage: str | None) -> str | None:
    """A warning when results would land inside the job's temporary working directory
    on the head (a relative storage path), else None."""
    chosen = storage or spec.storage
    if "://" in chosen or chosen.startswith("~") or Path(chosen).is_absolute():
        return None
    return (
        f"storage {chosen!r} is relative: on the cluster it resolves inside the job's "
        "working directory on the head; pass --storage with an absolute path or a URI "
        "every node can reach"
    )


def _validate_spec(spec_file: Path, working_dir: Path) -> Any:
    """load_spec with the working directory importable first (the workload module is
    imported from it, as it will be on the cluster). Raises SpecError."""
    from tuner.config.spec import load_spec

    entry = str(working_dir)
    sys.path.insert(0, entry)
    try:
        return load_spec(spec_file)
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def prepare(
    spec_path: str | os.PathLike[str],
    *,
    storage: str | None = None,
    name: str | None = None,
    python: str = DEFAULT_PYTHON,
    working_dir: str | os.PathLike[str] | None = None,
) -> tuple[Submission, Any]:
    """Validate locally and build the submission; returns it with the parsed spec.

    Raises SpecError (bad spec) or JobsInputError (bad arguments); touches no network.
    """
    root = Path(working_dir if working_dir is not None else Path.cwd()).expanduser().resolve()
    if not root.is_dir():
        raise JobsInputError(f"working directory {root} does not exist")
    spec_file = Path(spec_path).expanduser()
    spec_file = (spec_file if spec_file.is_absolute() else Path.cwd() / spec_file).resolve()
    try:
        rel_spec = spec_file.relative_to(root)
    except ValueError as exc:
        raise JobsInputError(
            f"{spec_path}: the spec must lie inside the working directory {root}, "
            "which is what is shipped to the cluster"
        ) from exc
    from tuner.config.spec import run_name_problem

    problem = run_name_problem(name) if name is not None else None
    if problem:
        raise JobsInputError(f"--name {problem}")
    from tuner.config.uris import uri_problem

    if storage is not None:
        problem = uri_problem(storage)
        if problem:
            raise JobsInputError(f"--storage {problem}")
    interpreter = shlex.split(python)
    if not interpreter:
        raise JobsInputError("--python must name an interpreter (default: python)")
    spec = _validate_spec(spec_file, root)
    excludes = _excludes(root, spec, storage)
    if any(rel_spec.as_posix().startswith(p.strip("/") + "/") for p in excludes if p[0] == "/"):
        raise JobsInputError(f"{spec_path}: lies in a directory that is not shipped ({rel_spec})")
    command = [*interpreter, "-m", "tuner", "run", rel_spec.as_posix()]
    if storage:
        command += ["--storage", storage]
    if name:
        command += ["--name", name]
    # The head need not build the workload (it may lack the data or the memory): the
    # spec was checked here, and the trials report a workload that cannot run.
    command += ["--address", "auto", "--no-build"]
    submission = Submission(
        entrypoint=shlex.join(command),
        runtime_env={"working_dir": str(root), "excludes": excludes},
        metadata={"noisetune_spec": rel_spec.as_posix(), "noisetune_name": name or spec.name},
    )
    return submission, spec


def submit(
    spec_path: str | os.PathLike[str],
    address: str | None,
    storage: str | None = None,
    name: str | None = None,
    python: str = DEFAULT_PYTHON,
    working_dir: str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
) -> str:
    """Submit the sweep `spec_path` to the cluster at `address`; returns the job id.

    The spec is validated here first (SpecError: nothing is sent). `working_dir`
    (default: the current directory) is shipped as the job's working directory, less
    runs/, .git and virtualenvs; the spec must lie inside it. The job runs
    `<python> -m tuner run <spec relative to working_dir> [--storage S] [--name N]
    --address auto --no-build` on the head: `python` is the head's interpreter that has
    noisetune installed (default "python" on its PATH).
    """
    url = resolve_address(address)
    submission, _ = prepare(
        spec_path, storage=storage, name=name, python=python, working_dir=working_dir
    )
    return send(submission, url, token=token)


def send(submission: Submission, address: str | None, *, token: str | None = None) -> str:
    """Submit a prepared submission; returns the job id (raysubmit_...)."""
    with _connect(address, token).call() as jobs:
        job_id = jobs.submit_job(
            entrypoint=submission.entrypoint,
            runtime_env=submission.runtime_env,
            metadata=submission.metadata,
        )
    return str(job_id)


# --- status, logs, stop, list ----------------------------------------------------------------


NO_NOISETUNE_HINT = (
    "hint: the interpreter the job ran has no noisetune: install noisetune on the head "
    "(cluster.yaml's setup_commands do), or submit again with --python naming an "
    "interpreter that has it"
)


def status(address: str | None, job_id: str, *, token: str | None = None) -> tuple[str, str]:
    """(status, message) of a job, e.g. ("SUCCEEDED", "Job finished successfully."); a
    job whose interpreter could not import noisetune gets a hint on what to change."""
    with _connect(address, token).call(job_id) as jobs:
        info = jobs.get_job_info(job_id)
    from tuner.config.uris import redact_uris

    message = redact_uris(str(info.message or ""))
    if "No module named tuner" in message:
        message = f"{message.rstrip()}\n{NO_NOISETUNE_HINT}"
    return str(info.status.value), message


def logs(address: str | None, job_id: str, *, token: str | None = None) -> str:
    """Everything the job's driver has written so far."""
    with _connect(address, token).call(job_id) as jobs:
        return str(jobs.get_job_logs(job_id))


def follow_logs(
    address: str | None,
    job_id: str,
    write: Callable[[str], None],
    *,
    token: str | None = None,
) -> str:
    """Stream the job's logs to `write` until it ends; returns its final status."""
    # Ray logs every normal end of the stream ("WebSocket closed ...") at INFO.
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    with _connect(address, token).call(job_id) as jobs:
        jobs.get_job_info(job_id)  # an unknown id fails here, with a clear message

        async def tail() -> None:
            async for chunk in jobs.tail_job_logs(job_id):
                write(chunk)

        asyncio.run(tail())
        return str(jobs.get_job_status(job_id).value)


def _wait(
    conn: _Connection, job_id: str, until: tuple[str, ...], timeout_s: float, poll_s: float
) -> str:
    deadline = time.monotonic() + timeout_s
    with conn.call(job_id) as jobs:
        while True:
            current = str(jobs.get_job_status(job_id).value)
            if current in until or current in TERMINAL:
                return current
            if time.monotonic() > deadline:
                raise JobsError(f"job {job_id} still {current} after {timeout_s:g} s")
            time.sleep(poll_s)


def wait(
    address: str | None,
    job_id: str,
    *,
    until: tuple[str, ...] = TERMINAL,
    timeout_s: float = 600.0,
    poll_s: float = 0.5,
    token: str | None = None,
) -> str:
    """Poll until the job's status is in `until` or it has ended; returns the status.
    JobsError on timeout."""
    return _wait(_connect(address, token), job_id, until, timeout_s, poll_s)


def stop(
    address: str | None,
    job_id: str,
    *,
    wait_s: float = 60.0,
    token: str | None = None,
) -> str:
    """Ask the job to stop and (wait_s > 0) wait until it has; returns its status then.

    A job that had already ended keeps its status (SUCCEEDED, FAILED, STOPPED)."""
    conn = _connect(address, token)
    with conn.call(job_id) as jobs:
        jobs.stop_job(job_id)
    if wait_s <= 0:
        with conn.call(job_id) as jobs:
            return str(jobs.get_job_status(job_id).value)
    return _wait(conn, job_id, TERMINAL, wait_s, 0.25)


def list_jobs(address: str | None, *, token: str | None = None) -> list[JobRow]:
    """The submitted jobs of the cluster, oldest first (any URI in an entrypoint or
    message redacted)."""
    from tuner.config.uris import redact_uris

    with _connect(address, token).call() as jobs:
        details = jobs.list_jobs()
    rows = [
        JobRow(
            job_id=str(job.submission_id),
            status=str(job.status.value),
            start_time=job.start_time / 1000 if job.start_time else None,
            end_time=job.end_time / 1000 if job.end_time else None,
            entrypoint=redact_uris(str(job.entrypoint)),
            message=redact_uris(str(job.message or "")),
        )
        for job in details
        if job.submission_id
    ]
    return sorted(rows, key=lambda row: row.start_time or 0.0)
