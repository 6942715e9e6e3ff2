"""The sweep spec: valid specs parse, every rule has a malformed case naming its field."""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import search_spaces
from tuner.config.spec import (
    Choice,
    IntUniform,
    LogUniform,
    Spec,
    SpecError,
    Uniform,
    load_spec,
    parse_spec,
)

ROOT = Path(__file__).resolve().parents[1]
SPECS = Path(__file__).resolve().parent / "specs"
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
DELETE = object()

BASE: dict[str, Any] = {
    "name": "base",
    "workload": "linear_regression",
    "target": {"metric": "loss", "value": 0.3},
    "budget": {"max_steps": 100},
    "space": {"batch_size": [16, 64], "lr": {"log_uniform": [0.01, 1.0]}},
}


def with_(*changes: tuple[str, Any]) -> dict[str, Any]:
    """BASE with ("a.b.c", value) changes applied; value DELETE removes the key."""
    data = copy.deepcopy(BASE)
    for path, value in changes:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def problems_of(data: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    check_lines(info.value.problems)
    return info.value.problems


def check_lines(problems: list[str]) -> None:
    assert problems
    for line in problems:
        assert "\n" not in line and "Traceback" not in line, line
        assert ": " in line, line


def assert_reported(problems: list[str], field: str, text: str) -> None:
    hits = [p for p in problems if p.startswith(f"{field}: ")]
    assert hits, f"no problem at {field!r} in {problems}"
    assert any(text in p for p in hits), f"{text!r} not in {hits}"


# --- valid specs -----------------------------------------------------------------------------


def test_quickstart_parses() -> None:
    spec = load_spec(QUICKSTART)
    assert isinstance(spec, Spec)
    assert QUICKSTART.read_text().startswith("# noisetune run examples/quickstart.yaml\n")
    assert spec.name == "quickstart"
    assert spec.workload == "linear_regression"
    assert spec.workload_args == {"dim": 100, "noise": 1.0}
    assert (spec.target.metric, spec.target.value) == ("loss", 0.529)
    assert spec.budget.max_steps == 1500 and spec.budget.max_examples is None
    assert spec.eval_every == 5
    assert spec.space.batch_size == Choice(choice=(16, 64, 256, 1024))
    assert spec.space.lr.points() == (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)
    assert spec.space.momentum.points() == (0.0,)
    assert (spec.search.algorithm, spec.search.num_samples) == ("grid", 1)
    assert (spec.search.max_concurrent, spec.search.seed) == (2, 0)


@pytest.mark.parametrize("mode", ["measured", "calibrated"])
def test_eps_opt_modes_that_need_curvature_say_so(mode: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "pruning": {"kind": "eps_opt", "mode": mode}})
    assert_reported(err.value.problems, "pruning.mode", "curvature_every")
    ok = {**BASE, "pruning": {"kind": "eps_opt", "mode": mode}, "measure": {"curvature_every": 10}}
    assert parse_spec(ok).pruning.mode == mode


def test_user_workload_example_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(QUICKSTART.parent.parent)  # the example is resolved from the repo root
    spec = load_spec(QUICKSTART.parent / "my_workload.yaml")
    assert spec.workload == "examples.my_workload:build"


def test_defaults() -> None:
    spec = parse_spec(BASE)
    assert spec.workload_args == {}
    assert spec.eval_every == 20
    assert spec.space.momentum == Choice(choice=(0.0,))
    assert spec.space.warmup_steps == Choice(choice=(0,))
    assert spec.optimizer == "sgd"
    assert spec.search.model_dump() == {
        "algorithm": "random",
        "num_samples": 16,
        "max_concurrent": 2,
        "seed": 0,
        "seeds": 1,
    }
    assert spec.target.mode == "min"
    assert spec.stall.model_dump() == {"patience_steps": None, "min_delta": 0.01}
    assert spec.pruning.model_dump() == {
        "kind": "none",
        "tolerance": 4.0,
        "grace_steps": 100,
        "mode": "fitted",
        "base": "fifo",
    }
    assert spec.resources.model_dump() == {
        "workers_per_trial": 1,
        "cpus_per_worker": 1.0,
        "gpus_per_worker": 0.0,
        "max_failures": 0,
        "checkpoint_every": 5,
        "max_micro_batch": None,
    }
    assert spec.measure.model_dump() == {
        "noise_every": 4,
        "method": "auto",
        "per_example_rows": 32,
        "micro_batches": 2,
        "noise_ema": 0.99,
        "curvature_every": 0,
        "precision": "fp32",
    }
    assert spec.storage == "./runs"
    assert parse_spec(with_(("search", {"algorithm": "grid"}))).search.num_samples == 1


def test_full_spec_file() -> None:
    spec = load_spec(SPECS / "good_full.yaml")
    assert spec.space.lr == LogUniform(log_uniform=(0.001, 1.0))  # 1e-3 read as a float
    assert spec.space.momentum == Uniform(uniform=(0.0, 0.95))
    assert spec.space.warmup_steps == IntUniform(int_uniform=(0, 200))
    assert (spec.space.warmup_steps.lo, spec.space.warmup_steps.hi) == (0, 200)
    assert spec.pruning.tolerance == 3.0 and isinstance(spec.pruning.tolerance, float)
    assert spec.pruning.mode == "measured"
    assert spec.resources.cpus_per_worker == 0.5
    assert spec.measure.precision == "bf16"
    assert spec.max_steps_for(16) == 5000 and spec.max_steps_for(1024) == 1953


@pytest.mark.parametrize(
    ("max_steps", "max_examples", "batch_size", "expected"),
    [
        (1000, None, 64, 1000),
        (None, 6400, 64, 100),
        (1000, 6400, 64, 100),
        (50, 6400, 16, 50),
        (None, 10, 64, 1),  # at least one step
    ],
)
def test_max_steps_for(
    max_steps: int | None, max_examples: int | None, batch_size: int, expected: int
) -> None:
    budget = {"max_steps": max_steps, "max_examples": max_examples}
    spec = parse_spec(with_(("budget", {k: v for k, v in budget.items() if v is not None})))
    assert spec.max_steps_for(batch_size) == expected


@pytest.mark.parametrize(
    "source", [QUICKSTART, SPECS / "good_full.yaml", SPECS / "good_preset.yaml"], ids=str
)
def test_round_trip(source: Path) -> None:
    spec = load_spec(source)
    data = spec.to_yaml_dict()
    assert parse_spec(data) == spec
    assert parse_spec(copy.deepcopy(data)).to_yaml_dict() == data
    assert isinstance(data["space"]["batch_size"], list | dict)


def test_round_trip_through_a_yaml_file(tmp_path: Path) -> None:
    """What resume does: save to_yaml_dict() with safe_dump, load it again."""
    spec = load_spec(SPECS / "good_full.yaml")
    saved = tmp_path / "spec.yaml"
    saved.write_text(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    assert load_spec(saved) == spec


def test_spec_is_frozen() -> None:
    spec = parse_spec(BASE)
    with pytest.raises(ValidationError):
        spec.name = "other"


# --- presets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", search_spaces.names())
def test_presets_expand(name: str) -> None:
    spec = parse_spec(with_(("space", name), ("optimizer", "sgd")))
    assert spec.space == parse_spec(with_(("space", search_spaces.get(name)))).space
    assert spec.space.batch_size.points() == tuple(2**k for k in range(4, 13))


def test_preset_contents() -> None:
    assert search_spaces.names() == ["adamw_joint", "sgd_joint", "sgd_lr_grid"]
    joint = search_spaces.get("sgd_joint")
    assert joint["lr"] == {"log_uniform": [1e-3, 4.0]} and joint["momentum"] == [0.0, 0.9]
    grid = search_spaces.get("sgd_lr_grid")["lr"]
    assert len(grid) == 19 and grid[0] == 0.003906 and grid[-1] == 2.0
    assert grid[1] == 0.005524 and grid == sorted(grid)
    spec = load_spec(SPECS / "good_preset.yaml")
    assert spec.search.algorithm == "grid" and spec.space.lr.points() == tuple(grid)


def test_preset_get_is_a_copy_and_unknown_names_list_known() -> None:
    search_spaces.get("sgd_joint")["batch_size"].append(3)
    assert 3 not in search_spaces.get("sgd_joint")["batch_size"]
    with pytest.raises(KeyError, match="sgd_joint"):
        search_spaces.get("nope")


# --- malformed specs: one rule each ----------------------------------------------------------

BAD_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, spec, field the problem names, text in the message)
    ("unknown top key", with_(("unknownkey", 1)), "unknownkey", "unknown key"),
    ("unknown nested key", with_(("search.foo", 1)), "search.foo", "unknown key"),
    (
        "unknown key in a dimension",
        with_(("space.lr", {"log_uniform": [0.01, 1.0], "step": 2})),
        "space.lr.step",
        "unknown key",
    ),
    ("name type", with_(("name", 5)), "name", "valid string"),
    ("name not a dir name", with_(("name", "my run")), "name", "must match"),
    ("name dots", with_(("name", "..")), "name", "directory name"),
    ("workload type", with_(("workload", 3)), "workload", "valid string"),
    ("workload empty", with_(("workload", "")), "workload", "at least 1"),
    ("workload_args type", with_(("workload_args", [1])), "workload_args", "dictionary"),
    ("eval_every str", with_(("eval_every", "20")), "eval_every", "valid integer"),
    ("eval_every zero", with_(("eval_every", 0)), "eval_every", "greater than or equal to 1"),
    ("eval_every float", with_(("eval_every", 2.0)), "eval_every", "valid integer"),
    ("missing target", with_(("target", DELETE)), "target", "required"),
    ("missing target metric", with_(("target.metric", DELETE)), "target.metric", "required"),
    ("empty target metric", with_(("target.metric", "")), "target.metric", "at least 1"),
    ("target value str", with_(("target.value", "0.3")), "target.value", "valid number"),
    ("target value inf", with_(("target.value", float("inf"))), "target.value", "finite"),
    ("missing budget", with_(("budget", DELETE)), "budget", "required"),
    ("budget no fields", with_(("budget", {})), "budget", "give max_steps or max_examples"),
    ("budget steps zero", with_(("budget.max_steps", 0)), "budget.max_steps", "greater than"),
    (
        "budget examples negative",
        with_(("budget", {"max_examples": -10})),
        "budget.max_examples",
        "greater than",
    ),
    ("budget str", with_(("budget.max_steps", "100")), "budget.max_steps", "valid integer"),
    ("missing space", with_(("space", DELETE)), "space", "required"),
    ("space type", with_(("space", 3)), "space", "preset name"),
    ("unknown preset", with_(("space", "nope")), "space", "unknown search space 'nope'"),
    ("missing batch_size", with_(("space.batch_size", DELETE)), "space.batch_size", "required"),
    ("missing lr", with_(("space.lr", DELETE)), "space.lr", "required"),
    ("unknown space key", with_(("space.beta3", [0.99])), "space.beta3", "unknown key"),
    ("beta2 with sgd", with_(("space.beta2", [0.99])), "space.beta2", "beta2 is AdamW's"),
    (
        "weight decay below 0",
        with_(("space.weight_decay", [0.0, -0.1])),
        "space.weight_decay",
        "value -0.1 must be >= 0",
    ),
    (
        "beta2 of 1",
        with_(("optimizer", "adamw"), ("space.momentum", [0.9]), ("space.beta2", [0.95, 1.0])),
        "space.beta2",
        "value 1.0 must be in [0, 1)",
    ),
    (
        "adamw without beta1",
        with_(("optimizer", "adamw")),
        "space.momentum",
        "with optimizer adamw give beta1 as space.momentum",
    ),
    (
        "unknown schedule kind",
        with_(("schedule.kind", "exponential")),
        "schedule.kind",
        "unknown kind 'exponential' (choose from constant, cosine, linear, step, batch_step)",
    ),
    (
        "unknown searched schedule kind",
        with_(("space.schedule", ["cosine", "exponential"])),
        "space.schedule[1]",
        "unknown schedule 'exponential' (choose from constant, cosine, linear, step, batch_step)",
    ),
    (
        "batch_step with a batch factor that is not a whole number",
        with_(("schedule.kind", "batch_step"), ("schedule.decay_factor", 0.3)),
        "schedule.decay_factor",
        "1/decay_factor, which must be a whole number >= 2: 1/0.3 = 3.33333",
    ),
    (
        "batch_step searched with a batch factor below 2",
        with_(("space.schedule", ["step", "batch_step"]), ("schedule.decay_factor", 0.6)),
        "schedule.decay_factor",
        "must be a whole number >= 2: 1/0.6 = 1.66667",
    ),
    (
        "decay factor of 1",
        with_(("schedule.kind", "step"), ("schedule.decay_factor", 1)),
        "schedule.decay_factor",
        "less than 1",
    ),
    (
        "milestones not increasing",
        with_(("schedule.kind", "step"), ("schedule.milestones", [0.75, 0.5])),
        "schedule.milestones",
        "must increase, got 0.75, 0.5",
    ),
    (
        "a repeated milestone",
        with_(("schedule.kind", "batch_step"), ("schedule.milestones", [0.5, 0.5])),
        "schedule.milestones",
        "must increase, got 0.5, 0.5",
    ),
    (
        "a milestone at the horizon",
        with_(("schedule.kind", "batch_step"), ("schedule.milestones", [0.5, 1.0])),
        "schedule.milestones[1]",
        "less than 1",
    ),
    (
        "a milestone at the start",
        with_(("schedule.kind", "step"), ("schedule.milestones", [0])),
        "schedule.milestones[0]",
        "greater than 0",
    ),
    (
        "no milestones",
        with_(("schedule.kind", "step"), ("schedule.milestones", [])),
        "schedule.milestones",
        "give at least one milestone",
    ),
    (
        "final lr fraction above 1",
        with_(("schedule.final_lr_fraction", 1.5)),
        "schedule.final_lr_fraction",
        "less than or equal to 1",
    ),
    (
        "final lr fraction below 0",
        with_(("schedule.final_lr_fraction", -0.1)),
        "schedule.final_lr_fraction",
        "greater than or equal to 0",
    ),
    (
        "eval subset of zero",
        with_(("eval.max_examples", 0)),
        "eval.max_examples",
        "greater than or equal to 1",
    ),
    ("eval batch size text", with_(("eval.batch_size", "big")), "eval.batch_size", "integer"),
    (
        "measured front with adamw",
        with_(
            ("optimizer", "adamw"),
            ("space.momentum", [0.9]),
            ("pruning.kind", "front"),
            ("pruning.mode", "measured"),
        ),
        "pruning.mode",
        "measured is for sgd",
    ),
    (
        "horizon inside the warmup",
        with_(("space.warmup_steps", [0, 50]), ("schedule.horizon_steps", 50)),
        "schedule.horizon_steps",
        "50 is not after the longest warmup (50 steps)",
    ),
    (
        "credentials in the mlflow uri",
        with_(("tracking.mlflow", {"tracking_uri": "https://me:hunter2@mlflow.example"})),
        "tracking.mlflow.tracking_uri",
        "credentials do not go in the spec",
    ),
    (
        "max micro batch zero",
        with_(("resources.max_micro_batch", 0)),
        "resources.max_micro_batch",
        "greater than or equal to 1",
    ),
    (
        "curvature with accumulation",
        with_(("resources.max_micro_batch", 8), ("measure.curvature_every", 10)),
        "measure.curvature_every",
        "not measured with gradient accumulation",
    ),
    (
        "per example on accumulated DDP shares",
        with_(
            ("resources.max_micro_batch", 8),
            ("resources.workers_per_trial", 2),
            ("space.batch_size", [32]),
            ("measure.method", "per_example"),
        ),
        "measure.method",
        "needs each worker's share in one micro-batch",
    ),
    (
        "per example on DDP shares that batch_step grows past the micro-batch",
        with_(
            ("resources.max_micro_batch", 64),
            ("resources.workers_per_trial", 2),
            ("space.batch_size", [32]),
            ("measure.method", "per_example"),
            ("schedule.kind", "batch_step"),
        ),
        "measure.method",
        "batch size(s) 32 are accumulated",
    ),
    (
        "unknown noise method",
        with_(("measure.method", "ghost")),
        "measure.method",
        "unknown method 'ghost' (choose from auto, per_example, micro_batch)",
    ),
    (
        "schedule kind in two places",
        with_(("schedule.kind", "cosine"), ("space.schedule", ["constant", "cosine"])),
        "schedule.kind",
        "give it in one place",
    ),
    ("batch_size zero", with_(("space.batch_size", [0, 16])), "space.batch_size", "value 0"),
    (
        "batch_size range below 1",
        with_(("space.batch_size", {"int_uniform": [0, 64]})),
        "space.batch_size",
        "bound 0 must be an integer >= 1",
    ),
    (
        "batch_size not int",
        with_(("space.batch_size", [16, 64.5])),
        "space.batch_size",
        "value 64.5 must be an integer",
    ),
    (
        "batch_size real range",
        with_(("space.batch_size", {"log_uniform": [16, 1024]})),
        "space.batch_size",
        "log_uniform draws reals",
    ),
    (
        "batch_size bool",
        with_(("space.batch_size", [True, 16])),
        "space.batch_size.choice[0]",
        "expected a number, got True",
    ),
    (
        "lr nan",
        with_(("space.lr", [0.1, float("nan")])),
        "space.lr.choice[1]",
        "expected a finite number, got nan",
    ),
    ("huge int", with_(("space.momentum", [10**400])), "space.momentum", "must be in [0, 1)"),
    (
        "batch_size str",
        with_(("space.batch_size", "big")),
        "space.batch_size",
        "give a list of values",
    ),
    ("empty list", with_(("space.momentum", [])), "space.momentum.choice", "at least one"),
    ("repeated values", with_(("space.batch_size", [16, 16])), "space.batch_size.choice", "16"),
    (
        "momentum 1.0",
        with_(("space.momentum", [0.0, 1.0])),
        "space.momentum",
        "value 1.0 must be in [0, 1)",
    ),
    (
        "momentum -0.1",
        with_(("space.momentum", [-0.1])),
        "space.momentum",
        "value -0.1 must be in [0, 1)",
    ),
    (
        "momentum range to 1",
        with_(("space.momentum", {"uniform": [0.5, 1.0]})),
        "space.momentum",
        "bound 1.0 must be in [0, 1)",
    ),
    (
        "lr bounds reversed",
        with_(("space.lr", {"log_uniform": [1.0, 0.01]})),
        "space.lr.log_uniform",
        "lower bound 1.0 must be below upper bound 0.01",
    ),
    (
        "lr equal bounds",
        with_(("space.lr", {"uniform": [0.1, 0.1]})),
        "space.lr.uniform",
        "must be below",
    ),
    (
        "log bound zero",
        with_(("space.lr", {"log_uniform": [0, 1.0]})),
        "space.lr.log_uniform",
        "must be > 0 for a log scale",
    ),
    (
        "log bound negative",
        with_(("space.lr", {"log_uniform": [-1.0, 1.0]})),
        "space.lr.log_uniform",
        "must be > 0 for a log scale",
    ),
    (
        "log int bound zero",
        with_(("space.warmup_steps", {"log_int_uniform": [0, 100]})),
        "space.warmup_steps.log_int_uniform",
        "must be > 0 for a log scale",
    ),
    (
        "range of three",
        with_(("space.lr", {"uniform": [0.1, 0.2, 0.3]})),
        "space.lr.uniform",
        "exactly two numbers",
    ),
    (
        "range bound str",
        with_(("space.lr", {"uniform": [0.1, "1"]})),
        "space.lr.uniform[1]",
        "expected a number",
    ),
    ("lr zero in list", with_(("space.lr", [0.1, 0.0])), "space.lr", "value 0.0 must be > 0"),
    (
        "lr uniform from 0",
        with_(("space.lr", {"uniform": [0, 1]})),
        "space.lr",
        "bound 0 must be > 0",
    ),
    (
        "lr int range",
        with_(("space.lr", {"int_uniform": [1, 4]})),
        "space.lr",
        "int_uniform draws ints",
    ),
    (
        "unknown dim kind",
        with_(("space.lr", {"loguniform": [0.01, 1.0]})),
        "space.lr",
        "unknown dimension kind 'loguniform'",
    ),
    (
        "two dim kinds",
        with_(("space.lr", {"uniform": [0.1, 1.0], "log_uniform": [0.1, 1.0]})),
        "space.lr",
        "not several",
    ),
    (
        "negative warmup",
        with_(("space.warmup_steps", [-5, 0])),
        "space.warmup_steps",
        "value -5 must be an integer >= 0",
    ),
    (
        "warmup real",
        with_(("space.warmup_steps", [0, 10.5])),
        "space.warmup_steps",
        "must be an integer",
    ),
    (
        "unknown optimizer",
        with_(("optimizer", "adam")),
        "optimizer",
        "unknown optimizer 'adam' (choose from sgd, adamw, sgd_sai)",
    ),
    (
        "sgd_sai misspelt",
        with_(("optimizer", "sgd-sai"), ("space.momentum", [0.9])),
        "optimizer",
        "unknown optimizer 'sgd-sai' (choose from sgd, adamw, sgd_sai)",
    ),
    (
        "sgd_sai without momentum",
        with_(("optimizer", "sgd_sai")),
        "space.momentum",
        "with optimizer sgd_sai give its momentum as space.momentum",
    ),
    (
        "beta2 with sgd_sai",
        with_(("optimizer", "sgd_sai"), ("space.momentum", [0.9]), ("space.beta2", [0.99])),
        "space.beta2",
        "beta2 is AdamW's; optimizer is sgd_sai",
    ),
    (
        "calibrated eps_opt with sgd_sai",
        with_(
            ("optimizer", "sgd_sai"),
            ("space.momentum", [0.9]),
            ("pruning.kind", "eps_opt"),
            ("pruning.mode", "calibrated"),
            ("measure.curvature_every", 4),
        ),
        "pruning.mode",
        "calibrated is for sgd: SGD-SaI's eps_opt(B) law",
    ),
    (
        "measured front with sgd_sai",
        with_(
            ("optimizer", "sgd_sai"),
            ("space.momentum", [0.9]),
            ("pruning.kind", "front"),
            ("pruning.mode", "measured"),
        ),
        "pruning.mode",
        "measured is for sgd",
    ),
    (
        "unknown algorithm",
        with_(("search.algorithm", "bayes")),
        "search.algorithm",
        "unknown algorithm 'bayes' (choose from random, grid, optuna-tpe, optuna-nsga2, "
        "eps-guided)",
    ),
    ("num_samples zero", with_(("search.num_samples", 0)), "search.num_samples", "greater"),
    (
        "max_concurrent zero",
        with_(("search.max_concurrent", 0)),
        "search.max_concurrent",
        "greater",
    ),
    ("seed str", with_(("search.seed", "0")), "search.seed", "valid integer"),
    (
        "unknown pruning kind",
        with_(("pruning.kind", "median")),
        "pruning.kind",
        "unknown kind 'median' (choose from none, front, eps_opt, asha, hyperband)",
    ),
    ("tolerance 1", with_(("pruning.tolerance", 1.0)), "pruning.tolerance", "greater than 1"),
    ("tolerance 0.5", with_(("pruning.tolerance", 0.5)), "pruning.tolerance", "greater than 1"),
    ("grace negative", with_(("pruning.grace_steps", -1)), "pruning.grace_steps", "greater"),
    ("unknown eps mode", with_(("pruning.mode", "guess")), "pruning.mode", "choose from measured"),
    (
        "workers zero",
        with_(("resources.workers_per_trial", 0)),
        "resources.workers_per_trial",
        "greater",
    ),
    ("cpus zero", with_(("resources.cpus_per_worker", 0)), "resources.cpus_per_worker", "greater"),
    (
        "gpus negative",
        with_(("resources.gpus_per_worker", -1)),
        "resources.gpus_per_worker",
        "greater",
    ),
    (
        "max_failures negative",
        with_(("resources.max_failures", -1)),
        "resources.max_failures",
        "greater",
    ),
    ("noise_every negative", with_(("measure.noise_every", -1)), "measure.noise_every", "greater"),
    ("micro_batches 1", with_(("measure.micro_batches", 1)), "measure.micro_batches", "greater"),
    ("noise_ema 1", with_(("measure.noise_ema", 1.0)), "measure.noise_ema", "less than 1"),
    ("noise_ema 0", with_(("measure.noise_ema", 0)), "measure.noise_ema", "greater than 0"),
    (
        "precision fp16",
        with_(("measure.precision", "fp16")),
        "measure.precision",
        "choose from fp32, bf16",
    ),
    ("storage empty", with_(("storage", "")), "storage", "at least 1"),
    (
        "unknown workload name",
        with_(("workload", "nope")),
        "workload",
        "unknown workload 'nope'",
    ),
    (
        "user module missing",
        with_(("workload", "nt_no_such_module_xyz:build")),
        "workload",
        "cannot import workload module 'nt_no_such_module_xyz': ModuleNotFoundError",
    ),
    ("workload no function", with_(("workload", "somemodule:")), "workload", "must look like"),
    (
        "batch size not divisible",
        with_(("resources.workers_per_trial", 4), ("space.batch_size", [16, 30, 64, 10])),
        "space.batch_size",
        "batch size(s) 30, 10 not divisible by resources.workers_per_trial=4",
    ),
    (
        "batch range with workers",
        with_(
            ("resources.workers_per_trial", 2),
            ("space.batch_size", {"log_int_uniform": [16, 1024]}),
        ),
        "space.batch_size",
        "give a list of batch sizes",
    ),
    (
        "measured eps_opt with adamw",
        with_(
            ("optimizer", "adamw"),
            ("pruning.kind", "eps_opt"),
            ("pruning.mode", "measured"),
            ("measure.curvature_every", 4),
        ),
        "pruning.mode",
        "measured is for sgd",
    ),
    (
        "grid without a categorical dimension",
        with_(
            ("search.algorithm", "grid"),
            ("space.batch_size", {"int_uniform": [16, 64]}),
            ("space.momentum", {"uniform": [0.0, 0.5]}),
            ("space.warmup_steps", {"int_uniform": [0, 10]}),
        ),
        "search.algorithm",
        "grid needs at least one categorical dimension",
    ),
    ("target mode", with_(("target.mode", "higher")), "target.mode", "choose from min, max"),
    ("target a report key", with_(("target.metric", "step")), "target.metric", "reports itself"),
    (
        "every bad value of a list",
        with_(("space.batch_size", [0, -4, 16])),
        "space.batch_size",
        "values 0, -4 must be an integer >= 1",
    ),
    ("stall patience", with_(("stall.patience_steps", -1)), "stall.patience_steps", "0"),
    ("stall min_delta", with_(("stall.min_delta", 1.5)), "stall.min_delta", "less than 1"),
    ("seeds zero", with_(("search.seeds", 0)), "search.seeds", "greater than or equal to 1"),
    (
        "repeats of an all-list grid",
        with_(
            ("search.algorithm", "grid"),
            ("search.num_samples", 3),
            ("space.lr", [0.1, 0.2]),
        ),
        "search.num_samples",
        "use search.seeds: 3",
    ),
    (
        "seeds under optuna",
        with_(("search.algorithm", "optuna-tpe"), ("search.seeds", 3)),
        "search.seeds",
        "grid and random",
    ),
]


@pytest.mark.parametrize(
    ("data", "field", "text"), [case[1:] for case in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_malformed(data: dict[str, Any], field: str, text: str) -> None:
    assert_reported(problems_of(data), field, text)


def test_measured_eps_opt_adamw_line_is_exact() -> None:
    problems = load_problems(SPECS / "bad_measured_adamw.yaml")
    assert problems == [
        "pruning.mode: measured is for sgd: Adam's eps_opt(B) law has no measured eps_max "
        "(its B_noise is fitted from the steps to the target): use fitted"
    ]


def test_the_recipe_s_fixed_values_are_stated_not_implied() -> None:
    """What the space does not search is fixed for the sweep and written down: no weight
    decay unless asked, AdamW's beta2 0.999, the schedule's kind."""
    sgd = parse_spec(BASE)
    assert sgd.fixed_hyperparameters() == {"weight_decay": 0.0, "schedule": "constant"}
    assert list(sgd.space.dimensions()) == ["batch_size", "lr", "momentum", "warmup_steps"]
    adamw = parse_spec(
        with_(
            ("optimizer", "adamw"),
            ("space.momentum", [0.9]),
            ("space.weight_decay", [0.0, 0.1]),
            ("schedule.kind", "cosine"),
        )
    )
    assert adamw.fixed_hyperparameters() == {"schedule": "cosine", "beta2": 0.999}
    assert list(adamw.space.dimensions())[-1] == "weight_decay"
    searched = parse_spec(with_(("space.schedule", ["constant", "linear"])))
    assert searched.space.dimensions()["schedule"].points() == ("constant", "linear")
    assert "schedule" not in searched.fixed_hyperparameters()
    assert parse_spec(searched.to_yaml_dict()) == searched


def test_step_and_batch_step_schedules_are_accepted_and_round_trip() -> None:
    """`step` and `batch_step`, fixed or searched side by side, with their defaults
    (Smith et al.'s factor 0.2 at half and three quarters of the horizon) or given;
    the sweep's trials are told them."""
    from tuner.config.trial_settings import trial_settings

    for kind in ("step", "batch_step"):
        spec = parse_spec(with_(("schedule.kind", kind)))
        assert (spec.schedule.decay_factor, spec.schedule.milestones) == (0.2, (0.5, 0.75))
        assert spec.fixed_hyperparameters()["schedule"] == kind
    searched = parse_spec(
        with_(
            ("space.schedule", ["step", "batch_step"]),
            ("schedule.decay_factor", 0.5),
            ("schedule.milestones", [0.3, 0.6, 0.8]),
        )
    )
    assert searched.space.dimensions()["schedule"].points() == ("step", "batch_step")
    assert parse_spec(searched.to_yaml_dict()) == searched
    told = trial_settings(searched, "")
    assert (told.decay_factor, told.milestones) == (0.5, (0.3, 0.6, 0.8))
    # 1/0.25 = 4 and 1/0.1 (a float a rounding error off 10) are whole numbers; step
    # takes any factor in (0, 1).
    parse_spec(with_(("schedule.kind", "batch_step"), ("schedule.decay_factor", 0.25)))
    parse_spec(with_(("schedule.kind", "batch_step"), ("schedule.decay_factor", 0.1)))
    parse_spec(with_(("schedule.kind", "step"), ("schedule.decay_factor", 0.3)))
    parse_spec(with_(("schedule.kind", "step"), ("schedule.milestones", [0.9])))
    # Each worker's share of the grown batch still fits one micro-batch: fine.
    parse_spec(
        with_(
            ("resources.max_micro_batch", 400),
            ("resources.workers_per_trial", 2),
            ("space.batch_size", [32]),
            ("measure.method", "per_example"),
            ("schedule.kind", "batch_step"),
        )
    )


def test_schedule_kinds_are_the_loop_s() -> None:
    from typing import get_args

    from trainables.parts.schedule import SCHEDULE_KINDS
    from tuner.config.spec import ScheduleKind

    assert get_args(ScheduleKind) == SCHEDULE_KINDS


def test_valid_variants_pass() -> None:
    """Near misses of the rules above that are fine."""
    parse_spec(with_(("resources.workers_per_trial", 4), ("space.batch_size", [16, 64])))
    adamw = (("optimizer", "adamw"), ("space.momentum", [0.9]))
    parse_spec(with_(*adamw, ("pruning.kind", "asha")))
    parse_spec(with_(*adamw, ("pruning.kind", "eps_opt")))  # fitted
    parse_spec(with_(*adamw, ("pruning.kind", "front")))
    parse_spec(with_(*adamw, ("space.beta2", [0.95, 0.999]), ("space.weight_decay", [0, 0.1])))
    sgd_sai = (("optimizer", "sgd_sai"), ("space.momentum", [0.0, 0.9]))
    assert parse_spec(with_(*sgd_sai)).optimizer == "sgd_sai"
    parse_spec(with_(*sgd_sai, ("pruning.kind", "eps_opt")))  # fitted
    parse_spec(with_(*sgd_sai, ("pruning.kind", "asha"), ("space.weight_decay", [0, 0.01])))
    assert "beta2" not in parse_spec(with_(*sgd_sai)).fixed_hyperparameters()
    parse_spec(with_(("space.schedule", ["constant", "cosine"]), ("schedule.final_lr_fraction", 1)))
    parse_spec(with_(("space.momentum", [0, 0.99]), ("space.lr", {"choice": [1, 0.5]})))
    parse_spec(with_(("space.batch_size", {"log_int_uniform": [16, 4096]})))
    parse_spec(with_(("target.value", 1), ("pruning.tolerance", 2)))  # ints where floats go


# --- problems from files ---------------------------------------------------------------------


def load_problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    check_lines(info.value.problems)
    return info.value.problems


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("bad_yaml_syntax.yaml", "bad_yaml_syntax.yaml: YAML syntax error at line 3: "),
        ("bad_empty.yaml", "bad_empty.yaml: empty spec"),
        ("bad_top_list.yaml", "bad_top_list.yaml: the top level must be a mapping"),
        ("bad_top_scalar.yaml", "bad_top_scalar.yaml: the top level must be a mapping"),
        ("bad_duplicate_key.yaml", "bad_duplicate_key.yaml: YAML error at line 8: duplicate key"),
        ("no_such_file.yaml", "no_such_file.yaml: no such file"),
    ],
)
def test_file_level_problems(filename: str, expected: str) -> None:
    problems = load_problems(SPECS / filename)
    assert len(problems) == 1
    assert problems[0].startswith(str(SPECS / filename) + ":")
    assert expected in problems[0]


def test_directory_is_not_a_spec() -> None:
    assert "is a directory" in load_problems(SPECS)[0]


def test_empty_data() -> None:
    assert problems_of(None) == ["<spec>: empty spec"]


def test_three_problems_all_reported() -> None:
    problems = load_problems(SPECS / "bad_three_problems.yaml")
    assert len(problems) == 3
    assert_reported(problems, "eval_every", "greater than or equal to 1")
    assert_reported(problems, "space.momentum", "value 1.2 must be in [0, 1)")
    assert_reported(problems, "search.algorithm", "unknown algorithm 'bayes'")


def test_unknown_keys_file() -> None:
    problems = load_problems(SPECS / "bad_unknown_keys.yaml")
    assert sorted(problems) == [
        "pruning.grace: unknown key (did you mean 'grace_steps'?)",
        "serch: unknown key (did you mean 'search'?)",
    ]


def test_spec_error_str_is_the_problem_lines() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(with_(("eval_every", 0), ("storage", "")))
    assert str(info.value) == "\n".join(info.value.problems)
    assert len(info.value.problems) == 2


# --- user workloads --------------------------------------------------------------------------


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary current directory whose modules are importable, cleaned up afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("nt_user_"):
            del sys.modules[name]


@pytest.mark.parametrize(
    ("source", "reference", "text"),
    [
        ("def build(args):\n    return None\n", "nt_user_ok:build", None),
        ("def other(args):\n    return None\n", "nt_user_nofn:build", "has no function 'build'"),
        ("build = 3\n", "nt_user_notcallable:build", "has no function 'build'"),
        (
            "raise RuntimeError('boom\\nsecond line')\n",
            "nt_user_raises:build",
            "cannot import workload module 'nt_user_raises': RuntimeError: boom second line",
        ),
        ("def build(:\n", "nt_user_syntax:build", "SyntaxError"),
        ("", "nt_user_missing_mod:build", "ModuleNotFoundError"),
    ],
    ids=["ok", "no function", "not callable", "raises", "syntax error", "missing module"],
)
def test_user_workload(user_dir: Path, source: str, reference: str, text: str | None) -> None:
    module = reference.partition(":")[0]
    if source:
        (user_dir / f"{module}.py").write_text(source)
    importlib.invalidate_caches()
    data = with_(("workload", reference))
    if text is None:
        assert parse_spec(data).workload == reference
    else:
        assert_reported(problems_of(data), "workload", text)


def test_user_workload_problem_collected_with_others(user_dir: Path) -> None:
    problems = problems_of(with_(("workload", "nt_user_absent:build"), ("eval_every", -1)))
    assert [p.split(":")[0] for p in problems] == ["workload", "eval_every"]


def test_grid_counts_repeats() -> None:
    spec = parse_spec(with_(("search", {"algorithm": "grid", "num_samples": 3})))
    assert spec.search.num_samples == 3


def test_dimension_helpers() -> None:
    spec = load_spec(SPECS / "good_full.yaml")
    dims = spec.space.dimensions()
    assert list(dims) == ["batch_size", "lr", "momentum", "warmup_steps"]
    assert [d.kind for d in dims.values()] == ["choice", "log_uniform", "uniform", "int_uniform"]
    assert [d.categorical for d in dims.values()] == [True, False, False, False]
    assert dims["batch_size"].is_integer() and not dims["lr"].is_integer()
    assert spec.to_yaml_dict()["space"]["batch_size"] == [16, 32, 64, 128]


def test_checkpoint_every_reaches_the_trials(tmp_path: Path) -> None:
    from tuner.config.trial_settings import trial_settings

    every_two = with_(("resources.checkpoint_every", 2))
    assert trial_settings(parse_spec(every_two), tmp_path).checkpoint_every == 2
    assert trial_settings(parse_spec(with_()), tmp_path).checkpoint_every == 5


def test_target_mode_and_seeds_reach_the_trials(tmp_path: Path) -> None:
    from tuner.config.trial_settings import trial_settings

    data = with_(("target", {"metric": "accuracy", "value": 0.9, "mode": "max"}))
    data = {**data, "search": {"seeds": 3}, "stall": {"patience_steps": 50}}
    settings = trial_settings(parse_spec(data), tmp_path)
    assert (settings.target_mode, settings.patience_steps) == ("max", 50)
    assert str(settings.target) == "accuracy >= 0.9"


def test_the_readme_spec_example_is_valid() -> None:
    """README's full spec example must parse as it is written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The spec", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse_spec(yaml.safe_load(block))
    assert spec.pruning.kind == "eps_opt" and spec.target.mode == "min"
