"""The sweep spec: YAML -> frozen pydantic models, with every problem collected.

`load_spec(path)` reads and validates a YAML file, `parse_spec(data)` validates an already
parsed mapping. Both raise `SpecError`, whose `problems` are one line each, of the form
"<field.path>: <message>". Format and defaults: DESIGN.md §3 and examples/quickstart.yaml.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

import search_spaces
from trainables.settings import DEFAULT_DECAY, DEFAULT_MILESTONES, step_budget

DIM_KINDS: tuple[str, ...] = ("choice", "uniform", "log_uniform", "int_uniform", "log_int_uniform")
RANGE_KINDS: tuple[str, ...] = DIM_KINDS[1:]
NAME_PATTERN = r"^[A-Za-z0-9._-]+$"


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a run directory (one level under the storage), else None."""
    if not re.match(NAME_PATTERN, name):
        return f"{name!r} must match {NAME_PATTERN.strip('^$')} (it becomes a directory name)"
    if set(name) == {"."}:
        return f"{name!r} is not a usable directory name"
    return None


class SpecError(Exception):
    """An invalid spec; `problems` holds one line per problem ("<field.path>: <message>")."""

    def __init__(self, problems: list[str], source: str = "<spec>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))


# --- scalar types -----------------------------------------------------------------------


def _number(value: Any) -> float | int:
    """A finite int or float, never a bool or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError(
            "number_type", "expected a number, got {value}", {"value": _short(value)}
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError(
            "number_finite", "expected a finite number, got {value}", {"value": _short(value)}
        )
    return value


Number = Annotated[float | int, PlainValidator(_number)]
Real = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # an int is accepted too
PosInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
NonEmptyStr = Annotated[str, Field(strict=True, min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- dimensions of the search space --------------------------------------------------------


class _Dim(_Model):
    """A dimension of the search space; `points()` lists what the value checks look at."""

    kind: ClassVar[str]
    categorical: ClassVar[bool]

    def points(self) -> tuple[float | int, ...]:
        """Every value of a categorical dimension, or the two bounds of a range."""
        raise NotImplementedError

    def is_integer(self) -> bool:
        """Whether every value this dimension can take is an int."""
        return all(isinstance(v, int) for v in self.points())


class Choice(_Dim):
    """Categorical: `[a, b, ...]` or `{choice: [a, b, ...]}`; written back as a plain list."""

    kind: ClassVar[str] = "choice"
    categorical: ClassVar[bool] = True
    choice: tuple[Number, ...]

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        return {"choice": data} if isinstance(data, (list, tuple)) else data

    @field_validator("choice", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and not value:
            raise ValueError("give at least one value")
        return value

    @field_validator("choice")
    @classmethod
    def _distinct(cls, values: tuple[float | int, ...]) -> tuple[float | int, ...]:
        repeated = sorted({v for i, v in enumerate(values) if v in values[:i]})
        if repeated:
            raise ValueError(f"repeated value(s) {', '.join(map(str, repeated))}")
        return values

    @model_serializer
    def _as_list(self) -> list[float | int]:
        return list(self.choice)

    def points(self) -> tuple[float | int, ...]:
        """The values."""
        return self.choice


class _Range(_Dim):
    """`{kind: [lo, hi]}` with lo < hi (lo > 0 for log kinds); int ranges include hi."""

    categorical: ClassVar[bool] = False

    @field_validator(*RANGE_KINDS, mode="before", check_fields=False)
    @classmethod
    def _two_numbers(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"give exactly two numbers [lo, hi], got {_short(value)}")
        return value

    @field_validator(*RANGE_KINDS, check_fields=False)
    @classmethod
    def _ordered(cls, pair: tuple[Any, Any], info: ValidationInfo) -> tuple[Any, Any]:
        lo, hi = pair
        if not lo < hi:
            raise ValueError(f"lower bound {lo} must be below upper bound {hi}")
        if str(info.field_name).startswith("log_") and lo <= 0:
            raise ValueError(f"lower bound {lo} must be > 0 for a log scale")
        return pair

    def points(self) -> tuple[float | int, ...]:
        """The bounds (lo, hi)."""
        return tuple(getattr(self, self.kind))

    @property
    def lo(self) -> float | int:
        """Lower bound."""
        return self.points()[0]

    @property
    def hi(self) -> float | int:
        """Upper bound (inclusive for the int kinds)."""
        return self.points()[1]


class Uniform(_Range):
    """`{uniform: [lo, hi]}`: a real drawn uniformly."""

    kind: ClassVar[str] = "uniform"
    uniform: tuple[Number, Number]


class LogUniform(_Range):
    """`{log_uniform: [lo, hi]}`: a real drawn uniformly in log space."""

    kind: ClassVar[str] = "log_uniform"
    log_uniform: tuple[Number, Number]


class IntUniform(_Range):
    """`{int_uniform: [lo, hi]}`: an int drawn uniformly from lo..hi inclusive."""

    kind: ClassVar[str] = "int_uniform"
    int_uniform: tuple[Annotated[int, Field(strict=True)], Annotated[int, Field(strict=True)]]


class LogIntUniform(_Range):
    """`{log_int_uniform: [lo, hi]}`: an int from lo..hi inclusive, uniform in log space."""

    kind: ClassVar[str] = "log_int_uniform"
    log_int_uniform: tuple[Annotated[int, Field(strict=True)], Annotated[int, Field(strict=True)]]


DimModel = Choice | Uniform | LogUniform | IntUniform | LogIntUniform


def _dim_shape(value: Any) -> Any:
    """A list, or a mapping with exactly one dimension kind among its keys."""
    if isinstance(value, (_Dim, list, tuple)):
        return value
    kinds = ", ".join(DIM_KINDS)
    if isinstance(value, Mapping):
        found = [k for k in value if k in DIM_KINDS]
        if len(found) == 1:
            return value
        if found:
            raise PydanticCustomError(
                "dim_kind", "give one of {found}, not several", {"found": ", ".join(found)}
            )
        if not value:
            raise PydanticCustomError(
                "dim_kind", "empty mapping: give a list or one of {kinds}", {"kinds": kinds}
            )
        raise PydanticCustomError(
            "dim_kind",
            "unknown dimension kind {keys} (choose from {kinds}, or give a list)",
            {"keys": ", ".join(repr(k) for k in value), "kinds": kinds},
        )
    raise PydanticCustomError(
        "dim_kind",
        "give a list of values or a mapping like {example}, got {value}",
        {"example": "{log_uniform: [lo, hi]}", "value": _short(value)},
    )


def _dim_tag(value: Any) -> str | None:
    if isinstance(value, _Dim):
        return value.kind
    if isinstance(value, (list, tuple)):
        return "choice"
    if isinstance(value, Mapping):
        return next((k for k in value if k in DIM_KINDS), None)
    return None


Dim = Annotated[
    Annotated[Choice, Tag("choice")]
    | Annotated[Uniform, Tag("uniform")]
    | Annotated[LogUniform, Tag("log_uniform")]
    | Annotated[IntUniform, Tag("int_uniform")]
    | Annotated[LogIntUniform, Tag("log_int_uniform")],
    Discriminator(_dim_tag),
    BeforeValidator(_dim_shape),
]


def _check_dim(dim: DimModel, integer: bool, ok: Callable[[float | int], bool], rule: str) -> None:
    """Raise ValueError if `dim` is of the wrong numeric kind or has a value breaking `rule`."""
    if integer and dim.kind in ("uniform", "log_uniform"):
        raise ValueError(
            f"{dim.kind} draws reals; use a list of ints, int_uniform or log_int_uniform"
        )
    if not integer and dim.kind in ("int_uniform", "log_int_uniform"):
        raise ValueError(f"{dim.kind} draws ints; use a list, uniform or log_uniform")
    what = "value" if dim.categorical else "bound"
    not_integer = [v for v in dim.points() if integer and not isinstance(v, int)]
    if not_integer:
        raise ValueError(f"{_listed(what, not_integer)} must be an integer")
    breaking = [v for v in dim.points() if not ok(v)]
    if breaking:
        raise ValueError(f"{_listed(what, breaking)} must be {rule}")


def _listed(what: str, values: list[float | int]) -> str:
    """ "value 0", "values 0, -4": every offending value at once."""
    plural = "s" if len(values) > 1 else ""
    return f"{what}{plural} {', '.join(map(str, values))}"


ScheduleKind = Literal[
    "constant", "cosine", "linear", "step", "batch_step"
]  # trainables.parts.schedule


class ScheduleChoice(_Model):
    """`space.schedule: [constant, cosine]`: the lr schedule kind as a categorical
    dimension (its parameters are the spec's `schedule` section)."""

    kind: ClassVar[str] = "choice"
    categorical: ClassVar[bool] = True
    choice: tuple[ScheduleKind, ...]

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"choice": [data]}
        return {"choice": data} if isinstance(data, (list, tuple)) else data

    @field_validator("choice", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and not value:
            raise ValueError("give at least one schedule kind")
        return value

    @field_validator("choice")
    @classmethod
    def _distinct(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(values)) < len(values):
            raise ValueError("repeated schedule kind")
        return values

    @model_serializer
    def _as_list(self) -> list[str]:
        return list(self.choice)

    def points(self) -> tuple[str, ...]:
        """The kinds."""
        return self.choice


class Space(_Model):
    """The joint space over batch size, learning rate, momentum and warmup steps, and, when
    given, weight decay, AdamW's β2 and the lr schedule kind."""

    batch_size: Dim
    lr: Dim
    momentum: Dim = Choice(choice=(0.0,))
    warmup_steps: Dim = Choice(choice=(0,))
    weight_decay: Dim | None = None  # default: 0 (no weight decay)
    beta2: Dim | None = None  # adamw only; default 0.999
    schedule: ScheduleChoice | None = None  # default: `schedule.kind`

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, dim: DimModel) -> DimModel:
        _check_dim(dim, True, lambda v: v >= 1, "an integer >= 1")
        return dim

    @field_validator("lr")
    @classmethod
    def _lr(cls, dim: DimModel) -> DimModel:
        _check_dim(dim, False, lambda v: v > 0, "> 0")
        return dim

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, dim: DimModel) -> DimModel:
        _check_dim(dim, False, lambda v: 0 <= v < 1, "in [0, 1)")
        return dim

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_steps(cls, dim: DimModel) -> DimModel:
        _check_dim(dim, True, lambda v: v >= 0, "an integer >= 0")
        return dim

    @field_validator("weight_decay")
    @classmethod
    def _weight_decay(cls, dim: DimModel | None) -> DimModel | None:
        if dim is not None:
            _check_dim(dim, False, lambda v: v >= 0, ">= 0")
        return dim

    @field_validator("beta2")
    @classmethod
    def _beta2(cls, dim: DimModel | None) -> DimModel | None:
        if dim is not None:
            _check_dim(dim, False, lambda v: 0 <= v < 1, "in [0, 1)")
        return dim

    def dimensions(self) -> dict[str, Any]:
        """The dimensions searched, by hyperparameter name, in a fixed order: the four
        always, then weight_decay, beta2 and schedule where the space gives them."""
        dims: dict[str, Any] = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "momentum": self.momentum,
            "warmup_steps": self.warmup_steps,
        }
        optional = {"weight_decay": self.weight_decay, "beta2": self.beta2}
        dims.update({name: dim for name, dim in optional.items() if dim is not None})
        if self.schedule is not None:
            dims["schedule"] = self.schedule
        return dims


# --- the other sections ---------------------------------------------------------------------


class Target(_Model):
    """The target: `metric` must reach `value`, falling to it (mode min, the default:
    lower is better) or rising to it (mode max: higher is better, e.g. an accuracy)."""

    metric: NonEmptyStr
    value: Real
    mode: Literal["min", "max"] = "min"

    @field_validator("metric")
    @classmethod
    def _a_metric(cls, name: str) -> str:
        from trainables import keys

        if name != keys.LOSS and keys.is_reserved(name):
            raise ValueError(
                f"{name!r} is a key noisetune reports itself, not a metric to reach: use "
                "loss or a metric the workload reports"
            )
        return name


class Budget(_Model):
    """Per-trial budget: `max_steps` and/or `max_examples` (at least one)."""

    max_steps: PosInt | None = None
    max_examples: PosInt | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Budget:
        if self.max_steps is None and self.max_examples is None:
            raise ValueError("give max_steps or max_examples")
        return self

    def max_steps_for(self, batch_size: int) -> int:
        """The step limit at this batch size (trainables.settings.step_budget)."""
        return step_budget(batch_size, self.max_steps, self.max_examples)


class Search(_Model):
    """The search algorithm; num_samples defaults to 1 for grid (repeats of the grid), else 16.

    `seed` seeds the search algorithm only. `seeds` runs every configuration with the
    training seeds 0 … seeds−1 (batches, dropout, the model's initialisation drawn from
    torch's generator), so that the front and B_crit carry seed-to-seed variation.
    """

    algorithm: Literal["random", "grid", "optuna-tpe", "optuna-nsga2", "eps-guided"] = "random"
    num_samples: PosInt = 16
    max_concurrent: PosInt = 2
    seed: NonNegInt = 0
    seeds: PosInt = 1

    @model_validator(mode="before")
    @classmethod
    def _default_num_samples(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "num_samples" not in data:
            return {**data, "num_samples": 1 if data.get("algorithm") == "grid" else 16}
        return data


class Pruning(_Model):
    """Early stopping: none; front (a trial that has used the steps the best trial at its
    batch size needed); eps_opt (front, and lr far from ε_opt(B) by more than `tolerance`,
    by the optimiser's own law: tuner.theory.lr_laws); asha; or hyperband (asynchronous:
    ASHA with 3 brackets)."""

    kind: Literal["none", "front", "eps_opt", "asha", "hyperband"] = "none"
    tolerance: Annotated[Real, Field(gt=1)] = 4.0
    grace_steps: NonNegInt = 100
    mode: Literal["measured", "calibrated", "fitted"] = "fitted"  # eps_opt only
    base: Literal["fifo", "asha"] = "fifo"  # front and eps_opt: the scheduler they wrap


class Data(_Model):
    """How training batches are fetched: in the trial's process (`loader_workers: 0`), or
    by a DataLoader with that many worker processes (for a `__getitem__` that does real
    work), with pinned memory (on CUDA) and `prefetch_factor` batches per worker ahead. A
    streaming IterableDataset is read in order either way."""

    loader_workers: NonNegInt = 0
    pin_memory: bool = False
    prefetch_factor: PosInt = 2


class Eval(_Model):
    """What an evaluation computes the loss over: at most `max_examples` of eval_data (one
    fixed subset for every trial; None: all of it), in forward passes of `batch_size`;
    with several workers each computes its share."""

    max_examples: PosInt | None = None
    batch_size: PosInt = 8192


class MlflowTracking(_Model):
    """MLflow: one run per trial; `tracking_uri` default: an SQLite store in the run
    directory (mlflow.db)."""

    tracking_uri: NonEmptyStr | None = None
    experiment: NonEmptyStr | None = None  # default: the sweep's name

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        from tuner.config.uris import credentials_problem, redact

        if value is not None and credentials_problem(value):
            raise ValueError(
                f"{redact(value)}: credentials do not go in the spec (it is printed and "
                "stored with the run); give them as MLFLOW_TRACKING_USERNAME / "
                "MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN in the environment"
            )
        return value


class WandbTracking(_Model):
    """Weights & Biases: offline by default; online reads WANDB_API_KEY from the
    environment (a key never goes in the spec)."""

    project: NonEmptyStr | None = None  # default: the sweep's name
    mode: Literal["offline", "online"] = "offline"


class Tracking(_Model):
    """Experiment tracking through Ray Tune's logger callbacks (tuner.runtime.tracking);
    everything off by default."""

    tensorboard: bool = False
    mlflow: MlflowTracking | None = None
    wandb: WandbTracking | None = None


class Schedule(_Model):
    """The lr after the warmup: `constant`, or decaying (`cosine`, `linear`) from the
    trial's lr to `final_lr_fraction` of it over `horizon_steps` steps (default: the
    trial's step budget at its batch size), then held there; or `step`: times
    `decay_factor` at each of `milestones` (fractions of the horizon); or `batch_step`:
    the lr kept, the batch size times 1/decay_factor at those milestones, in examples
    (Smith et al. 2018). `space.schedule` searches the kind instead."""

    kind: ScheduleKind = "constant"
    final_lr_fraction: Annotated[Real, Field(ge=0, le=1)] = 0.0
    horizon_steps: PosInt | None = None
    decay_factor: Annotated[Real, Field(gt=0, lt=1)] = DEFAULT_DECAY
    milestones: tuple[Annotated[Real, Field(gt=0, lt=1)], ...] = DEFAULT_MILESTONES

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if not values:
            raise ValueError("give at least one milestone (a fraction of the horizon)")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ValueError(f"must increase, got {', '.join(map(str, values))}")
        return values


class AdaptiveBatchSection(_Model):
    """A batch size that grows while a trial trains, from its measured noise
    (trainables.parts.adaptive_batch): after each measured step, the norm test (b =
    tr Σ/(η²‖g_B‖²), Byrd et al. 2012) or the noise-scale rule (b = `multiple`·B_simple),
    only ever grown, rounded up to a multiple of the trial's batch size, capped at
    `max_batch_size`. rule none (the default): the batch size stays the trial's."""

    rule: Literal["none", "norm_test", "noise_scale"] = "none"
    # The norm test settles where B = B_simple(1/η² − 1): η = 1 never grows (in
    # expectation), η = 0.7 tracks B_simple.
    eta: Annotated[Real, Field(gt=0)] = 0.7
    multiple: Annotated[Real, Field(gt=0)] = 1.0
    max_batch_size: PosInt | None = None
    # No decision before this many measured steps: the first estimates are the noisiest,
    # and a batch size never shrinks back from one of them.
    min_measurements: NonNegInt = 4


class SyncSection(_Model):
    """How often a multi-worker trial's workers synchronise (trainables.steps.LocalSGD):
    period 1 (the default) all-reduces the gradients every step (DDP); period H > 1 is
    local SGD, each worker stepping on its own share and the parameters averaged every H
    steps, after `warmup_steps` steps of all-reduced gradients (post-local SGD, Lin et
    al. 2020). An evaluation between two averages averages the parameters first."""

    period: PosInt = 1
    warmup_steps: NonNegInt = 0


class Stall(_Model):
    """Stop a trial that stopped progressing (status `stalled`): no evaluation improved
    its best target value by `min_delta` of the way from its step-0 value to the target
    within `patience_steps` steps, counted from the end of its warmup. Default patience: a
    quarter of the trial's step budget; 0 turns the rule off."""

    patience_steps: NonNegInt | None = None
    min_delta: Annotated[Real, Field(ge=0, lt=1)] = 0.01


class Resources(_Model):
    """Per-trial resources."""

    workers_per_trial: PosInt = 1
    cpus_per_worker: Annotated[Real, Field(gt=0)] = 1.0
    gpus_per_worker: Annotated[Real, Field(ge=0)] = 0.0
    max_failures: NonNegInt = 0
    checkpoint_every: NonNegInt = 5  # evaluations between a trial's checkpoints; 0 = none
    # The most examples one device computes at once: a larger per-device batch is
    # accumulated over micro-batches of at most this many (one optimiser step per batch).
    max_micro_batch: PosInt | None = None


class Measure(_Model):
    """Noise-scale and curvature measurement (every n steps; 0 = off)."""

    noise_every: NonNegInt = 4
    # How a trial measures: every example's gradient norm by layer hooks, or the batch
    # split into `micro_batches` (several workers: each worker's share, by the DDP hook);
    # auto: per example where the model's layers allow it (trainables.steps).
    method: Literal["auto", "per_example", "micro_batch"] = "auto"
    # per_example: the examples of a measured step whose norms are taken (the first ones of
    # each micro-batch; all of a smaller batch): bounds the cost of layers over sequences.
    per_example_rows: PosInt = 32
    micro_batches: Annotated[int, Field(strict=True, ge=2)] = 2
    noise_ema: Annotated[Real, Field(gt=0, lt=1)] = 0.99
    curvature_every: NonNegInt = 0
    precision: Literal["fp32", "bf16"] = "fp32"


class Spec(_Model):
    """A whole sweep spec."""

    name: Annotated[str, Field(strict=True, pattern=NAME_PATTERN)]
    workload: NonEmptyStr
    workload_args: dict[str, Any] = Field(default_factory=dict)
    target: Target
    budget: Budget
    eval_every: PosInt = 20
    eval: Eval = Field(default_factory=Eval)
    data: Data = Field(default_factory=Data)
    space: Space
    optimizer: Literal["sgd", "adamw", "sgd_sai"] = "sgd"
    search: Search = Field(default_factory=Search)
    pruning: Pruning = Field(default_factory=Pruning)
    resources: Resources = Field(default_factory=Resources)
    measure: Measure = Field(default_factory=Measure)
    stall: Stall = Field(default_factory=Stall)
    schedule: Schedule = Field(default_factory=Schedule)
    adaptive_batch: AdaptiveBatchSection = Field(default_factory=AdaptiveBatchSection)
    sync: SyncSection = Field(default_factory=SyncSection)
    tracking: Tracking = Field(default_factory=Tracking)
    storage: NonEmptyStr = "./runs"  # a directory, or a URI (s3://, gs://, file://)

    @field_validator("name")
    @classmethod
    def _not_dots(cls, value: str) -> str:
        if set(value) == {"."}:
            raise ValueError(f"{value!r} is not a usable directory name")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_form(cls, value: str) -> str:
        from tuner.config.uris import uri_problem

        problem = uri_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("workload")
    @classmethod
    def _resolves(cls, value: str) -> str:
        from trainables.workload import WorkloadError, resolve_workload  # imports torch

        try:
            resolve_workload(value)
        except WorkloadError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _expand_preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return search_spaces.get(value)
            except KeyError as exc:
                raise ValueError(exc.args[0]) from None
        if not isinstance(value, (Mapping, Space)):
            raise ValueError(
                f"give a mapping of dimensions or a preset name "
                f"({', '.join(search_spaces.names())}), got {_short(value)}"
            )
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> Spec:
        problems: list[tuple[str, str]] = []
        workers, batch = self.resources.workers_per_trial, self.space.batch_size
        if workers > 1 and not batch.categorical:
            problems.append(
                (
                    "space.batch_size",
                    f"with resources.workers_per_trial={workers} give a list of batch sizes "
                    f"(each divisible by {workers}), not {batch.kind}",
                )
            )
        elif workers > 1:
            bad = [b for b in batch.points() if int(b) % workers]
            if bad:
                problems.append(
                    (
                        "space.batch_size",
                        f"batch size(s) {', '.join(map(str, bad))} not divisible by "
                        f"resources.workers_per_trial={workers}",
                    )
                )
        space_given = self.space.model_fields_set
        if self.optimizer == "adamw" and "momentum" not in space_given:
            problems.append(
                (
                    "space.momentum",
                    "with optimizer adamw give beta1 as space.momentum (for example [0.9]): "
                    "the default [0.0] would train with beta1 = 0",
                )
            )
        if self.optimizer == "sgd_sai" and "momentum" not in space_given:
            problems.append(
                (
                    "space.momentum",
                    "with optimizer sgd_sai give its momentum as space.momentum (the paper "
                    "uses [0.9]): the default [0.0] would train without momentum",
                )
            )
        if self.optimizer != "adamw" and self.space.beta2 is not None:
            problems.append(("space.beta2", f"beta2 is AdamW's; optimizer is {self.optimizer}"))
        if self.space.schedule is not None and "kind" in self.schedule.model_fields_set:
            problems.append(
                (
                    "schedule.kind",
                    "the schedule kind is searched (space.schedule): give it in one place",
                )
            )
        kinds = self.space.schedule.points() if self.space.schedule else (self.schedule.kind,)
        growth = 1  # the largest batch size of a trial over its B₀ (batch_step)
        grower = "batch_step" if "batch_step" in kinds else None
        grower = "adaptive_batch" if self.adaptive_batch.rule != "none" else grower
        if grower and self.pruning.kind in ("front", "eps_opt"):
            problems.append(
                (
                    "pruning.kind",
                    f"{self.pruning.kind} compares trials at their batch size, which {grower} "
                    "changes during the trial: use none, asha or hyperband",
                )
            )
        if "batch_step" in kinds:
            from trainables.parts.schedule import batch_growth  # imports torch

            try:
                growth = batch_growth(self.schedule.decay_factor) ** len(self.schedule.milestones)
            except ValueError as exc:
                problems.append(("schedule.decay_factor", str(exc)))
        adaptive = self.adaptive_batch
        largest_batch = max(int(b) for b in batch.points())
        if adaptive.rule != "none":
            problems.extend(self._adaptive_problems(kinds, largest_batch))
        problems.extend(self._sync_problems())
        limit = self.resources.max_micro_batch
        # Local SGD measures each worker's share as one process does, with no DDP hook.
        if (
            workers > 1
            and self.sync.period == 1
            and self.measure.method == "per_example"
            and limit is not None
        ):
            # A trial's largest batch: B₀ grown by batch_step, or by an adaptive rule up to
            # the largest multiple of B₀ not above adaptive_batch.max_batch_size.
            cap = adaptive.max_batch_size if adaptive.rule != "none" else None

            def largest(b: int) -> int:
                return b * growth if cap is None else max(b, cap // b * b)

            shared = [b for b in batch.points() if largest(int(b)) // workers > limit]
            if shared:
                problems.append(
                    (
                        "measure.method",
                        f"per_example with resources.workers_per_trial={workers} needs each "
                        f"worker's share in one micro-batch; batch size(s) "
                        f"{', '.join(str(int(b)) for b in shared)} are accumulated over "
                        f"micro-batches of {limit}, which the DDP hook measures: use auto",
                    )
                )
        if self.resources.max_micro_batch is not None and self.measure.curvature_every > 0:
            problems.append(
                (
                    "measure.curvature_every",
                    "curvature is not measured with gradient accumulation "
                    "(resources.max_micro_batch): set it to 0",
                )
            )
        if (
            self.pruning.kind in ("front", "eps_opt")
            and self.pruning.mode == "measured"
            and self.optimizer == "adamw"
        ):
            problems.append(
                (
                    "pruning.mode",
                    "measured is for sgd: Adam's eps_opt(B) law has no measured eps_max "
                    "(its B_noise is fitted from the steps to the target): use fitted",
                )
            )
        if (
            self.pruning.kind in ("front", "eps_opt")
            and self.pruning.mode in ("measured", "calibrated")
            and self.optimizer == "sgd_sai"
        ):
            problems.append(
                (
                    "pruning.mode",
                    f"{self.pruning.mode} is for sgd: SGD-SaI's eps_opt(B) law is SGD's on "
                    "the gradient its frozen lr scales precondition, whose B_noise and "
                    "eps_max are not the measured ones: use fitted",
                )
            )
        horizon = self.schedule.horizon_steps
        longest_warmup = max(int(v) for v in self.space.warmup_steps.points())
        if horizon is not None and horizon <= longest_warmup:
            problems.append(
                (
                    "schedule.horizon_steps",
                    f"{horizon} is not after the longest warmup ({longest_warmup} steps): "
                    "the decay would end before it starts",
                )
            )
        if (
            self.pruning.kind == "eps_opt"
            and self.pruning.mode in ("measured", "calibrated")
            and self.measure.curvature_every == 0
        ):
            problems.append(
                (
                    "pruning.mode",
                    f"{self.pruning.mode} needs B_noise from curvature: "
                    "set measure.curvature_every > 0, or use mode fitted",
                )
            )
        if self.search.algorithm == "eps-guided" and self.pruning.kind != "eps_opt":
            problems.append(
                (
                    "search.algorithm",
                    "eps-guided draws lr around the eps_opt model that eps_opt pruning "
                    "builds: set pruning.kind: eps_opt",
                )
            )
        dims = self.space.dimensions().values()
        if self.search.algorithm == "grid" and not any(d.categorical for d in dims):
            problems.append(
                ("search.algorithm", "grid needs at least one categorical dimension (a list)")
            )
        if (
            self.search.algorithm == "grid"
            and self.search.num_samples > 1
            and all(d.categorical for d in dims)
        ):
            problems.append(
                (
                    "search.num_samples",
                    f"{self.search.num_samples} repeats of a grid of lists would be identical "
                    f"trials: use search.seeds: {self.search.num_samples} to repeat it over "
                    "training seeds",
                )
            )
        if self.search.seeds > 1 and self.search.algorithm not in ("grid", "random"):
            problems.append(
                (
                    "search.seeds",
                    f"repeats over training seeds are run for grid and random search, not "
                    f"{self.search.algorithm} (it would search the seed like a hyperparameter)",
                )
            )
        if problems:
            raise PydanticCustomError(
                "spec_cross_field",
                "{summary}",
                {"summary": "; ".join(f"{f}: {m}" for f, m in problems), "problems": problems},
            )
        return self

    def _adaptive_problems(
        self, kinds: tuple[str, ...], largest_batch: int
    ) -> list[tuple[str, str]]:
        """What an adaptive batch size (a rule other than none) needs of the rest."""
        adaptive, problems = self.adaptive_batch, []
        rule = adaptive.rule
        if adaptive.max_batch_size is None:
            problems.append(
                (
                    "adaptive_batch.max_batch_size",
                    f"required with rule {rule}: the largest batch size a trial may grow to",
                )
            )
        elif adaptive.max_batch_size < largest_batch:
            problems.append(
                (
                    "adaptive_batch.max_batch_size",
                    f"{adaptive.max_batch_size} is below the largest batch size in the space "
                    f"({largest_batch}): the batch size only grows",
                )
            )
        if self.measure.noise_every == 0:
            problems.append(
                (
                    "measure.noise_every",
                    f"adaptive_batch.rule {rule} grows the batch size from the measured noise: "
                    "set it > 0",
                )
            )
        if any(int(b) < 2 for b in self.space.batch_size.points()):
            problems.append(
                (
                    "space.batch_size",
                    f"adaptive_batch.rule {rule} measures the noise at two batch sizes, "
                    "which a batch of one example cannot give: use batch sizes >= 2",
                )
            )
        if "batch_step" in kinds:
            problems.append(
                (
                    "adaptive_batch.rule",
                    f"{rule} grows the batch size, as the batch_step schedule does: use one of "
                    "the two",
                )
            )
        return problems

    def _sync_problems(self) -> list[tuple[str, str]]:
        """What local SGD (sync.period > 1) needs of the rest."""
        sync, problems = self.sync, []
        workers = self.resources.workers_per_trial
        if sync.period == 1:
            if sync.warmup_steps > 0:
                problems.append(
                    (
                        "sync.warmup_steps",
                        "post-local SGD's warmup comes before local steps, which period 1 "
                        "never takes (it all-reduces every step): set sync.period > 1",
                    )
                )
            return problems
        if workers == 1:
            problems.append(
                (
                    "sync.period",
                    f"{sync.period} averages the parameters of several workers: "
                    "set resources.workers_per_trial > 1, or period 1",
                )
            )
        if self.measure.curvature_every > 0:
            problems.append(
                (
                    "measure.curvature_every",
                    f"curvature needs the global gradient at weights shared by every worker, "
                    f"which sync.period {sync.period} keeps apart between averages: set it to 0",
                )
            )
        if self.adaptive_batch.rule != "none" and workers > 1:
            small = [int(b) for b in self.space.batch_size.points() if int(b) // workers < 2]
            if small:
                problems.append(
                    (
                        "space.batch_size",
                        f"adaptive_batch with sync.period {sync.period} measures the noise on "
                        f"each worker's share, which needs 2 examples: batch size(s) "
                        f"{', '.join(map(str, small))} over {workers} workers give fewer",
                    )
                )
        return problems

    def max_steps_for(self, batch_size: int) -> int:
        """min(max_steps, max_examples // batch_size) over the limits given, at least 1."""
        return self.budget.max_steps_for(batch_size)

    def fixed_hyperparameters(self) -> dict[str, Any]:
        """The recipe's values that the space does not search: weight decay (0), β2
        (0.999, AdamW only) and the schedule kind (`schedule.kind`)."""
        from trainables.settings import DEFAULT_BETA2, DEFAULT_WEIGHT_DECAY

        dims = self.space.dimensions()
        fixed: dict[str, Any] = {
            "weight_decay": DEFAULT_WEIGHT_DECAY,
            "schedule": self.schedule.kind,
        }
        if self.optimizer == "adamw":
            fixed["beta2"] = DEFAULT_BETA2
        return {name: value for name, value in fixed.items() if name not in dims}

    def to_yaml_dict(self) -> dict[str, Any]:
        """A plain dict (lists, numbers, strings) that parse_spec turns back into this spec
        (the optional dimensions only where given; the schedule's kind only where not
        searched)."""
        data = self.model_dump(mode="json")
        data["space"] = {name: dim for name, dim in data["space"].items() if dim is not None}
        if self.space.schedule is not None:
            del data["schedule"]["kind"]
        return data


# --- reading and error reporting -----------------------------------------------------------


class _DuplicateKey(yaml.MarkedYAMLError):  # type: ignore[misc, unused-ignore]
    pass


class _SpecLoader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]
    """SafeLoader that rejects duplicate keys and reads 1e-3 as a float (YAML 1.2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise _DuplicateKey(
                    problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate a YAML spec file; SpecError lists every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{source}: no such file"], source) from None
    except IsADirectoryError:
        raise SpecError([f"{source}: is a directory, not a spec file"], source) from None
    except UnicodeDecodeError:
        raise SpecError([f"{source}: not a UTF-8 text file"], source) from None
    except OSError as exc:
        raise SpecError([f"{source}: cannot read ({exc.strerror})"], source) from None
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        what = exc.problem or exc.context or "invalid YAML"
        kind = "YAML error" if isinstance(exc, _DuplicateKey) else "YAML syntax error"
        raise SpecError([_one_line(f"{source}: {kind} at line {line}: {what}")], source) from None
    except yaml.YAMLError as exc:
        raise SpecError([_one_line(f"{source}: YAML error: {exc}")], source) from None
    return parse_spec(data, source)


def parse_spec(data: object, source: str = "<spec>") -> Spec:
    """Validate parsed YAML (a mapping) into a Spec; SpecError lists every problem."""
    if data is None:
        raise SpecError([f"{source}: empty spec"], source)
    if not isinstance(data, Mapping):
        raise SpecError(
            [
                f"{source}: the top level must be a mapping of keys (name, workload, target, ...), "
                f"got {type(data).__name__}"
            ],
            source,
        )
    try:
        return Spec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(_problems(exc), source) from None


def _problems(exc: ValidationError) -> list[str]:
    """One "<field.path>: <message>" line per pydantic error."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        ctx = err.get("ctx") or {}
        if err["type"] == "spec_cross_field":
            lines.extend(f"{field}: {msg}" for field, msg in ctx["problems"])
        else:
            lines.append(f"{_format_loc(err['loc']) or '<spec>'}: {_message(err)}")
    return [_one_line(line) for line in dict.fromkeys(lines)]


def _format_loc(loc: tuple[int | str, ...]) -> str:
    """('space', 'lr', 'log_uniform', 'log_uniform', 0) -> 'space.lr.log_uniform[0]'."""
    if len(loc) >= 3 and loc[0] == "space" and loc[2] in DIM_KINDS:
        loc = loc[:2] + loc[3:]  # drop the tag pydantic adds for a member of the Dim union
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else str(item)
    return out


def _message(err: Any) -> str:
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), _known_keys(err["loc"]), n=1)
        return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        names = [item for item in err["loc"] if isinstance(item, str) and item not in DIM_KINDS]
        noun = names[-1].replace("_", " ") if names else "value"
        return f"unknown {noun} {_short(err['input'])} (choose from {choices})"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", "")).strip("^$")
        return f"{_short(err['input'])} must match {pattern} (it becomes a directory name)"
    if kind == "value_error":
        return str(msg).removeprefix("Value error, ")
    if kind in ("number_type", "number_finite", "dim_kind"):
        return str(msg)
    return f"{msg[:1].lower()}{msg[1:]} (got {_short(err['input'])})"


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the model that holds the key at `loc` (empty if not a model)."""
    model: type[BaseModel] = Spec
    for item in loc[:-1]:
        field = model.model_fields.get(item) if isinstance(item, str) else None
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(model.model_fields)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())


__all__ = [
    "AdaptiveBatchSection",
    "Budget",
    "Choice",
    "Data",
    "Dim",
    "Eval",
    "IntUniform",
    "LogIntUniform",
    "LogUniform",
    "Measure",
    "Pruning",
    "Resources",
    "Schedule",
    "ScheduleChoice",
    "Search",
    "Space",
    "Spec",
    "SpecError",
    "Stall",
    "SyncSection",
    "Target",
    "Tracking",
    "Uniform",
    "load_spec",
    "parse_spec",
]
