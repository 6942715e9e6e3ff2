"""Teacher→student MLP classification with label noise (DESIGN.md §1).

Inputs x ~ N(0, I_in_dim); teacher logits = scale·tanh(x W1) W2 with W1 (in_dim×teacher_width)
and W2 (teacher_width×classes) drawn N(0, 1/fan_in); labels are sampled from the teacher's
softmax, so even the teacher has a cross-entropy floor (the Bayes CE, ≈ 1.15 with the
defaults). The student is an MLP `Linear-ReLU-...-Linear` with widths `student_widths`,
initialised as nn.Linear does after `torch.manual_seed(seed)`, trained with mean
cross-entropy on a fixed pool of `n_train` examples; the reported `loss` is the
cross-entropy on a separate held-out set of `n_eval` examples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from trainables.workload import Workload
from trainables.workloads._args import float_arg, int_arg, merge_args

DEFAULTS: dict[str, Any] = {
    "in_dim": 32,
    "teacher_width": 64,
    "classes": 10,
    "scale": 4.0,
    "student_widths": [64, 64],
    "n_train": 262144,
    "n_eval": 4096,
    "seed": 0,
}

ACCURACY = "accuracy"
BAYES_CE = "bayes_ce"
METRIC_NAMES = (ACCURACY, BAYES_CE)

# Streams of one seed for the data (the teacher and the student use Generator(seed) itself).
_TRAIN_STREAM = 1
_EVAL_STREAM = 2


def _check_args(args: Mapping[str, Any]) -> dict[str, Any]:
    return merge_args("teacher_mlp", DEFAULTS, args)


_int_arg = partial(int_arg, "teacher_mlp")
_float_arg = partial(float_arg, "teacher_mlp")


def _widths_arg(value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"teacher_mlp: student_widths must be a list of integers, got {value!r}")
    return [_int_arg("student_widths entry", width, 1) for width in value]


def _generator(seed: int, stream: int) -> torch.Generator:
    """A torch.Generator for one stream of `seed` (never the global RNG)."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def make_student(in_dim: int, widths: list[int], classes: int, seed: int) -> torch.nn.Sequential:
    """The student MLP, initialised exactly as after `torch.manual_seed(seed)`.

    The layers are created on the meta device (no draw from the global RNG) and then
    initialised from a private Generator with nn.Linear's own scheme: weights
    kaiming-uniform(a=√5), biases U(±1/√fan_in), layer by layer, weight before bias.
    """
    sizes = [in_dim, *widths, classes]
    layers: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        if i > 0:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(fan_in, fan_out, device="meta"))
    model = torch.nn.Sequential(*layers).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                torch.nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return model


def _loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


class _Teacher:
    """logits = scale·tanh(x W1) W2, evaluated in float64.

    W1 then W2 are drawn (float32 randn / √fan_in) from `torch.Generator().manual_seed(seed)`,
    which reproduces the teacher measured in research/workloads.md for seed 0.
    """

    def __init__(self, in_dim: int, width: int, classes: int, scale: float, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        w1 = torch.randn(in_dim, width, generator=generator) / math.sqrt(in_dim)
        w2 = torch.randn(width, classes, generator=generator) / math.sqrt(width)
        self.w1 = w1.to(torch.float64)
        self.w2 = w2.to(torch.float64)
        self.scale = scale

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.scale * torch.tanh(x.to(torch.float64) @ self.w1) @ self.w2
        return torch.log_softmax(logits, dim=-1)

    def sample(self, n: int, in_dim: int, generator: torch.Generator) -> TensorDataset:
        """n examples: x ~ N(0, I) (float32) and labels drawn from the teacher's softmax."""
        x = torch.randn(n, in_dim, generator=generator)
        cdf = self.log_probs(x).exp().cumsum(dim=-1)
        u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
        # Inverse-CDF sampling; the clamp guards against cdf[-1] rounding below u.
        y = (cdf < u).sum(dim=-1).clamp_(max=cdf.shape[-1] - 1)
        return TensorDataset(x, y)


class _EvalMetrics:
    """Eval accuracy of the student, and the (constant) Bayes cross-entropy of the eval set."""

    def __init__(self, eval_data: TensorDataset, bayes_ce: float) -> None:
        self.x, self.y = eval_data.tensors
        self.bayes_ce = bayes_ce
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        if device not in self._on_device:
            self._on_device[device] = (self.x.to(device), self.y.to(device))
        x, y = self._on_device[device]
        with torch.no_grad():
            correct = (model(x).argmax(dim=-1) == y).sum().item()
        return {ACCURACY: correct / len(y), BAYES_CE: self.bayes_ce}


def build(args: Mapping[str, Any]) -> Workload:
    """Build the teacher→student MLP workload (DESIGN.md §1).

    args: in_dim (32), teacher_width (64), classes (10), scale (4.0), student_widths
    ([64, 64]), n_train (262144), n_eval (4096), seed (0). The training pool and the eval
    set come from two independent streams of `seed`; the teacher is drawn from
    `Generator().manual_seed(seed)` and the student initialised as after
    `torch.manual_seed(seed)`, as in the measurements of research/workloads.md.
    `bayes_ce` is the teacher's expected cross-entropy on the eval inputs (≈ 1.15).
    """
    a = _check_args(args)
    in_dim = _int_arg("in_dim", a["in_dim"], 1)
    teacher_width = _int_arg("teacher_width", a["teacher_width"], 1)
    classes = _int_arg("classes", a["classes"], 2)
    scale = _float_arg("scale", a["scale"], 0.0)
    widths = _widths_arg(a["student_widths"])
    n_train = _int_arg("n_train", a["n_train"], 1)
    n_eval = _int_arg("n_eval", a["n_eval"], 1)
    seed = _int_arg("seed", a["seed"], 0)

    teacher = _Teacher(in_dim, teacher_width, classes, scale, seed)
    train_data = teacher.sample(n_train, in_dim, _generator(seed, _TRAIN_STREAM))
    eval_data = teacher.sample(n_eval, in_dim, _generator(seed, _EVAL_STREAM))
    # The teacher's expected cross-entropy on the eval inputs: mean_i H(p_teacher(·|x_i)).
    log_probs = teacher.log_probs(eval_data.tensors[0])
    bayes_ce = -float((log_probs.exp() * log_probs).sum(dim=-1).mean())

    return Workload(
        model=make_student(in_dim, widths, classes, seed),
        train_data=train_data,
        loss=_loss,
        eval_data=eval_data,
        metrics=_EvalMetrics(eval_data, bayes_ce),
    )
