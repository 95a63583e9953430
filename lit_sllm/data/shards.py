"""Writing WebDataset shard sets, and the converters that feed them (JSONL manifest, LibriSpeech, chat JSONL).

A shard set is `<out>/<name>-000000.tar, ...` plus `<out>/index.json` with sample, hour and task counts per
shard. Every sample is validated against the schema before it is written; inputs that cannot be used are
skipped, logged with their location and counted by reason in a `SkipLog`, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import tarfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import webdataset as wds

import lit_sllm
from lit_sllm.data.audio import audio_seconds, encode_flac, read_audio, resample
from lit_sllm.data.schema import SchemaError, audio_part_names, parse_meta
from lit_sllm.data.tts import TTS

logger = logging.getLogger(__name__)

ASR_PROMPT = "Transcribe the audio."
INDEX_FILE = "index.json"
INDEX_FIELDS = ("name", "shards", "samples", "hours", "tasks", "created_with")
# WebDataset splits a member name into key and extension at the first dot, so keys carry none.
KEY_PATTERN = re.compile(r"^[^.\s/][^.\s]*$")
PART_PATTERN = re.compile(r"^[A-Za-z0-9]+(\.[A-Za-z0-9]+)*$")
Sample = tuple[dict[str, Any], dict[str, bytes]]  # (metadata with "key", audio part name -> encoded bytes)


@dataclass
class Problem:
    """One skipped input: where it is (file:line, file or key), why (a short reason) and the full message."""

    where: str
    reason: str
    message: str


@dataclass
class SkipLog:
    """Collects skipped inputs by reason; each skip is logged as a warning when it happens."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, reason: str, where: str, message: str) -> None:
        logger.warning("skipped %s (%s): %s", where, reason, message)
        self.problems.append(Problem(where, reason, message))

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(problem.reason for problem in self.problems))

    def summary(self, max_places: int = 5) -> str:
        """E.g. "skipped 2: bad_json 1 (m.jsonl:3), missing_audio 1 (m.jsonl:5)"."""
        if not self.problems:
            return "skipped 0"
        parts = []
        for reason, count in sorted(self.counts.items()):
            places = [p.where for p in self.problems if p.reason == reason]
            more = f", +{len(places) - max_places} more" if len(places) > max_places else ""
            parts.append(f"{reason} {count} ({', '.join(places[:max_places])}{more})")
        return f"skipped {len(self.problems)}: " + ", ".join(parts)


def check_key(key: Any, where: str | None = None) -> str:
    """Returns `key` if it can name a WebDataset sample (non-empty string, no dots, spaces or leading slash)."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise SchemaError(
            f"key {key!r} cannot name a sample (WebDataset splits member names at the first dot)",
            shard=where,
            field="key",
            fix="use letters, digits, '-' and '_' only",
        )
    return key


def check_audio_parts(
    meta: dict, available: Iterable[str], *, shard: str | None = None, key: str | None = None
) -> None:
    """Checks that the audio parts the turns reference and the clips at hand match one to one.

    Raises:
        SchemaError: for a referenced part without a clip, a clip no turn references, or a bad part name.
    """
    available = set(available)
    for i, turn in enumerate(meta["turns"]):
        for j, part in enumerate(turn["parts"]):
            if "audio" in part and part["audio"] not in available:
                name = part["audio"]
                problem = f"audio part {name!r} has no clip (clips: {sorted(available)})"
                raise SchemaError(
                    problem, shard=shard, key=key, field=f"turns[{i}].parts[{j}]", fix="add the audio or drop the part"
                )
    unreferenced = sorted(available - set(audio_part_names(meta)))
    if unreferenced:
        fix = f'reference it in a turn as {{"audio": "{unreferenced[0]}"}} or leave the clip out'
        raise SchemaError(
            f"audio clip {unreferenced[0]!r} is not referenced by any turn", shard=shard, key=key, fix=fix
        )
    for name in sorted(available):
        if name == "json" or not PART_PATTERN.match(name):
            fix = 'use "flac" for one clip or "0.flac", "1.flac", ... for several'
            raise SchemaError(f"audio part name {name!r} is not a valid member extension", key=key, fix=fix)


def clip_seconds(audio: dict[str, bytes], *, shard: str | None = None, key: str | None = None) -> float:
    """Summed length of encoded clips, from their headers; a clip that cannot be read is a schema error."""
    seconds = 0.0
    for name, data in audio.items():
        try:
            seconds += audio_seconds(data)
        except RuntimeError as err:  # soundfile's LibsndfileError
            raise SchemaError(
                f"audio part {name!r} cannot be read ({err})", shard=shard, key=key, fix="re-encode it"
            ) from err
    return seconds


def stored_meta(meta: dict, audio: dict[str, bytes], shard: str | None = None) -> tuple[str, dict]:
    """Validates one sample and returns (key, the JSON to store): normalised, without "key", duration filled."""
    key = check_key(meta.get("key"), shard)
    normalised = parse_meta({k: v for k, v in meta.items() if k != "key"}, shard=shard, key=key)
    check_audio_parts(normalised, audio, shard=shard, key=key)
    if normalised["duration"] is None and audio:
        normalised["duration"] = clip_seconds(audio, shard=shard, key=key)
    return key, {name: value for name, value in normalised.items() if value is not None and value != {}}


class ShardSetWriter:
    """Writes validated samples into `out_dir/<name>-000000.tar, ...` and, on close, `out_dir/index.json`.

    Each shard is written to `<shard>.partial` and renamed when complete, so a shard file is always whole.
    `write_shard` writes a whole shard under a chosen file name (e.g. one mirroring an input shard), and with
    `resume` a shard an earlier run finished joins the index as it is (`keep_shard`), so an interrupted job resumes.

    Args:
        out_dir: folder of the shard set; unless `resume`, it must not hold a shard set already (an index.json or
            <name>-*.tar).
        name: prefix of the shard files `write` numbers, and the set's name in the index.
        shard_size: samples per shard `write` fills.
        resume: accept a folder an earlier run wrote into, and keep this writer's finished shards when it fails
            (without `resume` they are removed, so that a half-written set does not block a rerun).
        extra: more top-level index fields (e.g. how the samples were made); they may not replace the standard ones.
    """

    def __init__(
        self,
        out_dir: str | Path,
        name: str,
        shard_size: int = 1000,
        *,
        resume: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
        if not name or "/" in name:
            raise ValueError(f"shard set name {name!r} must be a non-empty file name prefix without '/'.")
        clash = sorted(set(extra or {}) & set(INDEX_FIELDS))
        if clash:
            raise ValueError(f"extra index fields {clash} would replace standard ones; rename them.")
        self.out_dir, self.name, self.shard_size, self.resume = Path(out_dir), name, shard_size, resume
        self.extra = dict(extra or {})
        existing = [self.out_dir / INDEX_FILE] + sorted(self.out_dir.glob(f"{name}-*.tar"))
        existing = [path for path in existing if path.exists()]
        if existing and not resume:
            raise FileExistsError(f"{existing[0]} already exists: delete the old shard set or choose another folder.")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict[str, Any]] = []
        self.kept: set[str] = set()
        self.keys: set[str] = set()
        self.tar: wds.TarWriter | None = None
        self.index: dict[str, Any] = {}

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
            return
        self._abandon_shard()
        if not self.resume:  # a half-written set must not look complete, nor block a rerun
            for shard in self.shards:
                if shard["path"] not in self.kept:
                    (self.out_dir / shard["path"]).unlink(missing_ok=True)

    def write(self, meta: dict, audio: dict[str, bytes]) -> None:
        """Writes one sample: `meta` is its schema JSON plus "key"; `audio` maps part names ("flac") to bytes."""
        key, stored = self._checked(meta, audio)
        if self.tar is None or self.shards[-1]["samples"] >= self.shard_size:
            self._open_shard(f"{self.name}-{len(self.shards):06d}.tar")
        self._put(key, stored, audio)

    def write_shard(self, path: str, samples: Iterable[Sample]) -> dict[str, Any]:
        """Writes `samples` as one whole shard `out_dir/path`; returns its index entry.

        When a sample breaks the schema (or `samples` raises), nothing of the shard is kept and the error is raised.
        """
        self._open_shard(path)
        written = []
        try:
            for meta, audio in samples:
                key, stored = self._checked(meta, audio)
                self._put(key, stored, audio)
                written.append(key)
        except BaseException:
            self._abandon_shard()
            self.keys.difference_update(written)
            raise
        self._close_shard()
        return self.shards[-1]

    def keep_shard(self, path: str) -> dict[str, Any]:
        """Adds `out_dir/path`, a shard an earlier run finished, to the index as it is; returns its entry."""
        self._close_shard()
        self._add_entry(path)
        with tarfile.open(self.out_dir / path) as tar:
            for member in tar:
                key, _, part = member.name.partition(".")
                if part == "json":
                    stored = json.loads(tar.extractfile(member).read())
                    self._count(check_key(key, path), stored)
        self.kept.add(path)
        return self.shards[-1]

    def close(self) -> dict[str, Any]:
        """Closes the last shard, writes index.json and returns its content."""
        self._close_shard()
        tasks = Counter()
        for shard in self.shards:
            tasks.update(shard["tasks"])
        index = {
            "name": self.name,
            "shards": self.shards,
            "samples": sum(shard["samples"] for shard in self.shards),
            "hours": sum(shard["hours"] for shard in self.shards),
            "tasks": dict(sorted(tasks.items())),
            **self.extra,
            "created_with": f"lit_sllm {lit_sllm.__version__}",
        }
        (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        self.index = index
        return index

    def _checked(self, meta: dict, audio: dict[str, bytes]) -> tuple[str, dict]:
        key, stored = stored_meta(meta, audio)
        if key in self.keys:
            raise SchemaError("the key was already written", key=key, fix="give every sample a unique key")
        return key, stored

    def _put(self, key: str, stored: dict, audio: dict[str, bytes]) -> None:
        self.tar.write({"__key__": key, "json": json.dumps(stored, ensure_ascii=False).encode("utf-8")} | audio)
        self._count(key, stored)

    def _count(self, key: str, stored: dict) -> None:
        self.keys.add(key)
        shard = self.shards[-1]
        shard["samples"] += 1
        shard["hours"] += stored.get("duration", 0.0) / 3600
        shard["tasks"][stored["task"]] = shard["tasks"].get(stored["task"], 0) + 1

    def _add_entry(self, path: str) -> None:
        if "/" in path or not path.endswith(".tar") or any(shard["path"] == path for shard in self.shards):
            raise ValueError(f"shard {path!r} must be a new .tar file name in {self.out_dir}, without '/'.")
        self.shards.append({"path": path, "samples": 0, "hours": 0.0, "tasks": {}})

    def _open_shard(self, path: str) -> None:
        self._close_shard()
        self._add_entry(path)
        partial = self.out_dir / f"{path}.partial"
        self.tar = wds.TarWriter(str(partial), encoder=False, mtime=0)  # fixed mtime: same bytes per run

    def _close_shard(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None
            path = self.out_dir / self.shards[-1]["path"]
            os.replace(f"{path}.partial", path)

    def _abandon_shard(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None
            path = self.shards.pop()["path"]
            (self.out_dir / f"{path}.partial").unlink(missing_ok=True)


@dataclass
class WriteResult:
    """What a conversion wrote (the index) and what it skipped."""

    index_path: Path
    index: dict[str, Any]
    skips: SkipLog

    def summary(self) -> str:
        index = self.index
        return (
            f"wrote {index['samples']} samples ({index['hours']:.4f} h, {len(index['shards'])} shards) "
            f"to {self.index_path}; {self.skips.summary()}"
        )


def write_samples(
    samples: Iterable[Sample], out_dir: str | Path, name: str, shard_size: int = 1000, skips: SkipLog | None = None
) -> WriteResult:
    """Writes (meta, audio) samples into a shard set; samples that break the schema are skipped into `skips`."""
    skips = skips if skips is not None else SkipLog()
    with ShardSetWriter(out_dir, name, shard_size) as writer:
        for meta, audio in samples:
            try:
                writer.write(meta, audio)
            except SchemaError as err:
                skips.add("schema", str(meta.get("key")), str(err))
    return WriteResult(writer.out_dir / INDEX_FILE, writer.index, skips)


def line_key(path: Path, lineno: int) -> str:
    """A sample key made from a file name and a line number, e.g. "train_v2-00000042"."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', path.stem)}-{lineno:08d}"


def read_jsonl(path: str | Path, skips: SkipLog) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; lines that are not a JSON object go to `skips`.

    Raises:
        FileNotFoundError: at once, when `path` is not a file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass an existing JSONL file.")
    return _jsonl_records(path, skips)


def _jsonl_records(path: Path, skips: SkipLog) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                skips.add("bad_json", f"{path}:{lineno}", f"not valid JSON ({err})")
                continue
            if isinstance(record, dict):
                yield lineno, record
            else:
                skips.add("bad_json", f"{path}:{lineno}", f"expected a JSON object, got {type(record).__name__}")


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int = 1, ahead: int = 4) -> Iterator[Any]:
    """`fn` over `items` in input order; with `workers` > 1 in a process pool, at most `workers * ahead` in flight.

    Each worker runs torch on one thread, so `workers` processes use about `workers` cores.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers * ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


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
) -> Iterator[Sample]:
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


def _encoded_samples(jobs: Iterable[ClipJob], workers: int, skips: SkipLog) -> Iterator[Sample]:
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


def asr_sample(key: str, transcript: str, flac: bytes, prompt: str = ASR_PROMPT) -> Sample:
    """An ASR sample: the user gives the clip and `prompt`, the assistant answers with the transcript."""
    turns = [
        {"role": "user", "parts": [{"audio": "flac"}, {"text": prompt}]},
        {"role": "assistant", "parts": [{"text": transcript}]},
    ]
    return {"key": key, "task": "asr", "transcript": transcript, "turns": turns}, {"flac": flac}


def librispeech_to_samples(
    root: str | Path, skips: SkipLog | None = None, prompt: str = ASR_PROMPT
) -> Iterator[Sample]:
    """ASR samples from a LibriSpeech split: `root/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` with
    transcripts in `<speaker>-<chapter>.trans.txt` ("<utt id> <TEXT>" per line); keys are the utterance ids.

    The FLAC files are stored as they are. A transcript line without its FLAC ("no_audio"), a FLAC without a
    transcript line ("no_transcript") and a line without text ("bad_transcript") are counted in `skips`.

    Raises:
        FileNotFoundError: at once, when `root` has no speaker/chapter folders with FLAC or transcripts.
    """
    root, skips = Path(root), skips if skips is not None else SkipLog()
    chapters = sorted({path.parent for pattern in ("*/*/*.flac", "*/*/*.trans.txt") for path in root.glob(pattern)})
    if not chapters:
        raise FileNotFoundError(
            f"no <speaker>/<chapter>/*.flac or *.trans.txt under {root}: pass one LibriSpeech split folder, "
            "e.g. LibriSpeech/train-clean-100."
        )
    return _librispeech_samples(chapters, prompt, skips)


def _chapter_transcripts(chapter: Path, skips: SkipLog) -> dict[str, tuple[str, str]]:
    """Utterance id -> (transcript, "file:line") for every transcript file of one chapter folder."""
    transcripts = {}
    for trans in sorted(chapter.glob("*.trans.txt")):
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            utt, _, text = line.strip().partition(" ")
            if utt and text.strip():
                transcripts[utt] = (text.strip(), f"{trans}:{lineno}")
            elif utt:
                skips.add("bad_transcript", f"{trans}:{lineno}", f"expected '<utt id> <text>', got {line!r}")
    return transcripts


def _librispeech_samples(chapters: list[Path], prompt: str, skips: SkipLog) -> Iterator[Sample]:
    for chapter in chapters:
        transcripts = _chapter_transcripts(chapter, skips)
        flacs = {path.name.removesuffix(".flac"): path for path in chapter.glob("*.flac")}
        for utt in sorted(transcripts.keys() | flacs.keys()):
            if utt not in flacs:
                skips.add("no_audio", transcripts[utt][1], f"transcript of {utt} has no {utt}.flac in {chapter}")
            elif utt not in transcripts:
                skips.add("no_transcript", str(flacs[utt]), f"{utt} has no line in {chapter}/*.trans.txt")
            else:
                yield asr_sample(utt, transcripts[utt][0], flacs[utt].read_bytes(), prompt)


CHAT_FORMATS = {"conversations": ("from", "value"), "messages": ("role", "content")}  # list field -> (role, text)
CHAT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def chat_turns(record: dict, key: str | None = None) -> list[dict]:
    """Text turns of one ShareGPT (`conversations` of `from`/`value`) or OpenAI-style (`messages` of
    `role`/`content`) record.

    Raises:
        SchemaError: for a record in neither format, an unknown role or a non-string text.
    """
    field_name = next((name for name in CHAT_FORMATS if name in record), None)
    if field_name is None or not isinstance(record[field_name], list):
        fix = 'write {"conversations": [{"from": "human", "value": ...}]} or {"messages": [{"role": ..., ...}]}'
        raise SchemaError("no 'conversations' or 'messages' list", key=key, fix=fix)
    role_key, text_key = CHAT_FORMATS[field_name]
    turns = []
    for i, message in enumerate(record[field_name]):
        role = CHAT_ROLES.get(message.get(role_key)) if isinstance(message, dict) else None
        if role is None or not isinstance(message.get(text_key), str):
            problem = f"expected '{role_key}' in {sorted(CHAT_ROLES)} and a string '{text_key}', got {message!r:.100}"
            raise SchemaError(problem, key=key, field=f"{field_name}[{i}]", fix="fix or drop the message")
        turns.append({"role": role, "parts": [{"text": message[text_key]}]})
    return turns


SpeechTurnPicker = Callable[[list[int], random.Random], list[int]]
SPEECH_TURN_POLICIES: dict[str, SpeechTurnPicker] = {
    "first": lambda users, rng: users[:1],
    "all": lambda users, rng: users,
}


def speech_turn_picker(policy: str | float) -> SpeechTurnPicker:
    """Which user turns to speak: "first", "all", or each one with probability `policy` (a number in [0, 1])."""
    if policy in SPEECH_TURN_POLICIES:
        return SPEECH_TURN_POLICIES[policy]
    try:
        probability = float(policy)
    except (TypeError, ValueError):
        probability = -1.0
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"speech_turns must be 'first', 'all' or a probability in [0, 1], got {policy!r}.")
    return lambda users, rng: [turn for turn in users if rng.random() < probability]


def speak_turns(key: str, turns: list[dict], chosen: list[int], tts: TTS) -> Sample:
    """Replaces the text of the `chosen` turns by their speech, stored as `0.flac`, `1.flac`, ... in turn order.

    The sample is a "dialog" with the spoken texts, joined by spaces, as its transcript; "text" if none is spoken.
    """
    turns, audio, spoken = [dict(turn) for turn in turns], {}, []
    for clip, index in enumerate(chosen):
        text = turns[index]["parts"][0]["text"]
        audio[f"{clip}.flac"] = encode_flac(tts.synthesize(text), tts.sample_rate)
        turns[index]["parts"] = [{"audio": f"{clip}.flac"}]
        spoken.append(text)
    meta = {"key": key, "task": "dialog" if audio else "text", "turns": turns}
    return (meta | {"transcript": " ".join(spoken)} if spoken else meta), audio


def chat_to_samples(
    jsonl: str | Path,
    tts: TTS | None = None,
    speech_turns: str | float = "first",
    seed: int = 0,
    skips: SkipLog | None = None,
) -> Iterator[Sample]:
    """Samples from a chat JSONL (ShareGPT or OpenAI/Magpie style), keyed by file name and line number.

    Without `tts` every conversation is a text-only sample (task "text"). With `tts`, the user turns picked by
    `speech_turns` are spoken and stored as audio (task "dialog"), giving VoiceTextBlender's mixed-modal SFT data;
    the pick is seeded per line, so a line's result does not depend on the lines before it. Lines with bad JSON,
    unknown formats or roles, or no assistant turn are counted in `skips`.
    """
    path, skips = Path(jsonl), skips if skips is not None else SkipLog()
    picker = speech_turn_picker(speech_turns)
    return _chat_samples(path, read_jsonl(path, skips), tts, picker, seed, skips)


def _chat_samples(
    path: Path,
    records: Iterable[tuple[int, dict]],
    tts: TTS | None,
    picker: SpeechTurnPicker,
    seed: int,
    skips: SkipLog,
) -> Iterator[Sample]:
    for lineno, record in records:
        where, key = f"{path}:{lineno}", line_key(path, lineno)
        try:
            turns = parse_meta({"task": "text", "turns": chat_turns(record, key)}, key=key)["turns"]
        except SchemaError as err:
            skips.add("schema", where, str(err))
            continue
        if not any(turn["role"] == "assistant" for turn in turns):
            skips.add("no_assistant", where, "the conversation has no assistant turn to train on")
        elif tts is None:
            yield {"key": key, "task": "text", "turns": turns}, {}
        else:
            users = [i for i, turn in enumerate(turns) if turn["role"] == "user" and turn["parts"][0]["text"].strip()]
            yield speak_turns(key, turns, picker(users, random.Random(f"{seed}:{lineno}")), tts)
