"""The workload contract (DESIGN.md §3) and how a spec's `workload` string is resolved."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
MetricsFn = Callable[[torch.nn.Module], Mapping[str, float]]
EvalLossFn = Callable[[torch.nn.Module], float]

# Built-in workloads by name; values are "module:function" like a user's own.
BUILTIN_WORKLOADS: dict[str, str] = {
    "linear_regression": "trainables.workloads.linear_regression:build",
    "teacher_mlp": "trainables.workloads.teacher_mlp:build",
    "char_transformer": "trainables.workloads.char_transformer:build",
    "digits_cnn": "trainables.workloads.digits_cnn:build",
}


@dataclass
class Workload:
    """What a workload's `build(args)` returns.

    model:      the network to train (moved to the trial's device by the loop).
    train_data: a map-style dataset, whose batches are drawn i.i.d. uniformly with
                replacement; or a streaming IterableDataset (no len), read in its own
                order (trainables.parts.data_sources).
    loss:       loss(model, batch) -> mean loss over the batch (a scalar tensor).
    eval_data:  optional map-style dataset; the reported `loss` is the mean loss over it.
    metrics:    optional metrics(model) -> {name: float}, reported at every evaluation.
    eval_loss:  optional eval_loss(model) -> the mean loss over eval_data in closed form;
                when given, the loop reports it instead of computing that mean (a workload
                with a known population loss saves an O(n) pass per evaluation).
    """

    model: torch.nn.Module
    train_data: Dataset[Any]
    loss: LossFn
    eval_data: Dataset[Any] | None = None
    metrics: MetricsFn | None = None
    eval_loss: EvalLossFn | None = None


class WorkloadError(ValueError):
    """A workload reference that cannot be resolved (bad name, module or function)."""


def workload_target(reference: str) -> str:
    """The "module:function" string a spec's `workload` field stands for."""
    if reference in BUILTIN_WORKLOADS:
        return BUILTIN_WORKLOADS[reference]
    if ":" not in reference:
        known = ", ".join(sorted(BUILTIN_WORKLOADS))
        raise WorkloadError(
            f"unknown workload {reference!r}: use a built-in name ({known}) "
            "or 'package.module:function'"
        )
    return reference


def resolve_workload(reference: str) -> Callable[[dict[str, Any]], Workload]:
    """Import the `build` function a workload reference names.

    The current directory is importable, as with `python -m`, so a user's
    `my_workload.py` next to the spec works locally and in a Ray Jobs working_dir.
    """
    module_name, _, function_name = workload_target(reference).partition(":")
    if not module_name or not function_name:
        raise WorkloadError(f"workload {reference!r} must look like 'package.module:function'")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's module, reported in one line
        raise WorkloadError(
            f"cannot import workload module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    build = getattr(module, function_name, None)
    if not callable(build):
        raise WorkloadError(f"module {module_name!r} has no function {function_name!r}")
    return build


def build_workload(reference: str, args: Mapping[str, Any], seed: int = 0) -> Workload:
    """Resolve and call a workload's build function under `torch.manual_seed(seed)` (the
    training seed: what the build draws from torch's global generator, typically the
    model's initialisation, differs between seeds; the caller's RNG is left as it was),
    checking what it returns."""
    build = resolve_workload(reference)
    with torch.random.fork_rng():  # every visible device's RNG too: manual_seed sets them
        torch.manual_seed(seed)
        workload = build(dict(args))
    if not isinstance(workload, Workload):
        raise WorkloadError(
            f"workload {reference!r} returned {type(workload).__name__}, "
            "expected trainables.Workload"
        )
    return workload


# The workloads a process built last, as built (their models never trained), by
# (reference, canonical args, seed), oldest first: a sweep's trials share one workload per
# training seed, and a reused actor runs the seeds of a sweep in turn.
_BUILT: OrderedDict[tuple[str, str, int], Workload] = OrderedDict()
CACHED_BUILDS = 4


def cached_workload(reference: str, args: Mapping[str, Any], seed: int = 0) -> Workload:
    """`build_workload(reference, args, seed)`, built once per process and reused.

    A reused Tune actor runs trial after trial of one sweep, and building a workload can
    cost more than a short trial (about 0.45 s for teacher_mlp). Each call returns a
    fresh deep copy of the model as built; the data, `loss` and `metrics` are shared by
    the trials of the process (read-only in the loop). The last CACHED_BUILDS builds are
    kept (one per seed of a sweep with several). A build that fails is not cached.
    """
    key = (reference, json.dumps(dict(args), sort_keys=True, default=repr), seed)
    built = _BUILT.get(key)
    if built is None:
        if not any(k[:2] == key[:2] for k in _BUILT):
            _BUILT.clear()  # another sweep's workloads: release them before building
        while len(_BUILT) >= CACHED_BUILDS:
            _BUILT.popitem(last=False)
        built = build_workload(reference, args, seed)
        _BUILT[key] = built
    _BUILT.move_to_end(key)
    return dataclasses.replace(built, model=copy.deepcopy(built.model))
