"""From decoded samples to the typed `Batch`: optional per-source transform, chat encoding, padding.

Samples are encoded one at a time (so batching can measure their tokens) and padded together in `collate`.
Training mode labels the assistant tokens; generation mode encodes the prompt only and keeps the final assistant
answer as the reference.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lit_sllm.data.batch import IGNORE_INDEX, Batch, TeacherTopK
from lit_sllm.data.batching import padding_ratio
from lit_sllm.data.prompts import ChatFormatter, EncodedDialog
from lit_sllm.data.schema import Sample

SampleTransform = Callable[[Sample, random.Random], Sample]


@dataclass
class EncodedSample:
    """One sample as token ids and its clips, ready to be padded into a batch.

    Attributes:
        key: sample key.
        task: task name.
        input_ids: chat-template token ids with one audio placeholder per audio part.
        labels: ids on trained tokens, `IGNORE_INDEX` elsewhere (all ignored in generation mode).
        clips: (S_i,) waveform of each distinct clip the parts refer to, in order of first reference.
        reference: the final assistant answer (empty when the sample has none).
        duration: seconds of audio over all clips.
        teacher: the transcript-only view (`Sample.teacher_turns`) encoded the same way, for distillation.
        kd_target: the teacher's stored distributions, one row per labelled token (`Sample.kd_target`).
        augmented: the augmentation transforms applied to its audio (`Sample.augmented`).
        prompt: the prompt-only view (eval sets): the conversation cut where its final answer begins.
        transcript: `Sample.transcript` ("" when unknown).
        group: `Sample.group`.
        spans: (clip index into `clips`, start s, end s) per placeholder; empty for one whole clip per placeholder.
    """

    key: str
    task: str
    input_ids: list[int]
    labels: list[int]
    clips: list[Tensor] = field(default_factory=list)
    reference: str = ""
    duration: float = 0.0
    teacher: EncodedSample | None = None
    kd_target: TeacherTopK | None = None
    augmented: list[str] = field(default_factory=list)
    prompt: EncodedSample | None = None
    transcript: str = ""
    group: str = ""
    spans: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    def measure(self) -> tuple[float, int]:
        """(seconds of audio, tokens): what batching limits are counted in."""
        return self.duration, len(self.input_ids)


def final_answer(turns: Sequence[dict], separator: str = " ") -> str:
    """Text of the last turn when it is the assistant's, else ""."""
    if not turns or turns[-1]["role"] != "assistant":
        return ""
    return separator.join(part["text"] for part in turns[-1]["parts"] if "text" in part)


class SampleEncoder:
    """Encodes samples of one source.

    Args:
        formatter: the chat formatter (holds the tokenizer and the audio placeholder).
        sample_rate: rate every clip must have (the pipeline resamples; a transform must keep it).
        generate: encode the prompt only (predict, benchmarks) instead of the full conversation with labels.
        transform: optional `(sample, rng) -> sample` hook run first (e.g. MTBI task sampling, interleaving).
        train_on: "assistant" labels every assistant turn, "last" only the final one.
        prompt_view: also encode the prompt-only view (eval sets: loss and generation on the same samples).
    """

    def __init__(
        self,
        formatter: ChatFormatter,
        sample_rate: int,
        generate: bool = False,
        transform: SampleTransform | None = None,
        train_on: str = "assistant",
        prompt_view: bool = False,
    ) -> None:
        self.formatter = formatter
        self.sample_rate = sample_rate
        self.generate = generate
        self.transform = transform
        self.train_on = train_on
        self.prompt_view = prompt_view and not generate

    def __call__(self, sample: Sample, rng: random.Random) -> EncodedSample:
        if self.transform is not None:
            sample = self.transform(sample, rng)
        encoded = self._prompt(sample, sample.turns) if self.generate else self._forced(sample, sample.turns)
        encoded.augmented = sample.augmented
        encoded.transcript, encoded.group = sample.transcript or "", sample.group
        if self.prompt_view:
            encoded.prompt = self._prompt(sample, sample.turns)
        if sample.teacher_turns is not None:
            encoded.teacher = self._teacher(sample, encoded)
        if sample.kd_target is not None and not self.generate:
            encoded.kd_target = _checked_target(sample, encoded)
        return encoded

    def _forced(self, sample: Sample, turns: list[dict]) -> EncodedSample:
        dialog = self.formatter.encode(turns, train_on=self.train_on)
        return self._encoded(sample, dialog, final_answer(turns, self.formatter.part_separator))

    def _prompt(self, sample: Sample, turns: list[dict]) -> EncodedSample:
        """The one prompt builder of the suite: `ChatFormatter.encode_prompt`, the answer kept as reference."""
        dialog, reference = self.formatter.encode_prompt(turns)
        return self._encoded(sample, dialog, reference)

    def _encoded(self, sample: Sample, dialog: EncodedDialog, reference: str) -> EncodedSample:
        names = list(dict.fromkeys(dialog.audio_refs))  # each clip once, however many parts cut it
        clips = [self._clip(sample, name) for name in names]
        spans = [(names.index(name), *times) for name, times in zip(dialog.audio_refs, dialog.audio_times)]
        duration = sum(clip.numel() for clip in clips) / self.sample_rate
        encoded = EncodedSample(sample.key, sample.task, dialog.input_ids, dialog.labels, clips, reference, duration)
        encoded.spans = spans
        return encoded

    def _teacher(self, sample: Sample, student: EncodedSample) -> EncodedSample:
        """The transcript-only view: teacher-forced with the student's answer tokens, or (generating) its prompt."""
        if self.generate:
            return self._prompt(sample, sample.teacher_turns)
        teacher = self._forced(sample, sample.teacher_turns)
        if [t for t in teacher.labels if t != IGNORE_INDEX] != [t for t in student.labels if t != IGNORE_INDEX]:
            raise ValueError(
                f"Sample {sample.key}: the teacher view's answer tokens differ from the student's; a transform must "
                "give `teacher_turns` exactly the same assistant turns as `turns`."
            )
        teacher.reference = student.reference
        return teacher

    def _clip(self, sample: Sample, name: str) -> Tensor:
        if name not in sample.audio:
            raise KeyError(
                f"Sample {sample.key} (from {sample.source}) refers to audio part '{name}' but has only "
                f"{sorted(sample.audio)}; the source's transform must add every clip it references."
            )
        wave, rate = sample.audio[name]
        if rate != self.sample_rate:
            raise ValueError(
                f"Sample {sample.key}: clip '{name}' is at {rate} Hz, not data.sample_rate {self.sample_rate} Hz; "
                "a transform must keep the rate (resample with lit_sllm.data.audio.resample)."
            )
        return wave


def _checked_target(sample: Sample, encoded: EncodedSample) -> TeacherTopK:
    labelled = sum(label != IGNORE_INDEX for label in encoded.labels)
    stored = sample.kd_target.ids.shape[0]
    if stored != labelled:
        raise ValueError(
            f"Sample {sample.key} (from {sample.source}): {stored} stored teacher distributions for {labelled} "
            "labelled tokens; the shards were labelled with another tokenizer or chat template than this run's LLM. "
            "Relabel them with `lit-sllm teacher --topk K` and the run's LLM."
        )
    return sample.kd_target


def _target_batch(items: Sequence[EncodedSample], source: str) -> TeacherTopK | None:
    """Every item's stored distributions stacked in row-major label order, when every item has them."""
    targets = [item.kd_target for item in items if item.kd_target is not None]
    if not targets:
        return None
    widths = {target.ids.shape[1] for target in targets}
    if len(targets) != len(items) or len(widths) > 1:
        raise ValueError(
            f"Batch from '{source}' mixes samples with and without stored teacher distributions, or of different "
            f"k ({len(targets)} of {len(items)} have them; k {sorted(widths)}); label every shard of a source with "
            "one `lit-sllm teacher --topk K`."
        )
    return TeacherTopK(torch.cat([t.ids for t in targets]), torch.cat([t.log_probs for t in targets]))


def _pad(rows: Sequence[Sequence[int]], value: int) -> Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)  # (B, L)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def _pad_audio(clips: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([clip.numel() for clip in clips], dtype=torch.long)  # (N,)
    audio = torch.zeros(len(clips), int(lengths.max()) if clips else 0)  # (N, S)
    for i, clip in enumerate(clips):
        audio[i, : clip.numel()] = clip
    return audio, lengths


def _spans(items: Sequence[EncodedSample]) -> tuple[Tensor, Tensor]:
    """(P,) batch clip index and (P, 2) start/end seconds of every placeholder, in reading order."""
    clips, times, offset = [], [], 0
    for item in items:
        spans = item.spans or [(i, 0.0, float("inf")) for i in range(len(item.clips))]
        clips += [offset + clip for clip, _, _ in spans]
        times += [(start, end) for _, start, end in spans]
        offset += len(item.clips)
    return torch.tensor(clips, dtype=torch.long), torch.tensor(times, dtype=torch.float32).reshape(-1, 2)


_VIEW_FIX = {
    "teacher": "a transform must set `teacher_turns` on every sample or on none.",
    "prompt": "collate samples of one SampleEncoder (all with `prompt_view`, or all without).",
}


def _view_batch(items: Sequence[EncodedSample], view: str, source: str, pad_id: int) -> Batch | None:
    """The Batch of every item's `view` ("teacher" or "prompt") when every item has one, None when none has."""
    views = [getattr(item, view) for item in items if getattr(item, view) is not None]
    if not views:
        return None
    if len(views) != len(items):
        raise ValueError(
            f"Batch from '{source}' mixes samples with and without a {view} view ({len(views)} of {len(items)}); "
            f"{_VIEW_FIX[view]}"
        )
    batch = collate(views, source, pad_id)
    batch.transcripts, batch.groups = [item.transcript for item in items], [item.group for item in items]
    return batch


def collate(items: Sequence[EncodedSample], source: str, pad_id: int) -> Batch:
    """Pads encoded samples into a `Batch` (token ids right padded, clips zero padded in order, and each
    placeholder's clip and seconds in `span_clips`/`span_times`).

    `extras` gets `tokens` (real tokens), `token_padding_ratio`, `audio_seconds` and `padding_ratio`: real over
    padded audio frames when the batch has audio, else the token ratio; and `augment`, how many of its samples each
    augmentation transform was applied to, when any was. `teacher` is the batch of teacher views, when the samples
    carry them, and `prompt` the batch of prompt views (eval sets).
    """
    augmented = Counter(name for item in items for name in item.augmented)
    clips = [clip for item in items for clip in item.clips]
    audio, audio_lengths = _pad_audio(clips)
    span_clips, span_times = _spans(items)
    token_lengths = [item.num_tokens for item in items]
    token_ratio = padding_ratio(token_lengths)
    return Batch(
        input_ids=_pad([item.input_ids for item in items], pad_id),  # (B, L)
        attention_mask=_pad([[1] * n for n in token_lengths], 0),  # (B, L)
        labels=_pad([item.labels for item in items], IGNORE_INDEX),  # (B, L)
        audio=audio,
        audio_lengths=audio_lengths,
        span_clips=span_clips,
        span_times=span_times,
        source=source,
        keys=[item.key for item in items],
        tasks=[item.task for item in items],
        references=[item.reference for item in items],
        transcripts=[item.transcript for item in items],
        groups=[item.group for item in items],
        teacher=_view_batch(items, "teacher", source, pad_id),
        teacher_topk=_target_batch(items, source),
        prompt=_view_batch(items, "prompt", source, pad_id),
        extras={
            "tokens": sum(token_lengths),
            "token_padding_ratio": token_ratio,
            "audio_seconds": sum(item.duration for item in items),
            "padding_ratio": padding_ratio(audio_lengths.tolist()) if clips else token_ratio,
            **({"augment": dict(augmented)} if augmented else {}),
        },
    )
