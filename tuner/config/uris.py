"""What a storage path or URI may be, as text: its scheme, no credentials in it, and its
redacted form for every message (no filesystem is touched here).

Credentials never go in a storage URI: a URI is printed, stored by the job server as
part of a job's entrypoint, handed to every Ray worker and written into Ray Tune's
experiment state. `uri_problem` (which the spec validator, the job submission and
`tuner.runtime.storage.resolve`, hence every command, go through) refuses
`user:secret@`, a secret query parameter (`secret_key=`, `session_token=`,
`credential_token=`, Azure's `client_secret=`, ...) and the user name of an s3:// URI
(an access key id, which pyarrow would take with an empty secret in place of the
environment's credentials). Every message shows a URI through `redact`
(`s3://KEY:***@bucket/...`); `redact_uris` does the same for free text (a stored job's
entrypoint).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

# Schemes pyarrow.fs.FileSystem.from_uri knows. s3, gs and file are the documented and
# tested ones; the others pass through to pyarrow as they are.
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
# What names a query parameter that carries credentials (pyarrow's S3, GCS and Azure
# filesystems, older and newer, and the AWS spellings users try): never accepted, never
# printed. None of pyarrow's other parameters (region, scheme, endpoint_override, ...)
# matches.
_SECRET_WORDS = ("secret", "token", "password", "passwd", "credential", "signature", "sas")


def _is_secret_param(key: str) -> bool:
    name = unquote(key).lower()
    return any(word in name for word in _SECRET_WORDS) or name.endswith("key")


# Schemes whose host is a bucket name: never a ':' or '@' in it.
_BUCKET_SCHEMES = ("s3", "gs", "gcs")
_CREDENTIALS_HINT = {
    "s3": "give credentials as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and "
    "AWS_SESSION_TOKEN) in the environment, in ~/.aws, or through the instance's role",
    "gs": "give credentials with GOOGLE_APPLICATION_CREDENTIALS (a key file) or the VM's "
    "service account",
}
_CREDENTIALS_HINT["gcs"] = _CREDENTIALS_HINT["gs"]
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def is_uri(where: str) -> bool:
    return "://" in where


def uri_problem(where: str) -> str | None:
    """What is wrong with the form of a storage path or URI (no network), else None.

    A URI that carries credentials is refused (see the module docstring); the message
    shows it redacted and says where credentials go instead."""
    if not is_uri(where):
        return None
    try:
        parts = urlsplit(where)
    except ValueError as exc:
        return f"{redact(where)}: not a URI ({one_line(exc)})"
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        return (
            f"{redact(where)}: unknown storage scheme {parts.scheme!r} "
            "(use a local path, file://, s3:// or gs://)"
        )
    credentials = _credentials_problem(scheme, where)
    if credentials:
        return f"{redact(where)}: {credentials}"
    if scheme != "file" and not parts.netloc:
        return f"{redact(where)}: no bucket or host after {parts.scheme}://"
    return None


def credentials_problem(uri: str) -> str | None:
    """Why a URI of any scheme (a tracking server's, say) carries credentials, else None."""
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        return None
    return _credentials_problem(scheme, uri) if "://" in uri else None


def _credentials_problem(scheme: str, uri: str) -> str | None:
    """Why `uri` carries (or looks like it carries) credentials, else None."""
    hint = _CREDENTIALS_HINT.get(
        scheme, "give credentials in the environment or the filesystem's own configuration"
    )
    why = (
        "credentials do not go in a storage URI (it is printed, stored with the job and "
        f"handed to every Ray worker); remove them and {hint}"
    )
    head, query = _head_and_query(uri)
    if any(_is_secret_param(key) for key, _ in parse_qsl(query, keep_blank_values=True)):
        return why
    if "#" in uri:
        return f"a storage URI takes no #fragment; if that was a secret, {why}"
    found = _userinfo(scheme, head)
    if found is not None:
        user, has_secret, _ = unquote(found[0]).partition(":")
        if has_secret:
            return why
        if scheme == "s3":
            return (
                "the user name of an s3:// URI is an access key id, which would be used with "
                "an empty secret in place of your credentials; remove it and "
                f"{hint}"
            )
        if scheme in ("gs", "gcs") and user != "anonymous":
            return f"a {scheme}:// URI takes no user name (only anonymous@); {hint}"
    authority = head.split("/", 1)[0]
    if scheme in _BUCKET_SCHEMES and ":" in authority:
        return (
            f"a bucket name has no ':' (a port goes in ?endpoint_override=HOST:PORT); "
            f"if that was a secret, {why}"
        )
    return None


def _head_and_query(uri: str) -> tuple[str, str]:
    """What follows `scheme://` up to the query (userinfo, host, path), and the query
    (without the fragment)."""
    rest = uri.split("://", 1)[1]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    query = rest[cut + 1 :] if rest[cut : cut + 1] == "?" else ""
    return rest[:cut], query.split("#", 1)[0]


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def _userinfo(scheme: str, head: str) -> tuple[str, str] | None:
    """(userinfo, the rest of `head` after its '@') when `head` (what follows scheme://,
    up to the query) starts with a userinfo, else None. A secret may hold a '/' (AWS
    secret keys often do), which ends the URI's authority early: a ':' in the authority
    that is no port (or any ':' in a bucket name) with an '@' further on is taken for
    `user:secret@`."""
    authority = head.split("/", 1)[0]
    if "@" in authority:
        userinfo = authority.rpartition("@")[0]
        return userinfo, head[len(userinfo) + 1 :]
    at = head.rfind("@")
    if at < 0 or ":" not in authority:
        return None
    if scheme in _BUCKET_SCHEMES or not _is_port(authority.rpartition(":")[2]):
        return head[:at], head[at + 1 :]
    return None


def redact(uri: str) -> str:
    """The URI with its secrets replaced by ***: the secret of `user:secret@` (whatever
    it holds, '/' included), a ':...' in a bucket name, and the values of secret query
    parameters. The rest, query parameters included, stays as it was written."""
    if not is_uri(uri):
        return uri
    scheme, rest = uri.split("://", 1)
    head, query = _head_and_query(uri)
    tail = rest[len(head) :]
    found = _userinfo(scheme.lower(), head)
    if found is not None:
        userinfo, after = found
        if ":" in unquote(userinfo):  # user:secret, or user%3Asecret
            head = f"{unquote(userinfo).partition(':')[0]}:***@{after}"
    else:
        authority = head.split("/", 1)[0]
        if scheme.lower() in _BUCKET_SCHEMES and ":" in authority:
            head = f"{authority.partition(':')[0]}:***{head[len(authority) :]}"
    if query:
        items = []
        for item in query.split("&"):
            key, eq, _ = item.partition("=")
            items.append(f"{key}{eq}***" if _is_secret_param(key) and eq else item)
        tail = tail.replace(query, "&".join(items), 1)
    if "#" in tail:
        tail = tail.split("#", 1)[0] + "#***"
    return f"{scheme}://{head}{tail}"


def redact_uris(text: str) -> str:
    """`text` with every URI in it redacted (a stored job's entrypoint, a message)."""
    return _URI_IN_TEXT.sub(lambda match: redact(match.group()), text)


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
