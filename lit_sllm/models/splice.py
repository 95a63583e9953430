"""Placeholder splicing: one audio placeholder token becomes as many embeddings as its clip (or clip span) yields.

A pure function with its own tests; the model calls it between the adapter and the LLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lit_sllm.data.batch import IGNORE_INDEX


@dataclass
class Spliced:
    """LLM inputs after splicing.

    Attributes:
        inputs_embeds: (B, L', H) token embeddings with audio frames in place of placeholders.
        attention_mask: (B, L') 1 on real positions.
        labels: (B, L') targets; `IGNORE_INDEX` on audio frames, padding and untrained tokens.
        audio_mask: (B, L') True where a position holds an audio frame.
    """

    inputs_embeds: Tensor
    attention_mask: Tensor
    labels: Tensor
    audio_mask: Tensor


def splice_audio(
    token_embeds: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    audio_embeds: Tensor,
    audio_lengths: Tensor,
    placeholder_id: int,
    padding_side: str = "right",
    frame_ranges: Tensor | None = None,
) -> Spliced:
    """Replaces each placeholder with frames of a clip, placeholders taken in reading order.

    Without `frame_ranges` placeholder i takes the valid frames of clip i. With them, placeholder i takes frames
    `frame_ranges[i, 1]:frame_ranges[i, 2]` of clip `frame_ranges[i, 0]`, so the spans of one encoded clip can sit
    between text (frame-level interleaving).

    Args:
        token_embeds: (B, L, H) embeddings of `input_ids` (placeholder rows are ignored).
        input_ids: (B, L) token ids; padding positions are those where `attention_mask` is 0.
        attention_mask: (B, L).
        labels: (B, L).
        audio_embeds: (N, T, H) adapter output, one row per clip.
        audio_lengths: (N,) valid frames per clip.
        placeholder_id: the audio token id.
        padding_side: where the output rows are padded ("left" for generation).
        frame_ranges: (P, 3) long (clip, first frame, end frame) per placeholder; None for one whole clip each.
    """
    is_placeholder = (input_ids == placeholder_id) & attention_mask.bool()
    if frame_ranges is None:
        clips = torch.arange(audio_embeds.shape[0], device=audio_lengths.device)
        frame_ranges = torch.stack([clips, torch.zeros_like(clips), audio_lengths.long()], dim=1)  # (N, 3)
    if int(is_placeholder.sum()) != frame_ranges.shape[0]:
        raise ValueError(
            f"The batch has {int(is_placeholder.sum())} audio placeholders but {frame_ranges.shape[0]} clips or "
            "clip spans; every audio part of a turn must have exactly one."
        )
    if frame_ranges.shape[0] and bool((frame_ranges[:, 2] > audio_lengths[frame_ranges[:, 0]]).any()):
        raise ValueError("A clip span ends after its clip's valid frames; frame ranges must lie within audio_lengths.")
    ranges = frame_ranges.tolist()
    rows, placeholder = [], 0
    for b in range(input_ids.shape[0]):
        valid = attention_mask[b].bool()
        ids, embeds, targets = input_ids[b][valid], token_embeds[b][valid], labels[b][valid]
        pieces: list[tuple[Tensor, Tensor, bool]] = []
        start = 0
        for pos in (ids == placeholder_id).nonzero().flatten().tolist():
            pieces.append((embeds[start:pos], targets[start:pos], False))
            clip, first, end = ranges[placeholder]
            frames = audio_embeds[clip, first:end]
            pieces.append((frames, targets.new_full((frames.shape[0],), IGNORE_INDEX), True))
            start, placeholder = pos + 1, placeholder + 1
        pieces.append((embeds[start:], targets[start:], False))
        rows.append(pieces)
    return _pad_rows(rows, token_embeds, padding_side)


def _pad_rows(rows: list[list[tuple[Tensor, Tensor, bool]]], like: Tensor, padding_side: str) -> Spliced:
    lengths = [sum(p[0].shape[0] for p in pieces) for pieces in rows]
    batch, width, hidden = len(rows), max(lengths, default=0), like.shape[-1]
    embeds = like.new_zeros(batch, width, hidden)
    mask = torch.zeros(batch, width, dtype=torch.long, device=like.device)
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long, device=like.device)
    audio_mask = torch.zeros(batch, width, dtype=torch.bool, device=like.device)
    for b, pieces in enumerate(rows):
        offset = width - lengths[b] if padding_side == "left" else 0
        for piece_embeds, piece_labels, is_audio in pieces:
            end = offset + piece_embeds.shape[0]
            embeds[b, offset:end] = piece_embeds.to(embeds.dtype)
            labels[b, offset:end] = piece_labels
            audio_mask[b, offset:end] = is_audio
            offset = end
        start = width - lengths[b] if padding_side == "left" else 0
        mask[b, start : start + lengths[b]] = 1
    return Spliced(embeds, mask, labels, audio_mask)
