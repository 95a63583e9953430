"""Interleaving puts the right audio where the words were (hand-made example)."""

from __future__ import annotations

import random

import pytest
import torch

from lit_sllm.data.interleave import Span, cut_points, interleave, interleave_spans, random_spans

RATE = 100  # 1 sample = 10 ms, so times map to exact sample indices
WORDS = [("the", 0.10, 0.30), ("red", 0.40, 0.60), ("cat", 0.70, 0.90), ("sat", 1.00, 1.20)]


def _wave() -> torch.Tensor:
    """Each word's samples hold its index + 1; pauses hold 0. 1.3 s long."""
    wave = torch.zeros(130)
    for i, (_, start, end) in enumerate(WORDS):
        wave[round(start * RATE) : round(end * RATE)] = i + 1
    return wave


def test_cut_points_fall_midway_through_pauses():
    assert cut_points(WORDS, 1.3) == pytest.approx([0.0, 0.35, 0.65, 0.95, 1.3])


def test_interleave_puts_each_words_audio_in_its_clip():
    spans = [Span(0, 1, as_text=False), Span(1, 3, as_text=True), Span(3, 4, as_text=False)]
    parts, clips = interleave(WORDS, _wave(), RATE, spans)
    assert parts == [{"audio": "seg0"}, {"text": "red cat"}, {"audio": "seg1"}]
    assert set(clips["seg0"].unique().tolist()) == {0.0, 1.0}  # "the" and nothing else
    assert clips["seg0"].shape[0] == 35  # 0 .. 0.35 s
    assert set(clips["seg1"].unique().tolist()) == {0.0, 4.0}  # "sat" and nothing else
    assert clips["seg1"].shape[0] == 35  # 0.95 .. 1.3 s
    # speech + text cover the utterance exactly once: every word's samples land in exactly one clip or as text
    word_samples = {int(v) for clip in clips.values() for v in clip.unique().tolist() if v}
    assert word_samples == {1, 4}


def test_interleave_spans_name_the_seconds_interleave_cuts():
    spans = [Span(0, 1, as_text=False), Span(1, 3, as_text=True), Span(3, 4, as_text=False)]
    parts = interleave_spans(WORDS, 1.3, spans, "flac")
    assert parts == [
        {"audio": "flac", "start": 0.0, "end": pytest.approx(0.35)},
        {"text": "red cat"},
        {"audio": "flac", "start": pytest.approx(0.95), "end": 1.3},
    ]
    _, clips = interleave(WORDS, _wave(), RATE, spans)  # the same seconds as the clip-level cut
    audio = [p for p in parts if "audio" in p]
    assert [round((p["end"] - p["start"]) * RATE) for p in audio] == [c.shape[0] for c in clips.values()]


def test_random_spans_cover_all_words_alternating_and_mixing_modalities():
    for seed in range(50):
        rng = random.Random(seed)
        n = rng.randint(2, 12)
        spans = random_spans(n, rng, 1, 3)
        assert spans[0].start == 0 and spans[-1].end == n
        assert all(a.end == b.start and a.as_text != b.as_text for a, b in zip(spans, spans[1:]))
        assert {s.as_text for s in spans} == {True, False}
    assert len(random_spans(1, random.Random(0))) == 1
