"""Bucketing limits and padding efficiency, fixed batches, weighted mixing, and collation into `Batch`."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
import torch
from data_helpers import RATE, make_tokenizer, speech_meta, text_sample

from lit_sllm.data.batch import IGNORE_INDEX
from lit_sllm.data.batching import (
    BatchingSpec,
    bucket_batches,
    estimate_boundaries,
    fixed_batches,
    mix,
    padding_ratio,
)
from lit_sllm.data.collate import SampleEncoder, collate
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.data.schema import Sample


def librispeech_like(n: int, seed: int = 0) -> list[float]:
    """Durations (s) shaped like LibriSpeech: most 10-17 s, a tail from 1 to 35 s."""
    rng = random.Random(seed)
    return [
        min(35.0, max(1.0, rng.gauss(12.5, 4.0))) if rng.random() < 0.85 else rng.uniform(1.0, 35.0) for _ in range(n)
    ]


def by_duration(duration: float) -> tuple[float, int]:
    return duration, 0


# --- bucketing ------------------------------------------------------------------------------------------------


def test_no_bucketed_batch_exceeds_its_limits_and_every_item_comes_out_once():
    durations = librispeech_like(3000)
    items = list(enumerate(durations))
    spec = BatchingSpec(max_duration=100.0, batch_size=12, bucket_buffer=3)
    boundaries = estimate_boundaries(durations[:500], spec.num_buckets)
    out = list(bucket_batches(items, spec, random.Random(0), lambda item: (item[1], 0), boundaries))
    assert all(len(b) * max(d for _, d in b) <= 100.0 + 1e-6 and len(b) <= 12 for b in out)
    assert sorted(i for batch in out for i, _ in batch) == list(range(3000))


def test_bucketing_pads_librispeech_like_lengths_by_less_than_ten_percent():
    durations = librispeech_like(20000, seed=1)
    spec = BatchingSpec(max_duration=200.0)
    boundaries = estimate_boundaries(librispeech_like(2000, seed=2), spec.num_buckets)
    out = list(bucket_batches(durations, spec, random.Random(0), by_duration, boundaries))
    real = sum(sum(batch) for batch in out)
    padded = sum(len(batch) * max(batch) for batch in out)
    assert real / padded >= 0.9
    unbucketed = list(fixed_batches(durations, 10))
    assert sum(map(sum, unbucketed)) / sum(len(b) * max(b) for b in unbucketed) < 0.8  # bucketing is what helps


def test_max_tokens_caps_padded_tokens_and_oversize_items_are_reported():
    items = [(0.0, n) for n in (5, 9, 30, 12, 7, 100, 3)]
    oversize = []
    spec = BatchingSpec(max_tokens=32)
    out = list(bucket_batches(items, spec, random.Random(0), lambda x: x, on_oversize=oversize.append))
    assert oversize == [(0.0, 100)]
    assert all(len(b) * max(t for _, t in b) <= 32 for b in out)
    assert sorted(t for b in out for _, t in b) == [3, 5, 7, 9, 12, 30]


def test_bucketing_is_seeded():
    durations = librispeech_like(400)
    spec = BatchingSpec(max_duration=60.0)

    def run(seed: int) -> list[list[float]]:
        return list(bucket_batches(durations, spec, random.Random(seed), by_duration, [5.0, 10.0, 15.0]))

    assert run(3) == run(3) and run(3) != run(4)


def test_estimate_boundaries_splits_at_quantiles():
    assert estimate_boundaries([float(d) for d in range(1, 101)], 4) == [26.0, 51.0, 76.0]
    assert estimate_boundaries([], 4) == []


def test_fixed_batches_keep_order_and_the_remainder():
    assert list(fixed_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_batching_spec_needs_a_limit():
    with pytest.raises(ValueError, match="batch_size"):
        BatchingSpec()
    with pytest.raises(ValueError, match="max_duration must be > 0"):
        BatchingSpec(max_duration=0)


def test_padding_ratio():
    assert padding_ratio([4, 2]) == pytest.approx(0.75)
    assert padding_ratio([]) == 1.0


# --- mixing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [{"speech": 0.85, "text": 0.15}, {"a": 2.0, "b": 1.0, "c": 1.0}])
def test_mixing_frequencies_over_2000_steps_follow_the_weights(weights):
    streams = {name: itertools.repeat(name) for name in weights}
    drawn = Counter(name for name, _ in itertools.islice(mix(streams, weights, random.Random(0)), 2000))
    total = sum(weights.values())
    for name, weight in weights.items():
        assert abs(drawn[name] / 2000 - weight / total) <= 0.03


def test_mixing_rejects_weights_that_do_not_sum_above_zero():
    with pytest.raises(ValueError, match="sum to > 0"):
        next(mix({"a": iter([1])}, {"a": 0.0}, random.Random(0)))


# --- collation ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def formatter(tmp_path_factory) -> ChatFormatter:
    return ChatFormatter(make_tokenizer(tmp_path_factory.mktemp("tok")))


def speech(key: str, seconds: list[float], transcript: str = "the red cat") -> Sample:
    meta = speech_meta(1.0, transcript=transcript, clips=len(seconds))
    names = ["flac"] if len(seconds) == 1 else [f"{i}.flac" for i in range(len(seconds))]
    audio = {n: (torch.full((int(s * RATE),), float(i + 1)), RATE) for i, (n, s) in enumerate(zip(names, seconds))}
    return Sample(key, "asr", meta["turns"], audio, transcript=transcript, duration=sum(seconds))


def test_collate_pads_tokens_and_clips_and_masks_labels_to_assistant_tokens(formatter):
    encoder = SampleEncoder(formatter, RATE)
    rng = random.Random(0)
    items = [encoder(speech("a", [0.5, 0.25]), rng), encoder(speech("b", [1.0], "a blue dog please"), rng)]
    batch = collate(items, "librispeech", formatter.tokenizer.pad_token_id)
    assert batch.source == "librispeech" and batch.keys == ["a", "b"] and batch.tasks == ["asr", "asr"]
    assert batch.references == ["the red cat", "a blue dog please"]
    # clips in placeholder order, zero padded, with lengths
    assert batch.audio.shape == (3, RATE) and batch.audio_lengths.tolist() == [RATE // 2, RATE // 4, RATE]
    assert batch.audio[0, : RATE // 2].eq(1).all() and batch.audio[0, RATE // 2 :].eq(0).all()
    assert batch.audio[1, 0] == 2 and batch.audio[2, -1] == 1
    assert (batch.input_ids == formatter.audio_token_id).sum(1).tolist() == [2, 1]
    tokenizer = formatter.tokenizer
    for row, text in enumerate(batch.references):
        trained = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert trained == tokenizer(text + " <|end|>", add_special_tokens=False)["input_ids"]
        length = int(batch.attention_mask[row].sum())
        assert batch.input_ids[row, length:].eq(tokenizer.pad_token_id).all()
        assert batch.labels[row, length:].eq(IGNORE_INDEX).all()
    assert batch.extras["padding_ratio"] == pytest.approx(1.75 / 3)
    assert batch.extras["tokens"] == int(batch.attention_mask.sum())
    assert batch.extras["audio_seconds"] == pytest.approx(1.75)


def test_generation_mode_encodes_the_prompt_and_keeps_the_reference(formatter):
    item = SampleEncoder(formatter, RATE, generate=True)(speech("a", [0.5]), random.Random(0))
    tokens = formatter.tokenizer.convert_ids_to_tokens(item.input_ids)
    assert tokens[-1] == "<|assistant|>" and "cat" not in tokens
    assert item.reference == "the red cat" and set(item.labels) == {IGNORE_INDEX}


def test_text_batch_has_no_audio_and_a_token_padding_ratio(formatter):
    key, meta, _ = text_sample("t")
    encoder = SampleEncoder(formatter, RATE)
    items = [encoder(Sample(key, "text", meta["turns"]), random.Random(0)) for _ in range(2)]
    batch = collate(items, "text", 0)
    assert batch.num_clips == 0 and batch.audio_lengths.numel() == 0
    assert batch.extras["padding_ratio"] == 1.0 and batch.references == ["red", "red"]


class AnswerYes:
    """A transform that replaces the answer with "yes" and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, sample: Sample, rng: random.Random) -> Sample:
        self.calls += 1
        sample.turns[-1]["parts"] = [{"text": "yes"}]
        return sample


def test_transform_runs_before_encoding_and_missing_clips_are_an_error(formatter):
    transform = AnswerYes()
    item = SampleEncoder(formatter, RATE, transform=transform)(speech("a", [0.5]), random.Random(0))
    assert transform.calls == 1 and item.reference == "yes"
    broken = speech("b", [0.5])
    broken.audio.clear()
    with pytest.raises(KeyError, match="refers to audio part 'flac'"):
        SampleEncoder(formatter, RATE)(broken, random.Random(0))


def with_teacher(sample: Sample, answer: str | None = None) -> Sample:
    """Adds a transcript-only view of the conversation, as the MTBI transform does."""
    reply = answer or sample.turns[-1]["parts"][0]["text"]
    sample.teacher_turns = [
        {"role": "user", "parts": [{"text": sample.transcript}, {"text": "transcribe"}]},
        {"role": "assistant", "parts": [{"text": reply}]},
    ]
    return sample


def test_teacher_views_are_collated_into_the_teacher_batch_with_the_same_answer_tokens(formatter):
    encoder, rng = SampleEncoder(formatter, RATE), random.Random(0)
    assert collate([encoder(speech("z", [0.5]), rng)], "asr", 0).teacher is None
    items = [encoder(with_teacher(speech(k, [0.5], t)), rng) for k, t in (("a", "the red cat"), ("b", "a dog"))]
    batch = collate(items, "mtbi", 0)
    teacher = batch.teacher
    assert "teacher" not in batch.extras
    moved = batch.to("meta")  # the teacher batch travels with the batch
    assert moved.teacher.input_ids.device.type == moved.teacher.labels.device.type == "meta"
    assert batch.teacher.input_ids.device.type == "cpu"
    assert teacher.num_clips == 0 and teacher.keys == ["a", "b"]
    assert (teacher.input_ids == formatter.audio_token_id).sum() == 0
    for row in range(2):
        student_answer = batch.labels[row][batch.labels[row] != IGNORE_INDEX]
        assert torch.equal(teacher.labels[row][teacher.labels[row] != IGNORE_INDEX], student_answer)
    with pytest.raises(ValueError, match="or on none"):
        collate([items[0], encoder(speech("c", [0.5]), rng)], "mtbi", 0)
    with pytest.raises(ValueError, match="answer tokens differ"):
        encoder(with_teacher(speech("d", [0.5]), answer="no"), rng)
