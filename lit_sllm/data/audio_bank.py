"""Audio to draw augmentation material from: noise for additive noise, room impulse responses for reverberation.

A bank is a folder of audio files, searched recursively (a MUSAN-style `musan/noise/free-sound/*.wav` layout, or a
folder of RIR files), or a shard set. Folder files are decoded whole the first time they are drawn and held in memory
while the bank holds less than `pool_seconds`; past that, a file is read one excerpt at a time (soundfile seeks, so
only the excerpt is decoded). A small folder (a few minutes of noise, a folder of RIRs) is thus read from disk once per
process, a large one (all of MUSAN) costs one short read per draw, and either way a draw gives the same samples. A
shard set cannot be read at random, so its clips are decoded once per process into a pool of at most `pool_seconds`.
Every draw comes from the caller's generator, so what a sample gets is reproducible.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
from torch import Tensor

from lit_sllm.data.audio import decode_audio, read_audio, resample
from lit_sllm.data.pipeline import DataTally, read_shard, resolve_shards

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".sph", ".aiff")


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _mono(data) -> Tensor:
    """(S,) from soundfile's (S, C) float32 frames: the channel itself when there is one (no copy), else the mean."""
    wave = torch.from_numpy(data.astype("float32", copy=False))
    if wave.dim() == 2:
        return wave[:, 0] if wave.shape[1] == 1 else wave.mean(dim=1)
    return wave  # (S,)


def _loop_to(wave: Tensor, length: int) -> Tensor:
    """`wave` repeated (or cut) to exactly `length` samples."""
    repeats = math.ceil(length / max(1, wave.numel()))
    return wave.repeat(repeats)[:length] if repeats > 1 else wave[:length]


class AudioBank:
    """Clips to draw from, given as a folder of audio files or a shard set.

    Args:
        source: a folder (searched recursively for wav/flac/ogg/mp3 files), or any shard spec
            `lit_sllm.data.pipeline.resolve_shards` takes (a folder with .tar files or index.json, a glob, a list).
        pool_seconds: the most audio held in memory per process (whole folder files, or a shard set's pool).

    Raises:
        FileNotFoundError: when the source holds no audio file and no shard.
    """

    def __init__(self, source: str | list[str], pool_seconds: float = 600.0) -> None:
        self.source, self.pool_seconds = source, pool_seconds
        folder = Path(source) if isinstance(source, str) else None
        self.files: list[Path] = []
        if folder is not None and folder.is_dir() and not (folder / "index.json").exists():
            self.files = _audio_files(folder)
        self.shards = [] if self.files else resolve_shards(source)
        self._info: dict[Path, Any] = {}  # soundfile's header info per file
        self._held: dict[Path, Tensor] = {}  # whole folder files at their own rate, (S,)
        self._held_seconds = 0.0
        self._pool: dict[int, list[Tensor]] = {}

    def __len__(self) -> int:
        return len(self.files) if self.files else len(self.shards)

    def excerpt(self, length: int, rate: int, rng: random.Random) -> Tensor:
        """(length,) a random stretch of a random clip at `rate` Hz, looped when the clip is shorter."""
        if not self.files:
            clip = self.clip(rate, rng)
            if clip.numel() <= length:
                return _loop_to(clip, length)
            start = rng.randrange(clip.numel() - length + 1)
            return clip[start : start + length]
        path = self.files[rng.randrange(len(self.files))]
        info = self._header(path)
        need = math.ceil(length * info.samplerate / rate)
        start = rng.randrange(info.frames - need + 1) if info.frames > need else 0
        held = self._whole(path)
        if held is not None:
            wave = held[start : start + need]  # a view: the bank's copy is only read
        else:
            data, _ = sf.read(str(path), start=start, frames=min(need, info.frames), dtype="float32", always_2d=True)
            wave = _mono(data)
        return _loop_to(resample(wave, info.samplerate, rate), length)

    def clip(self, rate: int, rng: random.Random) -> Tensor:
        """(S,) one whole random clip at `rate` Hz."""
        if self.files:
            path = self.files[rng.randrange(len(self.files))]
            held = self._whole(path)
            wave, file_rate = (held, self._header(path).samplerate) if held is not None else read_audio(path)
            return resample(wave, file_rate, rate)
        pool = self._pool.get(rate)
        if pool is None:
            pool = self._pool[rate] = self._fill_pool(rate)
        return pool[rng.randrange(len(pool))]

    def _header(self, path: Path) -> Any:
        return self._info.get(path) or self._info.setdefault(path, sf.info(str(path)))

    def _whole(self, path: Path) -> Tensor | None:
        """(S,) the whole file at its own rate when the bank holds it (decoding it on its first draw, if it fits in
        what is left of `pool_seconds`), else None."""
        held = self._held.get(path)
        if held is None:
            info = self._header(path)
            seconds = info.frames / info.samplerate
            if self._held_seconds + seconds > self.pool_seconds:
                return None
            held = self._held[path] = read_audio(path)[0]
            self._held_seconds += seconds
        return held

    def _fill_pool(self, rate: int) -> list[Tensor]:
        """Decodes the shard set's audio members, in order, until `pool_seconds`; undecodable ones are counted."""
        pool, seconds, tally = [], 0.0, DataTally(warn_limit=1)
        for shard in self.shards:
            for raw in read_shard(shard.url, tally):
                for ext, data in raw.items():
                    if not ext.endswith(tuple(s[1:] for s in AUDIO_SUFFIXES)):
                        continue
                    try:
                        wave, clip_rate = decode_audio(data)
                    except Exception as err:  # soundfile raises several types for undecodable bytes
                        tally.skip("unreadable_audio", f"{shard.url} {raw['__key__']}.{ext}: {err}")
                        continue
                    if wave.numel():
                        pool.append(resample(wave, clip_rate, rate))
                        seconds += pool[-1].numel() / rate
                    if seconds >= self.pool_seconds:
                        return pool
        if tally.total:
            log.warning("Augmentation bank %s: skipped %s", self.source, dict(tally.total))
        if not pool:
            raise FileNotFoundError(f"The shards of {self.source!r} hold no decodable audio member.")
        return pool
