"""Synthetic benchmark data: LibriSpeech-like durations, speech-like audio, word-timed transcripts, shard sets.

Nothing is downloaded. The duration distribution imitates LibriSpeech's training utterances (mean about 12.7 s, a
peak near 14-15 s, a long tail of short utterances down to about 1 s, nothing over 24.5 s); that shape is what
decides how well bucketing packs batches.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lit_sllm.bench.models import word
from lit_sllm.data.audio import encode_flac
from lit_sllm.data.shards import ShardSetWriter

WORDS_PER_SECOND = 2.7  # read speech
MTBI_TASKS = ("continue", "summarise")


def librispeech_durations(count: int, seed: int = 0) -> list[float]:
    """`count` utterance lengths (s, two decimals): 75 % around 14.5 s (sd 1.7), 25 % spread over 1.5-14 s."""
    rng = random.Random(seed)
    durations = []
    for _ in range(count):
        seconds = rng.gauss(14.5, 1.7) if rng.random() < 0.75 else rng.uniform(1.5, 14.0)
        durations.append(round(min(24.5, max(1.0, seconds)), 2))
    return durations


def mtbi_token_lengths(count: int, seed: int = 0) -> list[int]:
    """`count` text-token counts of MTBI-like conversations: a chat template and task prompt of 15-30 tokens plus a
    teacher answer of log-normal length (median 37 tokens, 5 % above 100), whatever the utterance's duration."""
    rng = random.Random(f"{seed}/tokens")
    return [rng.randint(15, 30) + max(1, round(rng.lognormvariate(math.log(37), 0.6))) for _ in range(count)]


def uniform_durations(count: int, low: float, high: float, seed: int = 0) -> list[float]:
    """`count` clip lengths (s, two decimals) drawn uniformly from [low, high]."""
    rng = random.Random(seed)
    return [round(rng.uniform(low, high), 2) for _ in range(count)]


def speech_wave(seconds: float, rate: int, generator: torch.Generator) -> Tensor:
    """(S,) a voiced-sounding signal: a 100-250 Hz harmonic tone plus noise under a 4 Hz syllable envelope.

    FLAC compresses it about as well as read speech (to roughly 60-80 % of 16-bit PCM), so decoding costs the same.
    """
    n = max(1, round(seconds * rate))
    t = torch.arange(n) / rate  # (S,)
    pitch = 100 + 150 * float(torch.rand(1, generator=generator))
    voiced = sum(torch.sin(2 * math.pi * pitch * k * t) / k for k in (1, 2, 3))
    envelope = torch.sin(2 * math.pi * 4.0 * t + float(torch.rand(1, generator=generator)) * 6).abs()
    return (0.15 * voiced * envelope + 0.02 * torch.randn(n, generator=generator)).clamp(-1, 1)


def timed_words(seconds: float, rng: random.Random, vocabulary: int) -> list[list]:
    """[word, start, end] for words spoken evenly over the clip (about 2.7 per second, at least one)."""
    count = max(1, round(seconds * WORDS_PER_SECOND))
    slot = seconds / count
    return [
        [word(rng.randrange(vocabulary)), round(i * slot, 3), round(i * slot + 0.8 * slot, 3)] for i in range(count)
    ]


def sentence(length: int, rng: random.Random, vocabulary: int) -> str:
    return " ".join(word(rng.randrange(vocabulary)) for _ in range(length))


def speech_meta(key: str, seconds: float, rng: random.Random, vocabulary: int, mtbi: bool = False) -> dict:
    """ASR metadata with word times; with `mtbi`, teacher responses and their prompts for `MTBI_TASKS` too."""
    words = timed_words(seconds, rng, vocabulary)
    transcript = " ".join(w for w, _, _ in words)
    meta = {
        "key": key,
        "task": "asr",
        "transcript": transcript,
        "words": words,
        "duration": seconds,
        "turns": [
            {"role": "user", "parts": [{"audio": "flac"}, {"text": sentence(3, rng, vocabulary)}]},
            {"role": "assistant", "parts": [{"text": transcript}]},
        ],
    }
    if mtbi:
        meta["prompts"] = {task: sentence(6, rng, vocabulary) for task in MTBI_TASKS}
        meta["responses"] = {task: sentence(rng.randint(10, 30), rng, vocabulary) for task in MTBI_TASKS}
    return meta


@dataclass
class SpeechSet:
    """A written benchmark set: its shard folder, the FLAC folder copy (if any), keys and total audio seconds."""

    shards: Path
    folder: Path | None
    keys: list[str]
    seconds: float


def write_speech_set(
    root: str | Path,
    durations: list[float],
    rate: int,
    vocabulary: int,
    shard_size: int = 50,
    mtbi: bool = False,
    folder_copy: bool = False,
    seed: int = 0,
) -> SpeechSet:
    """Writes one utterance per duration as a shard set (`<root>/shards`) with `ShardSetWriter`.

    Args:
        root: output folder.
        durations: seconds of each utterance.
        rate: sample rate of the FLAC audio.
        vocabulary: words the transcripts draw from (`word(0) ..`).
        shard_size: samples per shard.
        mtbi: add teacher responses and prompts.
        folder_copy: also write `<root>/flac/<key>.flac` and `<key>.json`, the same files, for a folder loader.
        seed: seeds audio and text.
    """
    root = Path(root)
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    folder = root / "flac" if folder_copy else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    keys = []
    with ShardSetWriter(root / "shards", "bench", shard_size) as writer:
        for index, seconds in enumerate(durations):
            key = f"utt{index:06d}"
            meta = speech_meta(key, seconds, rng, vocabulary, mtbi)
            flac = encode_flac(speech_wave(seconds, rate, generator), rate)
            writer.write(meta, {"flac": flac})
            if folder is not None:
                (folder / f"{key}.flac").write_bytes(flac)
                (folder / f"{key}.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "key"}))
            keys.append(key)
    return SpeechSet(root / "shards", folder, keys, sum(durations))
