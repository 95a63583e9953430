"""Writing WebDataset shard sets: sample validation, the writer and its index, and the skip log.

A shard set is `<out>/<name>-000000.tar, ...` plus `<out>/index.json` with sample, hour and task counts per
shard. Every sample is validated against the schema before it is written; inputs that cannot be used are
skipped, logged with their location and counted by reason in a `SkipLog`, never dropped silently. The converters
that feed a writer (JSONL manifest, LibriSpeech, chat JSONL) are in `lit_sllm.data.converters`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

import lit_sllm
from lit_sllm.data.audio import audio_seconds
from lit_sllm.data.schema import SchemaError, audio_part_names, parse_meta

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_FIELDS = ("name", "shards", "samples", "hours", "tasks", "created_with")
# WebDataset splits a member name into key and extension at the first dot, so keys carry none.
KEY_PATTERN = re.compile(r"^[^.\s/][^.\s]*$")
PART_PATTERN = re.compile(r"^[A-Za-z0-9]+(\.[A-Za-z0-9]+)*$")
# A sample before decoding, as a writer takes it: (schema metadata with "key", audio part name -> encoded bytes).
StoredSample = tuple[dict[str, Any], dict[str, bytes]]


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

    def write_shard(self, path: str, samples: Iterable[StoredSample]) -> dict[str, Any]:
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
    samples: Iterable[StoredSample],
    out_dir: str | Path,
    name: str,
    shard_size: int = 1000,
    skips: SkipLog | None = None,
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
