"""The MTBI sample transform: one teacher-labelled utterance -> one behaviour-imitation conversation.

Each time a sample is read, one task is drawn (or ASR, with `asr_prob`); the user turn is the task prompt the
teacher answered plus the utterance as speech (or, with `interleave_prob`, as interleaved speech and text spans),
and the target is the teacher's response. Interleaving is at the level of encoder output frames by default (the
utterance is encoded once, text replaces the frames of its words) or of waveform clips (`interleave_level: clips`,
each speech run encoded alone). With `teacher_view` the same conversation with the full transcript in
place of the speech rides along for online logit distillation; with `teacher_logits` the teacher's distributions
stored with the shards for that conversation do (`lit-sllm teacher --topk`), and no teacher runs in the step.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

from lit_sllm.data.interleave import interleave, interleave_spans, random_spans
from lit_sllm.data.schema import Sample, topk_target
from lit_sllm.data.tasks import task_turns, teacher_turns


class BehaviourImitation:
    """`(sample, rng) -> sample` transform for MTBI sources (set it as a train source's `transform`).

    Args:
        tasks: task names to train on; None takes every task the teacher answered.
        asr_prob: probability of an ASR conversation (transcript as target) instead of a task.
        asr_prompt: the ASR instruction.
        interleave_prob: probability that word spans of the utterance are given as text (needs `words`).
        min_span: fewest words in one interleaved run.
        max_span: most words in one interleaved run.
        interleave_level: "frames" encodes the utterance once and cuts its adapter output at the word times (speech
            runs keep their neighbours' context; the encoder sees one clip per utterance); "clips" cuts the waveform
            and encodes each speech run as a clip of its own.
        teacher_view: attach the transcript-only conversation for online logit distillation (the frozen LLM reads
            it in every training step).
        teacher_logits: attach the teacher's stored top-k distributions over the answer instead (the same teacher,
            run once when labelling: `lit-sllm teacher --topk K`).
    """

    def __init__(
        self,
        tasks: list[str] | None = None,
        asr_prob: float = 0.0,
        asr_prompt: str = "Transcribe the audio.",
        interleave_prob: float = 0.0,
        min_span: int = 1,
        max_span: int = 4,
        interleave_level: Literal["frames", "clips"] = "frames",
        teacher_view: bool = False,
        teacher_logits: bool = False,
    ) -> None:
        if interleave_level not in ("frames", "clips"):
            raise ValueError(f"interleave_level '{interleave_level}' is unknown; use 'frames' or 'clips'.")
        if teacher_view and teacher_logits:
            raise ValueError(
                "BehaviourImitation: teacher_view and teacher_logits both give the KD teacher; set one of them."
            )
        self.tasks = set(tasks) if tasks is not None else None
        self.asr_prob = asr_prob
        self.asr_prompt = asr_prompt
        self.interleave_prob = interleave_prob
        self.min_span, self.max_span = min_span, max_span
        self.interleave_level = interleave_level
        self.teacher_view = teacher_view
        self.teacher_logits = teacher_logits

    @property
    def gives_teacher(self) -> bool:
        """Whether every conversation carries a KD teacher (a view to run or stored distributions)."""
        return self.teacher_view or self.teacher_logits

    def pick_task(self, sample: Sample, rng: random.Random) -> tuple[str, str, str]:
        """(task, prompt, answer) for this reading of the sample."""
        answered = sorted(t for t in sample.responses if self.tasks is None or t in self.tasks)
        if not answered and self.asr_prob <= 0:
            raise KeyError(
                f"Sample {sample.key} (from {sample.source}) has no teacher responses for the MTBI tasks; run "
                "`lit-sllm teacher` on these shards first, or set asr_prob > 0."
            )
        if not answered or rng.random() < self.asr_prob:
            return "asr", self.asr_prompt, sample.transcript or ""
        task = rng.choice(answered)
        if task not in sample.prompts:
            raise KeyError(
                f"Sample {sample.key}: response '{task}' has no recorded prompt; relabel with `lit-sllm teacher`."
            )
        return task, sample.prompts[task], sample.responses[task]

    def __call__(self, sample: Sample, rng: random.Random) -> Sample:
        if len(sample.audio) != 1 or not sample.transcript:
            raise ValueError(
                f"Sample {sample.key} (from {sample.source}): MTBI needs one clip and its transcript, got "
                f"{len(sample.audio)} clips and transcript {sample.transcript!r}."
            )
        task, prompt, answer = self.pick_task(sample, rng)
        ((name, (wave, rate)),) = sample.audio.items()
        parts, audio = [{"audio": name}], dict(sample.audio)
        if sample.words and len(sample.words) > 1 and rng.random() < self.interleave_prob:
            spans = random_spans(len(sample.words), rng, self.min_span, self.max_span)
            if self.interleave_level == "frames":
                parts = interleave_spans(sample.words, wave.shape[-1] / rate, spans, name)
            else:
                parts, clips = interleave(sample.words, wave, rate, spans)
                audio = {clip_name: (clip, rate) for clip_name, clip in clips.items()}
        teacher = teacher_turns(prompt, sample.transcript, answer) if self.teacher_view else None
        target = topk_target(sample, task, prompt) if self.teacher_logits else None
        turns = task_turns(prompt, parts, answer)
        return dataclasses.replace(sample, task=task, turns=turns, audio=audio, teacher_turns=teacher, kd_target=target)
