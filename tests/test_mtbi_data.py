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


def test_interleaving_gives_text_spans_and_cut_clips_that_cover_the_utterance():
    out = BehaviourImitation(interleave_prob=1.0, max_span=2)(_sample(), random.Random(3))
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
