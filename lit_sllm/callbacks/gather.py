"""What the evaluation callbacks share: every rank's rows in one list, and sums over ranks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import lightning as L
import torch

Row = TypeVar("Row")


def gather_rows(trainer: L.Trainer, rows: Sequence[Row]) -> list[Row]:
    """Every rank's rows, rank by rank (each rank scored only its share of the set)."""
    if trainer.world_size <= 1:
        return list(rows)
    gathered: list[Sequence[Row] | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, list(rows))
    return [row for part in gathered for row in part]


def sum_over_ranks(trainer: L.Trainer, values: Sequence[float]) -> list[float]:
    """Element-wise sums of `values` over ranks (float64, so counts and summed log-likelihoods stay exact)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=trainer.strategy.root_device)
    return trainer.strategy.reduce(tensor, reduce_op="sum").tolist()
