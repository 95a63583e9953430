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

    Each audio clip is stood for by one placeholder token in `input_ids`; placeholders are matched to the rows
    of `audio` in reading order (row by row, left to right), and the model widens each one to as many frames as
    its clip yields.

    Attributes:
        input_ids: (B, L) chat-template token ids with one audio placeholder per clip, right padded.
        attention_mask: (B, L) 1 on real tokens, 0 on padding.
        labels: (B, L) target ids on trained (assistant) tokens, `IGNORE_INDEX` elsewhere.
        audio: (N, S) waveforms of every clip in the batch at the encoder's sample rate, zero padded.
        audio_lengths: (N,) valid samples per clip.
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


_TENSOR_FIELDS = ("input_ids", "attention_mask", "labels", "audio", "audio_lengths")
