"""Streaming samples out of WebDataset shards: shard lists, node/worker splits, shuffling, decoding, skip counting.

Every bad sample or shard (truncated tar, unreadable audio, bad JSON, schema errors, empty audio, too long) is
skipped and counted by reason in a `DataTally`; the batching stage carries the counts to the main process on each
batch. Only explicit decoders run: `.json` as JSON, audio through soundfile; nothing is unpickled.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from webdataset.shardlists import expand_urls

from lit_sllm.data.audio import decode_audio, resample
from lit_sllm.data.remote import HTTP_SCHEMES, RawSample, RetryPolicy, fetch_text, read_shard
from lit_sllm.data.schema import Sample, SchemaError, audio_part_names, parse_meta

log = logging.getLogger(__name__)

TOO_LONG_POLICIES = ("drop", "clip")


@dataclass(frozen=True)
class ShardInfo:
    """One shard: where it is and, when an index.json told us, how much it holds."""

    url: str
    samples: int | None = None
    hours: float | None = None


@dataclass(frozen=True)
class ReadConfig:
    """How shards are read and samples decoded.

    Attributes:
        sample_rate: every clip is resampled to this rate (Hz).
        max_duration: longest sample kept, in seconds of audio summed over its clips; None keeps all.
        on_too_long: "drop" skips a longer sample (counted as `too_long`); "clip" shortens every clip in
            proportion so the total fits (counted in `clipped`).
        retry: how often and how patiently a remote shard is re-read before it is skipped.
    """

    sample_rate: int = 16000
    max_duration: float | None = None
    on_too_long: Literal["drop", "clip"] = "drop"
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if self.on_too_long not in TOO_LONG_POLICIES:
            raise ValueError(
                f"on_too_long (data.on_too_long) must be one of {TOO_LONG_POLICIES}, got {self.on_too_long!r}."
            )


@dataclass
class DataTally:
    """Counts skipped samples by reason (and clipped ones), in total and since the last `take`, and remote re-reads.

    The first `warn_limit` skips of each reason are logged with their full message, so a user can find and fix
    the sample; the rest are only counted. Every re-read of a remote shard is logged.
    """

    warn_limit: int = 3
    total: Counter = field(default_factory=Counter)
    pending: Counter = field(default_factory=Counter)
    clipped: int = 0
    pending_clipped: int = 0
    retries: int = 0

    def skip(self, reason: str, detail: str) -> None:
        self.total[reason] += 1
        self.pending[reason] += 1
        if self.total[reason] <= self.warn_limit:
            log.warning("Skipped (%s): %s", reason, detail)

    def retry(self, detail: str) -> None:
        self.retries += 1
        log.warning("Retrying: %s", detail)

    def clip(self) -> None:
        self.clipped += 1
        self.pending_clipped += 1

    def take(self) -> tuple[dict[str, int], int]:
        """(skips by reason, clipped samples) since the previous call."""
        skipped, clipped = dict(self.pending), self.pending_clipped
        self.pending.clear()
        self.pending_clipped = 0
        return skipped, clipped


# --- shard lists ------------------------------------------------------------------------------------------------


def read_index(path: str | Path) -> list[ShardInfo]:
    """Shards of an index.json (`{"shards": [{"path", "samples", "hours"}, ...]}`); paths are relative to it.

    `path` may be an http(s) URL: the shards are then URLs beside it.
    """
    remote = str(path).startswith(HTTP_SCHEMES)
    try:
        entries = json.loads(fetch_text(str(path)) if remote else Path(path).read_text())["shards"]
        folder = str(path).rsplit("/", 1)[0] + "/" if remote else f"{Path(path).parent}/"
        return [ShardInfo(folder + e["path"], e.get("samples"), e.get("hours")) for e in entries]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"Cannot read the shard index {path}: {err!r}. It must be JSON with a 'shards' list of "
            '{"path": ..., "samples": ..., "hours": ...}; rewrite it with `lit-sllm data` or point at the .tar files.'
        ) from err


def _resolve_one(spec: str) -> list[ShardInfo]:
    if spec.startswith(HTTP_SCHEMES) and spec.endswith(".json"):
        return read_index(spec)
    if spec.startswith("pipe:") or "://" in spec:
        return [ShardInfo(url) for url in expand_urls(spec)]
    path = Path(spec)
    if path.is_dir():
        index = path / "index.json"
        return read_index(index) if index.exists() else [ShardInfo(p) for p in sorted(glob.glob(str(path / "*.tar")))]
    if path.suffix == ".json":
        return read_index(path)
    urls = []
    for url in expand_urls(spec):
        matches = sorted(glob.glob(url)) if glob.has_magic(url) else [url]
        missing = [m for m in matches if not Path(m).exists()]
        if missing:
            raise FileNotFoundError(f"Shard {missing[0]} (from {spec!r}) does not exist; fix the path or pattern.")
        urls += matches
    return [ShardInfo(url) for url in urls]


def resolve_shards(spec: str | Sequence[str]) -> list[ShardInfo]:
    """Expands a shard spec into shards.

    Args:
        spec: one or a list of: a directory (its index.json, else its *.tar), an index.json, a glob, a brace
            pattern (`x-{000000..000009}.tar`), a local path, a `pipe:` URL (`pipe:aws s3 cp s3://b/x.tar -`), an
            http(s) URL of a shard, or of an index.json.

    Raises:
        FileNotFoundError: when nothing matches, or a named file is missing.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    shards = [shard for one in specs for shard in _resolve_one(str(one))]
    if not shards:
        raise FileNotFoundError(
            f"No shards match {spec!r}: give a directory with .tar files or index.json, a glob or a list."
        )
    return shards


# --- node and worker split -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """Which of the `count` parallel readers (ranks x DataLoader workers) this one is; `index` is rank-major."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


def current_slot(rank: int | None = None, world_size: int | None = None) -> Slot:
    """This reader's slot: rank/world from the arguments, else torch.distributed, else 0/1; worker from DataLoader."""
    if rank is None or world_size is None:
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world_size = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return Slot(rank, world_size, worker, workers)


# --- reading ----------------------------------------------------------------------------------------------------


def shuffled(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Streams `items` through a shuffle buffer of `size` (0 or 1: unchanged order)."""
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= max(size, 1):
            index = rng.randrange(len(buffer))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


# --- decoding ---------------------------------------------------------------------------------------------------


class _Skip(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _decode_clip(raw: RawSample, name: str, rate: int) -> torch.Tensor:
    where = f"shard {raw['__url__']}, key {raw['__key__']}, audio part '{name}'"
    if name not in raw:
        raise _Skip("missing_audio", f"{where}: no tar member {raw['__key__']}.{name}. Fix: add it or drop the part.")
    try:
        wave, sr = decode_audio(raw[name])
    except Exception as err:  # soundfile raises several types for undecodable bytes
        raise _Skip("unreadable_audio", f"{where}: {err}. Fix: re-encode the clip (FLAC or WAV).") from err
    if wave.numel() == 0:
        raise _Skip("empty_audio", f"{where}: the clip has no samples. Fix: drop the sample or the part.")
    return resample(wave, sr, rate)  # (S,)


def _parse(raw: RawSample) -> dict:
    shard, key = raw["__url__"], raw["__key__"]
    if "json" not in raw:
        raise _Skip("missing_json", f"shard {shard}, key {key}: no {key}.json member. Fix: add the metadata.")
    try:
        meta = json.loads(raw["json"])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _Skip("bad_json", f"shard {shard}, key {key}: {key}.json is not JSON ({err}). Fix: rewrite it.") from err
    try:
        return parse_meta(meta, shard=shard, key=key)
    except SchemaError as err:
        raise _Skip("invalid_meta", str(err)) from err


def _fit_duration(clips: dict[str, torch.Tensor], meta: dict, config: ReadConfig, tally: DataTally, key: str) -> float:
    """Applies `max_duration` (drop or clip) in place; returns the (possibly clipped) total seconds."""
    total = sum(c.numel() for c in clips.values()) / config.sample_rate
    if config.max_duration is None or total <= config.max_duration:
        return total
    if config.on_too_long == "drop":
        raise _Skip(
            "too_long",
            f"key {key}: {total:.1f} s of audio > max_duration {config.max_duration} s. Fix: raise max_duration or "
            "set on_too_long: clip to keep such samples.",
        )
    keep = config.max_duration / total
    for name, clip in clips.items():
        clips[name] = clip[: max(1, int(clip.numel() * keep))]
    tally.clip()
    total = sum(c.numel() for c in clips.values()) / config.sample_rate
    if meta.get("words"):
        meta["words"] = [w for w in meta["words"] if w[2] <= total]
    return total


def decode_sample(raw: RawSample, config: ReadConfig, tally: DataTally) -> Sample | None:
    """Decodes a raw sample into a `Sample` (mono clips at `config.sample_rate`), or counts why not; None then."""
    try:
        meta = _parse(raw)
        clips = {name: _decode_clip(raw, name, config.sample_rate) for name in dict.fromkeys(audio_part_names(meta))}
        duration = _fit_duration(clips, meta, config, tally, raw["__key__"]) if clips else None
    except _Skip as skip:
        tally.skip(skip.reason, str(skip))
        return None
    return Sample(
        key=raw["__key__"],
        task=meta["task"],
        turns=meta["turns"],
        audio={name: (clip, config.sample_rate) for name, clip in clips.items()},
        transcript=meta["transcript"],
        words=meta["words"],
        duration=duration,
        responses=meta["responses"],
        source=raw["__url__"],
        prompts=meta["prompts"],
        teacher_topk=meta["teacher_topk"],
    )


def _decoded(
    raws: Iterable[RawSample], config: ReadConfig, tally: DataTally, max_bad_in_a_row: int | None = None
) -> Iterator[Sample]:
    bad_in_a_row = 0
    for raw in raws:
        sample = decode_sample(raw, config, tally)
        if sample is not None:
            bad_in_a_row = 0
            yield sample
            continue
        bad_in_a_row += 1
        if max_bad_in_a_row is not None and bad_in_a_row >= max_bad_in_a_row:
            raise RuntimeError(
                f"{bad_in_a_row} samples in a row were unusable (last from {raw['__url__']}; skips so far: "
                f"{dict(tally.total)}). Check the set with `lit-sllm data inspect` and fix or drop the bad shards."
            )


# --- the two reading modes --------------------------------------------------------------------------------------


def finite_samples(
    shards: Sequence[ShardInfo], config: ReadConfig, slot: Slot, tally: DataTally, limit: int | None = None
) -> Iterator[Sample]:
    """Every sample of the set exactly once across all slots, in a stable order (evaluation).

    With at least as many shards as slots, each slot reads whole shards (strided); with fewer, or with a `limit`
    (the set's first `limit` records), every slot reads every shard and keeps every `count`-th sample, and shard-level
    problems are counted by slot 0 only.
    """
    if limit is None and len(shards) >= slot.count:
        raws = (raw for shard in shards[slot.index :: slot.count] for raw in read_shard(shard.url, tally, config.retry))
        yield from _decoded(raws, config, tally)
        return
    shard_tally = tally if slot.index == 0 else DataTally(warn_limit=0)
    raws = (raw for shard in shards for raw in read_shard(shard.url, shard_tally, config.retry))
    mine = (raw for index, raw in enumerate(itertools.islice(raws, limit)) if index % slot.count == slot.index)
    yield from _decoded(mine, config, tally)


def _drawn_shards(
    shards: Sequence[ShardInfo], rng: random.Random, tally: DataTally, retry: RetryPolicy
) -> Iterator[RawSample]:
    weights = [s.samples for s in shards] if all(s.samples for s in shards) else None
    empty_in_a_row, patience = 0, 3 * len(shards) + 10
    while empty_in_a_row < patience:
        shard = rng.choices(shards, weights=weights)[0]
        empty_in_a_row += 1
        for raw in read_shard(shard.url, tally, retry):
            empty_in_a_row = 0
            yield raw
    raise RuntimeError(
        f"{patience} shard draws in a row (from {len(shards)} shards, e.g. {shards[0].url}) gave no samples (skips: "
        f"{dict(tally.total)}). Check the set with `lit-sllm data inspect`."
    )


def infinite_samples(
    shards: Sequence[ShardInfo],
    config: ReadConfig,
    rng: random.Random,
    tally: DataTally,
    shuffle_buffer: int = 256,
    max_bad_in_a_row: int = 1000,
) -> Iterator[Sample]:
    """An endless stream from shards drawn with replacement (weighted by their sample counts when known).

    Raw (still encoded) samples pass a shuffle buffer before decoding, so the buffer costs compressed bytes only.
    Seed `rng` per rank and worker so that the streams differ and no rank runs out before another.

    Raises:
        RuntimeError: when the shards yield nothing, or `max_bad_in_a_row` samples in a row are unusable.
    """
    raws = shuffled(_drawn_shards(shards, rng, tally, config.retry), shuffle_buffer, rng)
    yield from _decoded(raws, config, tally, max_bad_in_a_row)


def peek_durations(shards: Sequence[ShardInfo], limit: int = 2000) -> list[float]:
    """Durations (s) of up to `limit` samples from the first shards, from their metadata (for bucket boundaries).

    Samples without a `duration` field are left out; nothing is decoded.
    """
    durations: list[float] = []
    for shard in shards:
        for raw in read_shard(shard.url, DataTally(warn_limit=0)):
            try:
                value = json.loads(raw.get("json", b"{}")).get("duration")
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                continue
            if isinstance(value, int | float) and value > 0:
                durations.append(float(value))
            if len(durations) >= limit:
                return durations
    return durations
