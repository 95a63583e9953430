"""The JSONL manifest converter: schema samples with audio files -> FLAC-encoded samples -> a shard set."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_sllm.data.audio import encode_flac, read_audio, resample
from lit_sllm.data.converters.jsonl import line_key, read_jsonl
from lit_sllm.data.converters.pool import ordered_map
from lit_sllm.data.schema import SchemaError, parse_meta
from lit_sllm.data.shards import SkipLog, StoredSample, WriteResult, check_audio_parts, check_key, write_samples


@dataclass
class ClipJob:
    """One manifest line whose audio files still have to be read and encoded (in a worker process)."""

    where: str
    meta: dict[str, Any]
    files: dict[str, str]
    sample_rate: int | None


def encode_clips(job: ClipJob) -> tuple[ClipJob, dict[str, bytes] | str]:
    """Reads, optionally resamples and FLAC-encodes a job's files; returns the audio, or an error message."""
    audio, seconds = {}, 0.0
    for part, file in job.files.items():
        try:
            wave, rate = read_audio(file)
        except (OSError, RuntimeError) as err:
            return job, f"cannot read audio file {file}: {err}"
        if job.sample_rate:
            wave, rate = resample(wave, rate, job.sample_rate), job.sample_rate
        audio[part] = encode_flac(wave, rate)
        seconds += wave.numel() / rate
    if job.meta.get("duration") is None:
        job.meta["duration"] = seconds
    return job, audio


def manifest_entry(record: dict, path: Path, lineno: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Splits one manifest line into (validated meta with "key", audio part -> absolute file path)."""
    record = dict(record)
    key = check_key(record.pop("key", None) or line_key(path, lineno))
    files, single = record.pop("audio", None), record.pop("audio_path", None)
    if single is not None:
        if files is not None:
            raise SchemaError("both 'audio' and 'audio_path' are given", key=key, fix="keep one of them")
        files = {"flac": single}
    files = {} if files is None else files
    if not isinstance(files, dict) or not all(isinstance(f, str) and p.endswith("flac") for p, f in files.items()):
        fix = 'write {"flac": "a.wav"} for one clip or {"0.flac": "a.wav", "1.flac": "b.wav"} for several'
        raise SchemaError(f"'audio' must map FLAC part names to file paths, got {files!r}", key=key, fix=fix)
    meta = parse_meta(record, key=key)
    check_audio_parts(meta, files, key=key)
    return meta | {"key": key}, {part: str(path.parent / file) for part, file in files.items()}


def manifest_samples(
    manifest_path: str | Path, sample_rate: int | None = None, workers: int = 1, skips: SkipLog | None = None
) -> Iterator[StoredSample]:
    """Samples of a JSONL manifest (format in `write_manifest`), audio encoded as FLAC by `workers` processes."""
    path, skips = Path(manifest_path), skips if skips is not None else SkipLog()
    records = read_jsonl(path, skips)
    return _encoded_samples(_manifest_jobs(path, records, sample_rate, skips), workers, skips)


def _manifest_jobs(path: Path, records: Iterable[tuple[int, dict]], sample_rate: int | None, skips: SkipLog):
    for lineno, record in records:
        where = f"{path}:{lineno}"
        try:
            meta, files = manifest_entry(record, path, lineno)
        except SchemaError as err:
            skips.add("schema", where, str(err))
            continue
        missing = [file for file in files.values() if not Path(file).is_file()]
        if missing:
            skips.add("missing_audio", where, f"audio file {missing[0]} does not exist")
            continue
        yield ClipJob(where, meta, files, sample_rate)


def _encoded_samples(jobs: Iterable[ClipJob], workers: int, skips: SkipLog) -> Iterator[StoredSample]:
    for job, audio in ordered_map(encode_clips, jobs, workers):
        if isinstance(audio, str):
            skips.add("bad_audio", job.where, audio)
        else:
            yield job.meta, audio


def write_manifest(
    manifest_path: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    shard_size: int = 1000,
    workers: int = 1,
    sample_rate: int | None = None,
) -> WriteResult:
    """Writes the samples of a JSONL manifest into a shard set.

    Each line is one schema sample (task, turns, transcript, words, duration, responses) plus:
    - "key" (optional): the sample key; made from the manifest name and line number when absent.
    - "audio": {"flac": "a.wav"} for one clip, or {"0.flac": "a.wav", "1.flac": "b.wav"} for several, mapping
      the part names the turns reference to audio files (any soundfile format; relative paths are relative to
      the manifest's folder); or "audio_path": "a.wav" as a short form of {"flac": "a.wav"}.
    Audio is downmixed to mono, resampled only when `sample_rate` is given, and stored as 16-bit FLAC; a missing
    "duration" is filled with the summed clip lengths. Lines with bad JSON, schema errors or missing/unreadable
    audio are logged with their line number, counted in the result's `skips`, and left out.

    Args:
        manifest_path: the JSONL manifest.
        out_dir: folder for the shards and index.json.
        name: shard file prefix; defaults to the manifest's file name without extension.
        shard_size: samples per shard.
        workers: processes reading and encoding audio; the output is the same for any number.
        sample_rate: resample every clip to this rate; None keeps each file's rate.
    """
    path, skips = Path(manifest_path), SkipLog()
    samples = manifest_samples(path, sample_rate, workers, skips)
    return write_samples(samples, out_dir, name or path.stem, shard_size, skips)
