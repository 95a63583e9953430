"""The typed batch that flows from the data layer into `SpeechLLM.prepare_inputs`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

IGNORE_INDEX = -100


@dataclass
class Batch:
    """One collated batch.

    Each audio part is stood for by one placeholder token in `input_ids`. Without spans, placeholders are matched
    to the rows of `audio` in reading order (row by row, left to right) and the model widens each one to as many
    frames as its clip yields. With spans (frame-level interleaving), placeholder i stands for the seconds
    `span_times[i]` of clip `span_clips[i]`: the clip is encoded once and its output frames are cut at those times.

    Attributes:
        input_ids: (B, L) chat-template token ids with one audio placeholder per clip, right padded.
        attention_mask: (B, L) 1 on real tokens, 0 on padding.
        labels: (B, L) target ids on trained (assistant) tokens, `IGNORE_INDEX` elsewhere.
        audio: (N, S) waveforms of every clip in the batch at the encoder's sample rate, zero padded.
        audio_lengths: (N,) valid samples per clip.
        span_clips: (P,) clip (row of `audio`) of each placeholder in reading order; empty for one whole clip each.
        span_times: (P, 2) start and end seconds of each placeholder's span of its clip (0 and inf: the whole clip).
        source: name of the train source or eval set the batch came from.
        keys: sample keys, one per row, for tracing a batch back to its shard.
        tasks: task name per row.
        references: reference answer per row (what generation is scored against); empty when unknown.
        teacher: the same rows as a text-only batch, the transcript in place of the speech and the same answer
            tokens (MTBI's distillation view, `Sample.teacher_turns`); None when the samples carry no such view.
        extras: counts and figures about the batch (tokens, padding ratios, skips, augmentations); keyed by name.
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    audio: Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    audio_lengths: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    span_clips: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    span_times: Tensor = field(default_factory=lambda: torch.zeros(0, 2))
    source: str = ""
    keys: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    teacher: Batch | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_clips(self) -> int:
        return self.audio.shape[0]

    def placeholder_spans(self) -> tuple[Tensor, Tensor]:
        """(P,) clip and (P, 2) start/end seconds of every placeholder; a batch without spans gets one whole clip
        (0 to inf) per placeholder, in order."""
        if self.span_clips.numel() or not self.num_clips:
            return self.span_clips, self.span_times
        clips = torch.arange(self.num_clips, device=self.audio.device)
        times = torch.tensor([[0.0, float("inf")]], device=self.audio.device).expand(self.num_clips, 2)
        return clips, times

    def num_target_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> Batch:
        """A copy on `device` (the teacher batch and tensors in `extras` included)."""
        extras = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.extras.items()}
        moved = {name: getattr(self, name).to(device) for name in _TENSOR_FIELDS}
        teacher = None if self.teacher is None else self.teacher.to(device)
        return dataclasses.replace(self, **moved, teacher=teacher, extras=extras)

    def pin_memory(self) -> Batch:
        """Pinned copy for fast host-to-device transfer (the DataLoader's pin-memory thread calls this)."""
        extras = {k: v.pin_memory() if isinstance(v, Tensor) else v for k, v in self.extras.items()}
        pinned = {name: getattr(self, name).pin_memory() for name in _TENSOR_FIELDS}
        teacher = None if self.teacher is None else self.teacher.pin_memory()
        return dataclasses.replace(self, **pinned, teacher=teacher, extras=extras)


_TENSOR_FIELDS = ("input_ids", "attention_mask", "labels", "audio", "audio_lengths", "span_clips", "span_times")
