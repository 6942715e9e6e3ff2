"""A convolutional net on real images that ship inside a package: scikit-learn's
handwritten digits (1,797 grayscale 8×8 images of the digits 0-9, from the UCI ML
repository; `sklearn.datasets.load_digits` reads them from the installed package, no
download).

The images are scaled to [0, 1] and split once by a fixed permutation: `n_eval` (default
360) evaluate, the rest train. The net: conv 3×3 (1→`channels`) → ReLU → conv 3×3
(`channels`→2·`channels`) → ReLU → 2×2 max-pool → linear to 10 classes; no BatchNorm and
no dropout (the noise-scale estimator needs independent examples). Reported: `loss` (the
eval cross-entropy) and `accuracy` on the eval images. With 1,437 training images, a
batch size near that is most of the set: the noise scale of so small a set is small.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from trainables.workload import Workload
from trainables.workloads._args import int_arg, merge_args

DEFAULTS: dict[str, Any] = {"channels": 16, "n_eval": 360, "split_seed": 0}
ACCURACY = "accuracy"

_int_arg = partial(int_arg, "digits_cnn")


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 digit images as (N, 1, 8, 8) floats in [0, 1] and their labels."""
    from sklearn.datasets import load_digits  # the images ship inside scikit-learn

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(data.target, dtype=torch.long)


class DigitsCNN(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.head = nn.Linear(2 * channels * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        logits: torch.Tensor = self.head(x.flatten(1))
        return logits


def _loss(model: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def build(args: Mapping[str, Any]) -> Workload:
    """The workload; `args` override DEFAULTS (see the module docstring)."""
    merged = merge_args("digits_cnn", DEFAULTS, args)
    channels = _int_arg("channels", merged["channels"], 1)
    images, labels = digits()
    n_eval = _int_arg("n_eval", merged["n_eval"], 1)
    if n_eval >= len(images):
        raise ValueError(f"digits_cnn: n_eval must be below {len(images)}, got {n_eval}")
    generator = torch.Generator().manual_seed(_int_arg("split_seed", merged["split_seed"], 0))
    order = torch.randperm(len(images), generator=generator)
    train, held_out = order[n_eval:], order[:n_eval]
    eval_data = TensorDataset(images[held_out], labels[held_out])

    def metrics(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in eval_data.tensors)
        with torch.no_grad():
            return {ACCURACY: float((model(x).argmax(1) == y).float().mean())}

    return Workload(
        model=DigitsCNN(channels),
        train_data=TensorDataset(images[train], labels[train]),
        loss=_loss,
        eval_data=eval_data,
        metrics=metrics,
    )
