"""Tiny WebDataset shards for the data tests: sine-wave speech, text samples, and deliberate corruptions.

Tars are written with `webdataset.TarWriter` directly (bytes in, bytes out), so these helpers depend on nothing
in the writing side of the data layer.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf
import webdataset as wds

RATE = 16000
TRANSCRIPTS = ["the red cat is on the box", "a blue dog", "say hello world", "one two three four five"]
Audio = dict[str, bytes]


def sine(seconds: float, rate: int = RATE, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """(S,) or (S, C) float32 sine tone."""
    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)


def encode(wave: np.ndarray, rate: int = RATE, fmt: str = "FLAC") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def speech_meta(seconds: float, transcript: str = TRANSCRIPTS[0], task: str = "asr", clips: int = 1) -> dict:
    """ASR-style metadata with `clips` audio parts ("flac", or "0.flac", "1.flac", ...)."""
    names = ["flac"] if clips == 1 else [f"{i}.flac" for i in range(clips)]
    user = [{"audio": name} for name in names] + [{"text": "transcribe"}]
    return {
        "task": task,
        "transcript": transcript,
        "duration": seconds * clips,
        "turns": [{"role": "user", "parts": user}, {"role": "assistant", "parts": [{"text": transcript}]}],
    }


def speech_sample(key: str, seconds: float, clips: int = 1, **meta_args) -> tuple[str, dict, Audio]:
    meta = speech_meta(seconds, clips=clips, **meta_args)
    names = ["flac"] if clips == 1 else [f"{i}.flac" for i in range(clips)]
    return key, meta, {name: encode(sine(seconds, freq=200.0 + 50 * i)) for i, name in enumerate(names)}


def text_sample(key: str, question: str = "what colour is the cat", answer: str = "red") -> tuple[str, dict, Audio]:
    meta = {
        "task": "text",
        "turns": [
            {"role": "user", "parts": [{"text": question}]},
            {"role": "assistant", "parts": [{"text": answer}]},
        ],
    }
    return key, meta, {}


def write_shard(path: Path, samples: list[tuple[str, dict | bytes, Audio]]) -> Path:
    """Writes `<key>.json` (a dict, or raw bytes to corrupt it) and the audio members of each sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path), encoder=False) as writer:
        for key, meta, audio in samples:
            payload = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
            writer.write({"__key__": key, "json": payload, **audio})
    return path


def write_index(folder: Path, shards: dict[str, list[tuple[str, dict | bytes, Audio]]]) -> Path:
    """index.json in the writer's format: shard paths relative to it, with sample and hour counts."""
    entries = []
    for name, samples in shards.items():
        seconds = sum(m.get("duration", 0) for _, m, _ in samples if isinstance(m, dict))
        entries.append({"path": name, "samples": len(samples), "hours": seconds / 3600, "tasks": {}})
    index = folder / "index.json"
    index.write_text(json.dumps({"name": folder.name, "shards": entries}))
    return index


def speech_set(
    folder: Path,
    shards: int,
    per_shard: int,
    seconds: tuple[float, float] = (0.2, 0.6),
    seed: int = 0,
    prefix: str = "s",
) -> list[str]:
    """A set of ASR samples over `shards` shards plus index.json; returns all keys."""
    rng = random.Random(seed)
    layout = {}
    for s in range(shards):
        layout[f"{prefix}-{s:06d}.tar"] = [
            speech_sample(f"{prefix}{s}_{i}", round(rng.uniform(*seconds), 2), transcript=rng.choice(TRANSCRIPTS))
            for i in range(per_shard)
        ]
        write_shard(folder / f"{prefix}-{s:06d}.tar", layout[f"{prefix}-{s:06d}.tar"])
    write_index(folder, layout)
    return [key for samples in layout.values() for key, _, _ in samples]


def text_set(folder: Path, shards: int, per_shard: int, prefix: str = "t") -> list[str]:
    """A set of text-only samples; returns all keys."""
    layout = {
        f"{prefix}-{s:06d}.tar": [text_sample(f"{prefix}{s}_{i}") for i in range(per_shard)] for s in range(shards)
    }
    for name, samples in layout.items():
        write_shard(folder / name, samples)
    write_index(folder, layout)
    return [key for samples in layout.values() for key, _, _ in samples]


def corrupt_set(folder: Path) -> tuple[list[str], dict[str, int]]:
    """One shard of each corruption next to good samples; returns (good keys, expected skips by reason).

    Shard 0 holds good samples and one of each bad-member kind; shard 1 is cut off in the middle of its third
    sample's audio, so its first two samples survive and the third is lost with the shard.
    """
    good = [speech_sample(f"good{i}", 0.3) for i in range(3)]
    empty_meta = speech_meta(0.3)
    empty_meta["turns"][0]["parts"][0] = {"audio": "wav"}
    empty = ("empty", empty_meta, {"wav": encode(np.zeros(0, dtype=np.float32), fmt="WAV")})
    missing = speech_meta(0.3)
    del missing["transcript"]
    bad = [
        ("garbage", speech_meta(0.3), {"flac": b"this is not audio" * 20}),
        ("badjson", b'{"task": "asr", "turns": [', {"flac": encode(sine(0.3))}),
        ("notranscript", missing, {"flac": encode(sine(0.3))}),
        empty,
    ]
    write_shard(folder / "c-000000.tar", [good[0], *bad, good[1]])
    tail = [speech_sample(f"tail{i}", 0.5) for i in range(3)]
    path = write_shard(folder / "c-000001.tar", [good[2], *tail])
    data = path.read_bytes()
    path.write_bytes(data[: _middle_of_member(data, "tail1.flac")])
    expected = {"unreadable_audio": 1, "bad_json": 1, "invalid_meta": 1, "empty_audio": 1, "truncated_tar": 1}
    return ["good0", "good1", "good2", "tail0"], expected


def _middle_of_member(tar_bytes: bytes, name: str) -> int:
    """Byte offset halfway through a member's data in an uncompressed tar."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.getmember(name)
        return member.offset_data + member.size // 2


def make_tokenizer(folder: Path):
    """The suite's tiny word-level chat tokenizer (built locally, no download), saved to `folder`."""
    from conftest import build_tokenizer

    return build_tokenizer(folder)


TOY_WORLD = Path(__file__).resolve().parent.parent / "data_shards" / "toy"


def toy_samples(set_name: str, count: int) -> list[tuple[str, dict, Audio]]:
    """The first `count` samples of a committed toy-world set (e.g. "asr/val"), as raw (key, meta, audio members)."""
    samples = []
    for shard in sorted((TOY_WORLD / set_name).glob("*.tar")):
        with tarfile.open(shard) as tar:
            members: dict[str, dict[str, bytes]] = {}
            for member in tar.getmembers():
                key, _, suffix = member.name.partition(".")
                members.setdefault(key, {})[suffix] = tar.extractfile(member).read()
        for key, parts in members.items():
            samples.append((key, json.loads(parts.pop("json")), parts))
            if len(samples) == count:
                return samples
    raise ValueError(f"{TOY_WORLD / set_name} holds fewer than {count} samples.")
