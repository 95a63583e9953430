"""The typed batch that flows from the data layer into `SpeechLLM.prepare_inputs`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

IGNORE_INDEX = -100


@dataclass
class TeacherTopK:
    """The teacher's most likely next tokens at labelled tokens, stored with the shards (`lit-sllm teacher --topk`),
    for distillation without running the teacher in the step.

    Attributes:
        ids: (n, k) token ids, most likely first; row i belongs to the i-th labelled token in row-major order.
        log_probs: (n, k) their log-probabilities under the teacher's full-vocabulary softmax.
    """

    ids: Tensor
    log_probs: Tensor

    def _apply(self, move: Callable[[Tensor], Tensor]) -> TeacherTopK:
        return TeacherTopK(move(self.ids), move(self.log_probs))


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
            In a prompt-only batch it is the transcript-only prompt (what the LLM answers from text).
        teacher_topk: the teacher's stored top-k distributions at every labelled token of the batch (MTBI's
            distillation targets from the shards, `BehaviourImitation(teacher_logits=True)`); None without them.
        prompt: the same rows cut where their final answer begins, to generate from, with that answer as reference
            (eval sets carry it; see `generation_view`).
        transcripts: what is said in each row's audio ("" when unknown).
        groups: each row's scoring group (`Sample.group`; "" when none).
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
    teacher_topk: TeacherTopK | None = None
    prompt: Batch | None = None
    transcripts: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
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

    def placeholder_rows(self, audio_token_id: int) -> list[list[int]]:
        """Indices of each row's audio placeholders in the batch's reading order (into `placeholder_spans()`)."""
        counts = ((self.input_ids == audio_token_id) & self.attention_mask.bool()).sum(dim=1).tolist()
        starts = [sum(counts[:row]) for row in range(len(counts))]
        return [list(range(start, start + count)) for start, count in zip(starts, counts)]

    def clip_rows(self, audio_token_id: int) -> list[list[int]]:
        """Indices into `audio` of the clips each row's placeholders refer to, each once, in reading order."""
        span_clips = self.placeholder_spans()[0].tolist()
        return [list(dict.fromkeys(span_clips[p] for p in row)) for row in self.placeholder_rows(audio_token_id)]

    def generation_view(self) -> Batch:
        """The prompt-only rows to generate from: `prompt` for a teacher-forced eval batch, the batch itself when it
        was encoded as prompts (a `generate: true` set)."""
        if self.prompt is not None:
            return self.prompt
        if self.num_target_tokens():
            raise ValueError(
                f"Batch from '{self.source}' is teacher-forced and carries no prompt view; only eval sets are encoded "
                "with one (training batches cannot be generated from)."
            )
        return self

    def to(self, device: torch.device | str) -> Batch:
        """A copy on `device` (the teacher and prompt batches, the stored teacher targets and tensors in `extras`
        included)."""
        return self._apply(lambda tensor: tensor.to(device))

    def pin_memory(self) -> Batch:
        """Pinned copy for fast host-to-device transfer (the DataLoader's pin-memory thread calls this)."""
        return self._apply(lambda tensor: tensor.pin_memory())

    def _apply(self, move: Callable[[Tensor], Tensor]) -> Batch:
        extras = {k: move(v) if isinstance(v, Tensor) else v for k, v in self.extras.items()}
        moved = {name: move(getattr(self, name)) for name in _TENSOR_FIELDS}
        views = {name: None if getattr(self, name) is None else getattr(self, name)._apply(move) for name in _VIEWS}
        return dataclasses.replace(self, **moved, **views, extras=extras)


_TENSOR_FIELDS = ("input_ids", "attention_mask", "labels", "audio", "audio_lengths", "span_clips", "span_times")
_VIEWS = ("teacher", "prompt", "teacher_topk")
