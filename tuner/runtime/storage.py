"""Where a run lives: a local directory, or a directory under a URI a cluster shares.

`resolve("./runs")` and `resolve("s3://bucket/runs?endpoint_override=...")` both give a
`Location`: a pyarrow filesystem and a path on it, with the URI (query parameters kept,
as Ray Tune's `RunConfig(storage_path=...)` takes them) for messages and for Ray. A
local path, `~/...` or `file:///...` is a local location: every existing code path
works on it unchanged (`Location.local_path`). Anything else (s3://, gs://) is remote:
the driver writes noisetune's own files (results/, decisions, plots) into a local
staging directory (`staging_dir`) and uploads them whole (`Location.upload`), while Ray
Tune syncs its own experiment state and checkpoints there itself.

A storage string is checked as text first (`tuner.config.uris`: scheme, no credentials
in it, redacted in every message), then opened here.

The staging directory, `<tempdir>/noisetune-<user>/staging/<hash of the URI>/<name>`,
is private: each level noisetune creates is 0700, and an existing root or `staging`
level must be a real directory (not a symlink) of this user that no one else can write
to, else StorageError (another local user could read or plant files); group or other
read bits are taken away.

Errors are `StorageError` (bad input: an unknown scheme, a malformed URI, credentials
in a URI, a store that cannot be reached, a bucket that does not exist, an unsafe
staging directory), one line each.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow
import pyarrow.fs as pafs

from tuner.config.uris import is_uri, one_line, redact, uri_problem

# Object stores write an object whole when its stream closes: a reader sees the old
# object or the new one, never half of one.
_OBJECT_STORES = (pafs.S3FileSystem, pafs.GcsFileSystem)
_STAGING_HINT = "remove it, or set TMPDIR to a private directory"
_CHUNK = 1 << 20


class StorageError(ValueError):
    """A storage location that cannot be used (bad input, exit code 2); one line."""


@dataclass(frozen=True, eq=False)
class Location:
    """A directory on a pyarrow filesystem; `uri` is how Ray and users name it."""

    uri: str  # a local run's absolute path, or scheme://bucket/path?query
    filesystem: pafs.FileSystem
    path: str  # the path on `filesystem` (no scheme, no query)

    def __str__(self) -> str:
        return redact(self.uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self} is not on the local filesystem")
        return Path(self.path)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        if self.is_local:
            return Location(path, self.filesystem, path)
        split = urlsplit(self.uri)
        uri = urlunsplit(split._replace(path=posixpath.join(split.path or "/", *parts)))
        return Location(uri, self.filesystem, path)

    def parent_uri(self) -> str:
        """The URI of the directory this one is in (Ray Tune's `storage_path`)."""
        if self.is_local:
            return str(Path(self.path).parent)
        split = urlsplit(self.uri)
        parent = posixpath.dirname(split.path.rstrip("/"))
        return urlunsplit(split._replace(path="" if parent == "/" else parent))

    # --- reading and writing --------------------------------------------------------------

    def _at(self, rel: str) -> str:
        return posixpath.join(self.path, rel) if rel else self.path

    def exists(self, rel: str = "") -> bool:
        with self._errors():
            return self.filesystem.get_file_info(self._at(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        with self._errors(), self.filesystem.open_input_stream(self._at(rel)) as stream:
            return bytes(stream.readall())

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file (a temporary name, then a move, where that is needed for a
        reader never to see half of it)."""
        target = self._at(rel)
        with self._errors():
            if isinstance(self.filesystem, _OBJECT_STORES):
                with self.filesystem.open_output_stream(target) as out:
                    out.write(data)
                return
            self.filesystem.create_dir(posixpath.dirname(target), recursive=True)
            tmp = posixpath.join(posixpath.dirname(target), f".{posixpath.basename(target)}.tmp")
            with self.filesystem.open_output_stream(tmp) as out:
                out.write(data)
            self.filesystem.move(tmp, target)

    def files(self) -> list[str]:
        """Every file under this directory, as paths relative to it (empty if none)."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        with self._errors():
            infos = self.filesystem.get_file_info(selector)
        prefix = self.path.rstrip("/") + "/"
        return sorted(
            info.path[len(prefix) :]
            for info in infos
            if info.type == pafs.FileType.File and info.path.startswith(prefix)
        )

    def download(self, dest: Path, select: Callable[[str], bool] = lambda rel: True) -> list[str]:
        """Copy the files `select` accepts (by relative path) into `dest`; returns them."""
        chosen = [rel for rel in self.files() if select(rel)]
        for rel in chosen:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            with (
                self._errors(),
                self.filesystem.open_input_stream(self._at(rel)) as src,
                tmp.open("wb") as out,
            ):
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
            tmp.replace(target)
        return chosen

    def upload(self, src: Path, rel: str = "") -> list[str]:
        """Copy every file under the local directory `src` to `rel` here, each whole
        (hidden files, such as half-written temporaries, stay behind); returns the
        relative paths written."""
        written = []
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            inner = path.relative_to(src).as_posix()
            if any(part.startswith(".") for part in path.relative_to(src).parts):
                continue
            target = posixpath.join(rel, inner) if rel else inner
            self.write_bytes(target, path.read_bytes())
            written.append(target)
        return written

    def check(self) -> None:
        """Raise StorageError unless the store answers (and its bucket exists)."""
        if self.is_local:
            return
        with self._errors():
            info = self.filesystem.get_file_info(self.path)
            if isinstance(self.filesystem, _OBJECT_STORES):
                bucket = self.path.split("/", 1)[0]
                if self.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise StorageError(f"{self}: bucket {bucket!r} does not exist")
        if info.type == pafs.FileType.File:
            raise StorageError(f"{self}: is a file, not a directory")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """What pyarrow raises for a remote store -> a one-line StorageError (a local
        filesystem's errors pass through as they are)."""
        try:
            yield
        except StorageError:
            raise
        except (OSError, pyarrow.ArrowException) as exc:
            if self.is_local:
                raise
            raise StorageError(f"{self}: {one_line(exc)}") from exc


def resolve(where: str | os.PathLike[str]) -> Location:
    """A storage path or URI -> Location. Raises StorageError for an unknown scheme or a
    URI pyarrow cannot open (for s3:// without a region, finding the bucket's region
    asks the store)."""
    text = os.fspath(where)
    if not is_uri(text):
        path = str(Path(text).expanduser().resolve())
        return Location(path, pafs.LocalFileSystem(), path)
    problem = uri_problem(text)
    if problem:
        raise StorageError(problem)
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (OSError, pyarrow.ArrowException) as exc:
        detail = one_line(exc).replace(text, redact(text))  # pyarrow may quote the URI
        raise StorageError(f"{redact(text)}: {detail}") from exc
    if isinstance(filesystem, pafs.LocalFileSystem):
        return resolve(path)  # file:///abs/path is a local path
    split = urlsplit(text)
    uri = urlunsplit(split._replace(path=split.path.rstrip("/")))
    return Location(uri, filesystem, path.rstrip("/"))


def staging_dir(location: Location) -> Path:
    """The local directory where the driver writes a remote run's own files before it
    uploads them. Fixed per URI (and user), so that a sweep resumed on the same machine
    finds what a killed driver left there: `<tempdir>/noisetune-<user>/staging/<hash of
    the URI>/<name>`. The root and `staging` are created 0700 where they do not exist
    and checked where they do (`_private_dir`): StorageError if either is unsafe. The
    levels below are created by the caller, inside a directory only this user can
    enter."""
    digest = hashlib.sha256(location.uri.encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"noisetune-{_user()}"
    _private_dir(root)
    _private_dir(root / "staging")
    return root / "staging" / digest / location.name


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a name (a container's, say)
        return str(os.getuid())


def _private_dir(path: Path) -> None:
    """Create `path` with mode 0700 if it does not exist; then check that it is a real
    directory (lstat: a symlink is refused, whatever it points to) owned by this user
    that no one else can write to (group or other read bits are taken away).
    StorageError (one line) otherwise."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass  # someone's: checked below
    except OSError as exc:
        raise StorageError(
            f"staging directory {path}: cannot create it ({exc.strerror or exc}); "
            "set TMPDIR to a directory of yours"
        ) from exc
    else:
        os.chmod(path, 0o700)  # whatever the umask left
    info = os.lstat(path)
    uid = os.getuid()
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid != uid:
        problem = f"belongs to uid {info.st_uid}, not to you (uid {uid})"
    elif stat.S_IMODE(info.st_mode) & 0o022:
        problem = f"is open to other users (mode {stat.S_IMODE(info.st_mode):04o}, not 0700)"
    else:
        # Readable by others but writable by no one else (an older noisetune made its
        # root 0755): nothing can have been planted there, so close it and go on.
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, 0o700)
        return
    raise StorageError(
        f"staging directory {path} {problem}, so it is unsafe (another user could read or "
        f"plant files there): {_STAGING_HINT}"
    )


def clear(staged: Path) -> None:
    """Remove a staging directory (and its per-URI parent once empty)."""
    shutil.rmtree(staged, ignore_errors=True)
    with contextlib.suppress(OSError):
        staged.parent.rmdir()
