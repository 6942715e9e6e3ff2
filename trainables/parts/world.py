"""A worker's place among a trial's data-parallel workers, and the sums over them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This worker's place among the trial's data-parallel workers."""

    rank: int = 0
    size: int = 1

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over the workers, in place (one all-reduce; none on one worker)."""
        if self.size > 1:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """`values` averaged over the workers, in place."""
        if self.size > 1:
            self.sum(values)
            values /= self.size
        return values

    def broadcast(self, values: torch.Tensor) -> torch.Tensor:
        """Rank 0's `values` on every worker, in place (none on one worker)."""
        if self.size > 1:
            dist.broadcast(values, src=0)
        return values

    def gather_objects(self, value: Any) -> list[Any]:
        """Every worker's `value` (picklable), in rank order, on every worker."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values
