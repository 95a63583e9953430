"""The MTBI transform: task draws, interleaved parts with their clips, the teacher view through collate."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import build_tokenizer

from lit_sllm.data.collate import SampleEncoder, collate
from lit_sllm.data.mtbi import BehaviourImitation
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.data.schema import Sample

RATE = 16000
WORDS = [("the", 0.1, 0.3), ("red", 0.4, 0.6), ("cat", 0.7, 0.9), ("is", 1.0, 1.2), ("big", 1.3, 1.5)]


def _sample(**overrides) -> Sample:
    fields = dict(
        key="utt1",
        task="asr",
        turns=[{"role": "user", "parts": [{"audio": "flac"}]}, {"role": "assistant", "parts": [{"text": "x"}]}],
        audio={"flac": (torch.linspace(0, 1, int(1.6 * RATE)), RATE)},
        transcript="the red cat is big",
        words=WORDS,
        duration=1.6,
        responses={"colour": "red", "count": "one"},
        prompts={"colour": "what colour", "count": "say"},
    )
    return Sample(**(fields | overrides))


def test_task_draws_use_the_teachers_prompt_and_answer():
    transform = BehaviourImitation()
    drawn = {transform(_sample(), random.Random(seed)).task for seed in range(20)}
    assert drawn == {"colour", "count"}
    out = transform(_sample(), random.Random(0))
    user, assistant = out.turns
    assert user["parts"] == [{"text": _sample().prompts[out.task]}, {"audio": "flac"}]
    assert assistant["parts"] == [{"text": _sample().responses[out.task]}]


def test_clip_interleaving_gives_text_spans_and_cut_clips_that_cover_the_utterance():
    out = BehaviourImitation(interleave_prob=1.0, max_span=2, interleave_level="clips")(_sample(), random.Random(3))
    parts = out.turns[0]["parts"][1:]
    assert {"text", "audio"} <= {next(iter(p)) for p in parts}
    assert set(out.audio) == {p["audio"] for p in parts if "audio" in p}
    # the text spans are words of the utterance in order; the clips hold the rest of its audio
    text_words = [w for p in parts if "text" in p for w in p["text"].split()]
    remaining = iter(w for w, _, _ in WORDS)
    assert all(word in remaining for word in text_words) and 0 < len(text_words) < len(WORDS)
    total = sum(out.audio[p["audio"]][0].numel() for p in parts if "audio" in p)
    assert 0 < total < int(1.6 * RATE)
    assert all(rate == RATE for _, rate in out.audio.values())


def test_frame_interleaving_keeps_one_clip_and_gives_each_audio_part_its_seconds():
    out = BehaviourImitation(interleave_prob=1.0, max_span=2)(_sample(), random.Random(3))
    parts = out.turns[0]["parts"][1:]
    assert set(out.audio) == {"flac"} and torch.equal(out.audio["flac"][0], _sample().audio["flac"][0])
    audio = [p for p in parts if "audio" in p]
    assert audio and all(p["audio"] == "flac" and 0 <= p["start"] < p["end"] <= 1.6 for p in audio)
    # speech and text runs alternate and tile the utterance: each text run sits between the seconds of its words
    cuts = [0.0, 0.35, 0.65, 0.95, 1.25, 1.6]
    position = 0
    for part in parts:
        if "text" in part:
            position += len(part["text"].split())
            continue
        assert part["start"] == pytest.approx(cuts[position])
        position = cuts.index(min(cuts, key=lambda c: abs(c - part["end"])))
    assert position == len(WORDS)
    with pytest.raises(ValueError, match="interleave_level"):
        BehaviourImitation(interleave_level="words")


def test_frame_interleaved_samples_collate_to_one_clip_per_row_and_a_span_per_part(tmp_path):
    formatter = ChatFormatter(build_tokenizer(tmp_path))
    encoder = SampleEncoder(formatter, RATE, transform=BehaviourImitation(interleave_prob=1.0, max_span=2))
    items = [encoder(_sample(key=f"u{i}"), random.Random(i)) for i in range(3)]
    batch = collate(items, "mtbi", formatter.tokenizer.pad_token_id)
    per_row = ((batch.input_ids == formatter.audio_token_id) & batch.attention_mask.bool()).sum(dim=1).tolist()
    assert batch.num_clips == 3 and batch.audio_lengths.tolist() == [int(1.6 * RATE)] * 3
    assert batch.extras["padding_ratio"] == 1.0 and batch.extras["audio_seconds"] == pytest.approx(4.8)
    assert batch.span_clips.tolist() == [row for row, n in enumerate(per_row) for _ in range(n)]
    expected = [t for i in range(3) for p in _parts(i) if "audio" in p for t in (p["start"], p["end"])]
    assert batch.span_times.flatten().tolist() == pytest.approx(expected)


def _parts(seed: int) -> list[dict]:
    out = BehaviourImitation(interleave_prob=1.0, max_span=2)(_sample(key=f"u{seed}"), random.Random(seed))
    return out.turns[0]["parts"]


def test_asr_fallback_and_clear_error_without_teacher_answers():
    out = BehaviourImitation(asr_prob=1.0)(_sample(), random.Random(0))
    assert out.task == "asr" and out.turns[1]["parts"] == [{"text": "the red cat is big"}]
    with pytest.raises(KeyError, match="lit-sllm teacher"):
        BehaviourImitation()(_sample(responses={}, prompts={}), random.Random(0))


def test_teacher_view_becomes_a_text_batch_with_the_same_answer_tokens(tmp_path):
    formatter = ChatFormatter(build_tokenizer(tmp_path))
    encoder = SampleEncoder(formatter, RATE, transform=BehaviourImitation(interleave_prob=0.5, teacher_view=True))
    items = [encoder(_sample(key=f"u{i}"), random.Random(i)) for i in range(4)]
    batch = collate(items, "mtbi", formatter.tokenizer.pad_token_id)
    teacher = batch.teacher
    assert teacher.num_clips == 0 and not (teacher.input_ids == formatter.audio_token_id).any()
    for row in range(4):
        student_answer = batch.labels[row][batch.labels[row] != -100].tolist()
        teacher_answer = teacher.labels[row][teacher.labels[row] != -100].tolist()
        assert student_answer == teacher_answer and student_answer
