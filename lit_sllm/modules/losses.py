"""Losses on spliced sequences; pure functions with shape docstrings."""

from __future__ import annotations

from torch import Tensor, nn

from lit_sllm.data.batch import IGNORE_INDEX


def token_cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy per row on labelled positions.

    Args:
        logits: (B, L, V) from the LLM.
        labels: (B, L) targets aligned with the inputs (`IGNORE_INDEX` where untrained); shifted here.

    Returns:
        (B,) summed loss per row and (B,) number of target tokens per row.
    """
    targets = labels[:, 1:]  # (B, L-1)
    per_token = nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, L-1)
    return per_token.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)
