"""What must never leak: credentials in storage URIs, the auth token, the staging files.

1. A storage URI that carries credentials (user:secret@, a secret query parameter, an
   s3:// access key id) is refused wherever a storage URI is accepted, with one line
   that shows it redacted and says where credentials go instead.
2. The jobs client sends a token only where the user gave one, or (the
   ~/.ray/auth_token fallback) only to a loopback address; checked on the decision
   functions and on real requests to an HTTP server on 127.0.0.1 that records the
   Authorization header it receives.
3. The local staging directory of a remote run is private (0700, ours, not a link).

Every address a request goes to is 127.0.0.1; non-loopback hosts appear only in calls
of pure functions that connect to nothing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from _helpers import LOOPBACK, ROOT, free_port, run_noisetune

from tuner.cluster import jobs
from tuner.config import uris
from tuner.config.spec import SpecError, parse_spec
from tuner.runtime import storage

SECRET = "SEKRIT"  # never in anything printed
# A closed loopback port: an s3:// URI that names it makes pyarrow ask no one else.
NOWHERE = f"endpoint_override={LOOPBACK}:9&scheme=http"
SPEC = {
    "name": "sec",
    "workload": "linear_regression",
    "workload_args": {"dim": 4, "n_train": 256},
    "target": {"metric": "loss", "value": 0.5},
    "budget": {"max_steps": 20},
    "eval_every": 10,
    "space": {"batch_size": [32], "lr": [0.1]},
}
AWS_HINT = "AWS_SECRET_ACCESS_KEY"
GCS_HINT = "GOOGLE_APPLICATION_CREDENTIALS"

# (URI, what the message shows of it, a word that says what to do instead)
CREDENTIAL_URIS = [
    (f"s3://AKID:{SECRET}@bucket/runs?{NOWHERE}", f"s3://AKID:***@bucket/runs?{NOWHERE}", AWS_HINT),
    # an AWS secret often holds a '/' (and a '+'): the authority then ends inside it
    (f"s3://AKID:SEK/{SECRET}+x@bucket/runs?{NOWHERE}", "s3://AKID:***@bucket/runs", AWS_HINT),
    (f"s3://AKID:{SECRET}@bucket", "s3://AKID:***@bucket", AWS_HINT),
    (f"s3://bucket/runs?{NOWHERE}&secret_key={SECRET}", "secret_key=***", AWS_HINT),
    (f"s3://bucket/runs?session_token={SECRET}&{NOWHERE}", "session_token=***", AWS_HINT),
    (
        f"gs://bucket/runs?credential_token={SECRET}",
        "gs://bucket/runs?credential_token=***",
        GCS_HINT,
    ),
    (f"gs://user:{SECRET}@bucket/runs", "gs://user:***@bucket/runs", GCS_HINT),
    # an access key id alone: taken with an empty secret, in place of the real credentials
    (f"s3://AKID@bucket/runs?{NOWHERE}", "s3://AKID@bucket/runs", AWS_HINT),
    # spellings users try, found by a newcomer: AWS's names, a bare token, an encoded ':'
    (f"s3://bucket/x?aws_secret_access_key={SECRET}", "aws_secret_access_key=***", AWS_HINT),
    (f"s3://bucket/x?token={SECRET}", "s3://bucket/x?token=***", AWS_HINT),
    (f"s3://AKIAXX%3A{SECRET}@bucket/x", "s3://AKIAXX:***@bucket/x", AWS_HINT),
    (f"s3://bucket/x#{SECRET}", "s3://bucket/x#***", AWS_HINT),
]


def assert_refused(message: str, shown: str, hint: str) -> None:
    assert SECRET not in message, message
    assert shown in message, message
    assert hint in message, message
    assert "\n" not in message


# --- 1. credentials in storage URIs ---------------------------------------------------------


@pytest.mark.parametrize(("uri", "shown", "hint"), CREDENTIAL_URIS)
def test_a_uri_with_credentials_is_refused_by_every_check(uri: str, shown: str, hint: str) -> None:
    problem = uris.uri_problem(uri)
    assert problem is not None, uri
    assert_refused(problem, shown, hint)
    with pytest.raises(storage.StorageError) as caught:  # every command goes through resolve
        storage.resolve(uri)
    assert_refused(str(caught.value), shown, hint)
    with pytest.raises(SpecError) as spec_error:  # the spec's storage:
        parse_spec({**SPEC, "storage": uri})
    assert len(spec_error.value.problems) == 1
    assert_refused(spec_error.value.problems[0], shown, hint)


def test_azure_and_other_secret_parameters_are_refused() -> None:
    uri = f"abfs://c@acct.dfs.core.windows.net/r?tenant_id=t&client_id=i&client_secret={SECRET}"
    problem = uris.uri_problem(uri)
    assert problem is not None and SECRET not in problem and "client_secret=***" in problem
    # a user name that is not a credential passes as it did: the container of abfs://,
    # pyarrow's anonymous access to a public gs:// bucket, the user of hdfs://
    for fine in (
        "abfs://container@acct.dfs.core.windows.net/r",
        "gs://anonymous@bucket/runs",
        "hdfs://alice@namenode:8020/runs",
        "hdfs://namenode:8020/runs@v2",
        "s3://bucket/runs@v2",
        f"s3://bucket/runs?{NOWHERE}",
    ):
        assert uris.uri_problem(fine) is None, fine


def test_redaction_of_uris_in_free_text() -> None:
    """What `list` and `status` show of a job submitted before credentials were refused."""
    entrypoint = (
        f"python -m tuner run spec.yaml --storage 's3://AKID:{SECRET}@b/r?{NOWHERE}' "
        f"--name x --other gs://b/p?credential_token={SECRET}"
    )
    shown = uris.redact_uris(entrypoint)
    assert SECRET not in shown
    assert f"'s3://AKID:***@b/r?{NOWHERE}'" in shown
    assert "gs://b/p?credential_token=***" in shown
    assert shown.startswith("python -m tuner run spec.yaml --storage ")
    assert uris.redact_uris("no uri here: ./runs") == "no uri here: ./runs"


def test_submit_refuses_a_storage_uri_with_credentials(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    uri = CREDENTIAL_URIS[1][0]
    with pytest.raises(jobs.JobsInputError) as caught:
        jobs.prepare(tmp_path / "spec.yaml", storage=uri, working_dir=tmp_path)
    assert_refused(str(caught.value), "s3://AKID:***@bucket/runs", AWS_HINT)
    assert str(caught.value).startswith("--storage ")


def _cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        HOME=str(home),
        AWS_EC2_METADATA_DISABLED="true",  # never ask an instance-metadata service
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


@pytest.mark.parametrize("command", ["validate", "run", "submit", "resume", "export", "report"])
def test_every_command_refuses_credentials_in_one_line(tmp_path: Path, command: str) -> None:
    uri = CREDENTIAL_URIS[1][0]  # the secret with a '/': pyarrow's own error would echo it
    spec = {**SPEC, "storage": uri} if command == "validate" else SPEC
    proj, home = tmp_path / "proj", tmp_path / "home"
    proj.mkdir()
    home.mkdir()
    (proj / "spec.yaml").write_text(yaml.safe_dump(spec))
    closed = f"http://{LOOPBACK}:{free_port()}"
    args = {
        "validate": ["validate", "spec.yaml"],
        "run": ["run", "spec.yaml", "--storage", uri],
        "submit": ["submit", "spec.yaml", "--storage", uri, "--address", closed],
        "resume": ["resume", uri],
        "export": ["export", uri],
        "report": ["report", uri],
    }[command]
    result = run_noisetune(*args, cwd=proj, env=_cli_env(home), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_refused(result.stderr.strip(), "s3://AKID:***@bucket/runs", AWS_HINT)
    assert [p.name for p in proj.iterdir()] == ["spec.yaml"]  # nothing written


# --- 2. where the auth token goes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8265", True),
        ("http://127.8.9.10:8265", True),
        ("http://localhost:8265", True),
        ("https://LOCALHOST", True),
        ("http://[::1]:8265", True),
        ("http://[::ffff:127.0.0.1]:8265", True),
        ("http://10.0.0.5:8265", False),
        ("http://0.0.0.0:8265", False),
        ("http://[::]:8265", False),
        ("http://128.0.0.1:8265", False),
        ("http://head.example.com:8265", False),
        ("http://localhost.example.com:8265", False),
        ("http://127.0.0.1.example.com:8265", False),
    ],
)
def test_which_addresses_are_loopback(url: str, loopback: bool) -> None:
    assert jobs.is_loopback(url) is loopback


@pytest.fixture
def no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home without ~/.ray/auth_token and no token variables; returns the home."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _home_token(home: Path, value: str = "from-home") -> Path:
    (home / ".ray").mkdir(exist_ok=True)
    path = home / ".ray" / "auth_token"
    path.write_text(f"{value}\n")
    return path


REMOTE = "http://10.0.0.5:8265"  # pure functions only: nothing connects to it
LOCAL = "http://127.0.0.1:8265"


def test_the_default_token_file_goes_to_loopback_addresses_only(
    no_token: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert jobs.choose_token(LOCAL) == jobs.TokenChoice(None, None)
    assert jobs.choose_token(REMOTE) == jobs.TokenChoice(None, None)
    path = _home_token(no_token)
    home = jobs.Token("from-home", str(path), default_file=True)
    assert jobs.find_token() == home
    assert jobs.choose_token(LOCAL) == jobs.TokenChoice(home, None)
    assert jobs.choose_token("http://localhost:8265") == jobs.TokenChoice(home, None)
    assert jobs.choose_token(REMOTE) == jobs.TokenChoice(None, home)  # withheld
    # a token the user gave goes where the user sends it
    given = jobs.Token("given", "the token argument")
    assert jobs.choose_token(REMOTE, "given") == jobs.TokenChoice(given, None)
    (no_token / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(no_token / "tok"))
    named = jobs.Token("from-path", f"RAY_AUTH_TOKEN_PATH={no_token / 'tok'}")
    assert jobs.choose_token(REMOTE) == jobs.TokenChoice(named, None)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    env = jobs.Token("from-env", "RAY_AUTH_TOKEN")
    assert jobs.choose_token(REMOTE) == jobs.TokenChoice(env, None)
    assert jobs.choose_token(LOCAL) == jobs.TokenChoice(env, None)


def test_a_given_token_over_plain_http_to_another_host_is_warned_about(
    no_token: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert jobs.token_warning(REMOTE) is None  # no token, nothing travels
    _home_token(no_token)
    assert jobs.token_warning(REMOTE) is None  # the default file is withheld there
    assert jobs.token_warning(LOCAL) is None
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    warning = jobs.token_warning(REMOTE)
    assert warning is not None and "\n" not in warning
    assert "RAY_AUTH_TOKEN" in warning and "unencrypted" in warning and REMOTE in warning
    assert "from-env" not in warning
    assert jobs.token_warning(LOCAL) is None
    assert jobs.token_warning("http://localhost:8265") is None
    assert jobs.token_warning("https://10.0.0.5:8265") is None
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    given = jobs.token_warning(REMOTE, token="given")
    assert given is not None and "the token argument" in given and "given " not in given
    monkeypatch.setenv("RAY_ADDRESS", REMOTE)  # the address from the environment
    assert jobs.token_warning(None, token="given") == given


class _Recorder(BaseHTTPRequestHandler):
    """A dashboard stand-in: records each request's Authorization header; answers 401
    without one (as Ray's token auth does), else /api/version and an empty job list."""

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        self.server.seen.append(auth)  # type: ignore[attr-defined]
        if not auth:
            body, status = b"Unauthorized: Missing authentication token", 401
        elif self.path == "/api/version":
            body, status = json.dumps({"version": "4", "ray_version": "2.60.0"}).encode(), 200
        else:
            body, status = b"[]", 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str | None]]]:
    """An HTTP server on 127.0.0.1 in a thread; yields its URL and what it was sent."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_real_requests_carry_the_token_only_where_they_may(
    no_token: Path, recorder: tuple[str, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = recorder
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    _home_token(no_token)

    assert jobs.list_jobs(url) == []  # loopback: the default file's token goes
    assert seen and set(seen) == {"Bearer from-home"}

    # The same server, taken for a host that is not loopback (no test may reach one).
    monkeypatch.setattr(jobs, "is_loopback", lambda address: False, raising=False)
    seen.clear()
    with pytest.raises(jobs.JobsError) as caught:
        jobs.list_jobs(url)
    assert seen == [None]  # no Authorization header at all
    message = str(caught.value)
    assert "from-home" not in message and "\n" not in message
    assert f"{url} requires an auth token" in message
    assert str(no_token / ".ray" / "auth_token") in message
    assert "was not sent" in message and "not a loopback address" in message
    assert "RAY_AUTH_TOKEN" in message

    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")  # given: it goes
    seen.clear()
    assert jobs.list_jobs(url) == []
    assert set(seen) == {"Bearer from-env"}
    seen.clear()
    assert jobs.list_jobs(url, token="given") == []
    assert set(seen) == {"Bearer given"}


_WITHHELD = """
import sys
from tuner.cluster import jobs
jobs.is_loopback = lambda address: False
try:
    jobs.list_jobs(sys.argv[1])
except jobs.JobsError as exc:
    print(exc)
"""


def test_ray_adds_no_token_of_its_own_where_noisetune_withholds_it(
    tmp_path: Path, recorder: tuple[str, list[str | None]]
) -> None:
    """With RAY_AUTH_MODE=token at start, Ray's own client adds the token it finds
    (~/.ray/auth_token too) to every request, to any address; noisetune's decision wins."""
    url, seen = recorder
    _home_token(tmp_path)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env = {k: v for k, v in env.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT), RAY_AUTH_MODE="token")
    result = subprocess.run(
        [sys.executable, "-c", _WITHHELD, url],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert seen == [None], seen
    assert "was not sent" in result.stdout, result.stdout


# --- 3. the staging directory -------------------------------------------------------------------


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile.gettempdir() -> a fresh directory; returns noisetune's root under it."""
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    return base / f"noisetune-{storage.getpass.getuser()}"


REMOTE_RUN = f"s3://bucket/runs?{NOWHERE}"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_staging_directory_is_created_private(temp_root: Path) -> None:
    old = os.umask(0o022)
    try:
        staged = storage.staging_dir(storage.resolve(REMOTE_RUN).join("sweep"))
    finally:
        os.umask(old)
    assert staged.parent.parent == temp_root / "staging" and staged.name == "sweep"
    assert _mode(temp_root) == 0o700 and _mode(temp_root / "staging") == 0o700
    assert storage.staging_dir(storage.resolve(REMOTE_RUN).join("sweep")) == staged  # again


def _unsafe(temp_root: Path, *words: str) -> None:
    with pytest.raises(storage.StorageError) as caught:
        storage.staging_dir(storage.resolve(REMOTE_RUN).join("sweep"))
    message = str(caught.value)
    assert "\n" not in message
    for word in (str(temp_root), "unsafe", "remove it", "TMPDIR", *words):
        assert word in message, message


def test_a_staging_root_others_can_write_to_is_refused(temp_root: Path) -> None:
    temp_root.mkdir()
    temp_root.chmod(0o770)
    _unsafe(temp_root, "0770")
    temp_root.chmod(0o757)
    _unsafe(temp_root, "0757")
    temp_root.chmod(0o700)
    storage.staging_dir(storage.resolve(REMOTE_RUN).join("sweep"))  # now it is fine


def test_a_staging_root_only_readable_by_others_is_closed(temp_root: Path) -> None:
    """What an older noisetune left (0755): no one else could write there, so it is made
    private and used."""
    temp_root.mkdir()
    temp_root.chmod(0o755)
    storage.staging_dir(storage.resolve(REMOTE_RUN).join("sweep"))
    assert _mode(temp_root) == 0o700


def test_a_symlinked_staging_root_is_refused(temp_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    temp_root.symlink_to(target)  # even to a private directory of ours
    _unsafe(temp_root, "symbolic link")
    assert list(target.iterdir()) == []  # nothing created through it
    temp_root.unlink()
    temp_root.write_text("")  # a file
    _unsafe(temp_root, "not a directory")


def test_an_open_level_below_the_root_is_refused(temp_root: Path) -> None:
    (temp_root / "staging").mkdir(parents=True)
    temp_root.chmod(0o700)
    (temp_root / "staging").chmod(0o777)
    with pytest.raises(storage.StorageError, match=r"staging.*0777"):
        storage.staging_dir(storage.resolve(REMOTE_RUN).join("sweep"))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another uid")
def test_a_staging_root_of_another_user_is_refused(temp_root: Path) -> None:
    temp_root.mkdir(mode=0o700)
    os.chown(temp_root, 65534, 65534)
    _unsafe(temp_root, "uid 65534")
