"""A run's location, decided once: where the run lives and where this driver writes.

A run lives at a `tuner.runtime.storage.Location`: a local directory, or a URI (s3://,
gs://) that Ray Tune syncs its experiment state and checkpoints to. For a URI,
noisetune's own files (the spec copy, results/, decisions.jsonl, plots) are written into
a private local staging directory (`workdir`) and uploaded: the spec copy when the sweep
starts, the rest when it ends (or is interrupted). To build the tables, the experiment
state and each trial's result files are downloaded there first (`pull_tune_files`).
For a local run, `workdir` is the run directory itself and every transfer is a no-op.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tuner.config.spec import Spec, load_spec
from tuner.results.tables import REPORTS_CACHE, RESULTS_DIR
from tuner.results.tune_state import is_experiment
from tuner.runtime.storage import Location, clear, resolve, staging_dir
from tuner.strategy.schedulers import DECISIONS_FILE

T = TypeVar("T")
SPEC_FILE = "noisetune_spec.yaml"
_TRIAL_FILES = ("result.json", "error.txt", REPORTS_CACHE)


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (bad input, exit code 2)."""


def _tune_files(rel: str) -> bool:
    """What tune_state and results read: the experiment state and each trial's
    result.json, error.txt and reports cache (not checkpoints, not Ray Train's own
    state)."""
    parts = rel.split("/")
    return len(parts) == 1 or (
        len(parts) == 2 and parts[0] != RESULTS_DIR and parts[1] in _TRIAL_FILES
    )


class RunLocation:
    """One run's `location` and this driver's `workdir` for it."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self._checked = False
        self._spec: Spec | None = None

    @classmethod
    def at(cls, where: str | os.PathLike[str] | Location | RunLocation) -> RunLocation:
        """The run at a directory, a URI or a Location (StorageError for a bad URI)."""
        if isinstance(where, RunLocation):
            return where
        return cls(where if isinstance(where, Location) else resolve(where))

    @classmethod
    def under(cls, storage: str, name: str) -> RunLocation:
        """`<storage>/<name>`: a local directory or a URI. StorageError for a bad URI."""
        return cls(resolve(storage).join(name))

    def __str__(self) -> str:
        return str(self.location)

    @property
    def is_local(self) -> bool:
        return self.location.is_local

    @property
    def uri(self) -> str:
        return self.location.uri

    @functools.cached_property
    def workdir(self) -> Path:
        """Where this driver writes the run's own files: a local run's directory itself,
        or the private staging directory of a run at a URI (StorageError if unsafe)."""
        if self.location.is_local:
            return self.location.local_path
        return staging_dir(self.location)

    def check(self) -> None:
        """StorageError unless the store answers and, for a URI, the staging directory
        is safe: checked before Ray starts, so bad input writes nothing. Asked once: the
        command line checks before Ray starts, the runner again for callers of its API."""
        if self._checked:
            return
        self.location.check()
        _ = self.workdir
        self._checked = True

    def on_top_level(self, check: Callable[[Path], T]) -> T:
        """check(the run directory), for a run at a URI on a local copy of its top-level
        files (Tune's experiment state among them)."""
        if self.is_local:
            return check(self.location.local_path)
        with tempfile.TemporaryDirectory(prefix="noisetune-") as tmp:
            local = Path(tmp) / self.location.name
            self.location.download(local, lambda rel: "/" not in rel)
            return check(local)

    def holds_sweep(self) -> bool:
        """Whether the run already holds a Ray Tune experiment."""
        return self.on_top_level(is_experiment)

    def load_spec(self) -> Spec:
        """The run's spec copy (RunDirError if there is none, SpecError if invalid), read
        once: a run's spec copy does not change."""
        if self._spec is None:
            self._spec = self._read_spec()
        return self._spec

    def _read_spec(self) -> Spec:
        missing = RunDirError(f"{self}: not a noisetune run directory (no {SPEC_FILE})")
        if self.is_local:
            spec_file = self.location.local_path / SPEC_FILE
            if not spec_file.exists():
                raise missing
            return load_spec(spec_file)
        if not self.location.exists(SPEC_FILE):
            raise missing
        with tempfile.TemporaryDirectory(prefix="noisetune-") as tmp:
            spec_file = Path(tmp) / SPEC_FILE
            spec_file.write_bytes(self.location.read_bytes(SPEC_FILE))
            return load_spec(spec_file)

    def start(self, spec_text: str) -> None:
        """Make the run's workdir afresh and write the spec copy there (and, for a URI,
        at the URI: a killed sweep is resumed from what is there)."""
        if not self.is_local:
            clear(self.workdir)  # left by an earlier run at this URI, which is gone
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / SPEC_FILE).write_text(spec_text)
        if not self.is_local:
            self.location.write_bytes(SPEC_FILE, (self.workdir / SPEC_FILE).read_bytes())

    def stage_decisions(self) -> None:
        """Bring a remote run's decisions.jsonl into the workdir, where the restored
        scheduler appends to it; a longer local copy (left by a killed driver on this
        machine) is newer and stays."""
        if self.is_local:
            return
        rel = f"{RESULTS_DIR}/{DECISIONS_FILE}"
        local = self.workdir / rel
        if not self.location.exists(rel):
            return
        remote = self.location.read_bytes(rel)
        if not local.exists() or local.stat().st_size < len(remote):
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(remote)

    def pull_tune_files(self) -> None:
        """Bring what Tune recorded at a URI (and the pruning reasons) into the workdir."""
        if self.is_local:
            return
        self.stage_decisions()
        self.location.download(self.workdir, _tune_files)

    def publish_results(self, out: Path, finished: bool) -> None:
        """Upload a remote run's results/ from the workdir; once the sweep is finished,
        what a resume would need is at the URI, and the staging copy goes."""
        if self.is_local:
            return
        self.location.upload(out, RESULTS_DIR)
        if finished:
            clear(self.workdir)
