"""MTBI speech/text interleaving: within one utterance, some word spans are given as text and the rest as speech.

Pure functions on word times and a waveform; the MTBI transform applies them to a sample's user turn. Two levels:
`interleave` cuts the waveform into clips at word times (each clip is encoded alone, without its neighbours);
`interleave_spans` keeps the one clip and gives each audio part the seconds it covers, so the model encodes the
utterance once and cuts its output frames at those times (`lit_sllm.models.frame_spans`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from torch import Tensor

Word = tuple[str, float, float]


@dataclass
class Span:
    """A run of consecutive words given in one modality: words[start:end]."""

    start: int
    end: int
    as_text: bool


def random_spans(num_words: int, rng: random.Random, min_span: int = 1, max_span: int = 4) -> list[Span]:
    """Cuts `num_words` into runs of `min_span`..`max_span` words that alternate modality, starting with a random one.

    With two or more words, at least one run is text and one is speech.
    """
    spans, start, as_text = [], 0, rng.random() < 0.5
    while start < num_words:
        end = min(num_words, start + rng.randint(min_span, max_span))
        spans.append(Span(start, end, as_text))
        start, as_text = end, not as_text
    if num_words >= 2 and len(spans) == 1:  # one run covers everything: split it so both modalities appear
        cut = rng.randint(1, num_words - 1)
        spans = [Span(0, cut, spans[0].as_text), Span(cut, num_words, not spans[0].as_text)]
    return spans


def cut_points(words: list[Word], duration: float) -> list[float]:
    """Cut times between words (midway through each pause), with 0 and `duration` at the ends: len(words) + 1."""
    inner = [(words[i][2] + words[i + 1][1]) / 2 for i in range(len(words) - 1)]
    return [0.0, *inner, duration]


def interleave(
    words: list[Word], wave: Tensor, sample_rate: int, spans: list[Span], clip_prefix: str = "seg"
) -> tuple[list[dict[str, str]], dict[str, Tensor]]:
    """Turns one utterance into alternating text and audio parts.

    Args:
        words: (word, start s, end s) for every word of the utterance, in order.
        wave: (S,) the utterance's waveform.
        sample_rate: rate of `wave`.
        spans: which word runs become text (from `random_spans`).
        clip_prefix: audio part names are `<prefix><i>`.

    Returns:
        The parts (`{"text": ...}` or `{"audio": name}`) in order, and name -> (S_i,) audio clip cut at word times.
    """
    cuts = cut_points(words, wave.shape[-1] / sample_rate)
    parts: list[dict[str, str]] = []
    clips: dict[str, Tensor] = {}
    for span in spans:
        if span.as_text:
            parts.append({"text": " ".join(word for word, _, _ in words[span.start : span.end])})
            continue
        name = f"{clip_prefix}{len(clips)}"
        first, last = round(cuts[span.start] * sample_rate), round(cuts[span.end] * sample_rate)
        clips[name] = wave[..., first:last]
        parts.append({"audio": name})
    return parts, clips


def interleave_spans(words: list[Word], duration: float, spans: list[Span], clip: str) -> list[dict[str, Any]]:
    """Turns one utterance into alternating text parts and audio parts that name seconds of its one clip.

    Args:
        words: (word, start s, end s) for every word of the utterance, in order.
        duration: seconds of the clip.
        spans: which word runs become text (from `random_spans`).
        clip: the audio part name of the utterance's clip.

    Returns:
        The parts in order: `{"text": ...}` or `{"audio": clip, "start": s, "end": e}`, cut at the same times as
        `interleave` cuts the waveform.
    """
    cuts = cut_points(words, duration)
    parts: list[dict[str, Any]] = []
    for span in spans:
        if span.as_text:
            parts.append({"text": " ".join(word for word, _, _ in words[span.start : span.end])})
        else:
            parts.append({"audio": clip, "start": cuts[span.start], "end": cuts[span.end]})
    return parts
