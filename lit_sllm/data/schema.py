"""The sample schema of one WebDataset key: validation with errors that name the shard, key, field and the fix.

A key stores `<key>.json` (the metadata below) and one tar member per audio clip: a single clip is `<key>.flac`
(referenced as `{"audio": "flac"}`), several clips are `<key>.0.flac`, `<key>.1.flac`, ... (`{"audio": "0.flac"}`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lit_sllm.data.batch import TeacherTopK

ROLES = ("user", "assistant", "system")

# Fields a task cannot do without, beyond the common ones; extend it when a task gains a requirement.
TASK_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {"asr": ("transcript",)}


class SchemaError(ValueError):
    """A sample that breaks the schema; its message says where (shard, key, field) and how to fix it."""

    def __init__(
        self,
        problem: str,
        *,
        shard: str | None = None,
        key: str | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem, self.shard, self.key, self.field, self.fix = problem, shard, key, field, fix
        where = [f"{name} {value}" for name, value in (("shard", shard), ("key", key)) if value]
        if field:
            where.append(f"field '{field}'")
        message = (", ".join(where) + ": " if where else "") + problem
        super().__init__(message + (f". Fix: {fix}" if fix else ""))


@dataclass
class Sample:
    """One decoded sample.

    Attributes:
        key: the WebDataset key.
        task: task name ("asr", "sqa", "dialog", "text", ...).
        turns: the conversation, `[{"role": ..., "parts": [{"text": s} | {"audio": name}]}]`.
        audio: part name ("flac", "0.flac", ...) -> (mono float32 waveform (S,), sample rate).
        transcript: what is said in the audio, for speech samples.
        words: (word, start s, end s) alignments, for interleaving.
        duration: seconds of speech (sum over clips).
        responses: MTBI teacher answers by task name.
        source: the shard the sample came from.
        prompts: the task prompt each teacher response answers, by task name.
        teacher_turns: the same conversation with the transcript in place of the speech, set by a transform for
            logit distillation (collated into `Batch.teacher`).
        teacher_topk: the teacher's stored top-k distributions over each answer, by task name, as stored:
            `{"prompt": str, "ids": [[int] * k] * n, "log_probs": [[float] * k] * n}` (`lit-sllm teacher --topk`).
        kd_target: the stored distributions of the conversation a transform chose (collated into
            `Batch.teacher_topk`).
        augmented: names of the augmentation transforms applied to the audio, in order (counted per batch).
        group: the scoring group an eval-set expansion puts the sample in (e.g. a generalisation category); never
            stored in shards.
    """

    key: str
    task: str
    turns: list[dict]
    audio: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)
    transcript: str | None = None
    words: list[tuple[str, float, float]] | None = None
    duration: float | None = None
    responses: dict[str, str] = field(default_factory=dict)
    source: str = ""
    prompts: dict[str, str] = field(default_factory=dict)
    teacher_turns: list[dict] | None = None
    teacher_topk: dict[str, dict] = field(default_factory=dict)
    kd_target: TeacherTopK | None = None
    augmented: list[str] = field(default_factory=list)
    group: str = ""


def _check_part(part: Any, where: str, fail: Callable[..., SchemaError]) -> dict[str, str]:
    if not isinstance(part, dict) or len(part) != 1 or not ({"text", "audio"} & part.keys()):
        raise fail(f"a part must be {{'text': str}} or {{'audio': name}}, got {part!r}", where, "rewrite the part")
    ((name, value),) = part.items()
    if not isinstance(value, str) or (name == "audio" and not value):
        raise fail(f"part '{name}' must be a non-empty string, got {value!r}", where, "give a string")
    return {name: value}


def _check_turns(turns: Any, fail: Callable[..., SchemaError]) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise fail("'turns' must be a non-empty list of turns", "turns", "add the conversation to train on")
    checked = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            role = turn.get("role") if isinstance(turn, dict) else turn
            raise fail(f"role must be one of {ROLES}, got {role!r}", f"turns[{i}].role", "set a valid role")
        parts = turn.get("parts")
        if not isinstance(parts, list) or not parts:
            raise fail("'parts' must be a non-empty list", f"turns[{i}].parts", "add text or audio parts")
        checked.append(
            {
                "role": turn["role"],
                "parts": [_check_part(p, f"turns[{i}].parts[{j}]", fail) for j, p in enumerate(parts)],
            }
        )
    return checked


def _check_words(words: Any, fail: Callable[..., SchemaError]) -> list[tuple[str, float, float]]:
    if not isinstance(words, list):
        raise fail("'words' must be a list of [word, start, end]", "words", "write word times as a list")
    checked = []
    for i, item in enumerate(words):
        ok = isinstance(item, list | tuple) and len(item) == 3 and isinstance(item[0], str)
        ok = ok and all(isinstance(t, int | float) and not isinstance(t, bool) for t in item[1:])
        if not ok or item[1] > item[2] or item[1] < 0:
            raise fail(
                f"expected [word, start s, end s] with 0 <= start <= end, got {item!r}", f"words[{i}]", "fix the time"
            )
        checked.append((item[0], float(item[1]), float(item[2])))
    return checked


def _check_optional(meta: dict, fail: Callable[..., SchemaError]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    transcript = meta.get("transcript")
    if transcript is not None and not isinstance(transcript, str):
        raise fail(f"'transcript' must be a string, got {type(transcript).__name__}", "transcript", "write it as text")
    out["transcript"] = transcript
    duration = meta.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0):
        raise fail(f"'duration' must be seconds >= 0, got {duration!r}", "duration", "write the clip length in seconds")
    out["duration"] = None if duration is None else float(duration)
    out["words"] = None if meta.get("words") is None else _check_words(meta["words"], fail)
    for name, what in (("responses", "answer"), ("prompts", "prompt")):
        value = meta.get(name) or {}
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise fail(f"'{name}' must map task names to {what} strings", name, f"rewrite it as {{task: {what}}}")
        out[name] = dict(value)
    out["teacher_topk"] = _check_topk(meta.get("teacher_topk") or {}, fail)
    return out


def _check_topk(stored: Any, fail: Callable[..., SchemaError]) -> dict[str, dict]:
    """The structure of `teacher_topk`; the numbers are checked when a transform takes one task's (`topk_target`)."""
    fix = "relabel with `lit-sllm teacher --topk K`"
    if not isinstance(stored, dict):
        raise fail("'teacher_topk' must map task names to stored distributions", "teacher_topk", fix)
    for task, entry in stored.items():
        ok = isinstance(entry, dict) and isinstance(entry.get("prompt"), str)
        if not ok or not all(isinstance(entry.get(name), list) for name in ("ids", "log_probs")):
            raise fail("expected {prompt: str, ids: [[int]], log_probs: [[float]]}", f"teacher_topk.{task}", fix)
    return dict(stored)


def topk_target(sample: Sample, task: str, prompt: str) -> TeacherTopK:
    """The stored distributions of `task` as tensors, checked to answer `prompt`.

    Raises:
        SchemaError: when the sample has none for `task`, they answer another prompt, or their shape is wrong.
    """

    def fail(problem: str, fix: str) -> SchemaError:
        return SchemaError(problem, shard=sample.source, key=sample.key, field=f"teacher_topk.{task}", fix=fix)

    entry = sample.teacher_topk.get(task)
    if entry is None:
        fix = "label the shards with `lit-sllm teacher --topk K` (or use teacher_view: true for the online teacher)"
        raise fail(f"no stored teacher distributions (stored: {sorted(sample.teacher_topk)})", fix)
    if entry["prompt"] != prompt:
        raise fail(
            f"stored for the prompt {entry['prompt']!r}, not {prompt!r}",
            "relabel with the transform's prompts (asr_prompt included), or set them back",
        )
    try:
        ids, log_probs = torch.tensor(entry["ids"], dtype=torch.long), torch.tensor(entry["log_probs"])
    except (TypeError, ValueError) as err:
        raise fail(f"ids and log_probs must be rectangular number lists ({err})", "relabel the shards") from err
    if ids.ndim != 2 or ids.shape != log_probs.shape or not ids.shape[1]:
        raise fail(f"ids {tuple(ids.shape)} and log_probs {tuple(log_probs.shape)} must be equal (n, k)", "relabel")
    return TeacherTopK(ids, log_probs)


def parse_meta(meta: dict, *, shard: str | None = None, key: str | None = None) -> dict:
    """Validates the JSON metadata of one sample and returns it normalised.

    Returns:
        A dict with `task`, `turns`, `transcript`, `words` (list of tuples or None), `duration` (float or None),
        `responses` and `prompts` (dicts); other keys are kept as they are.

    Raises:
        SchemaError: naming the shard, key, field and the fix.
    """

    def fail(problem: str, where: str, fix: str) -> SchemaError:
        return SchemaError(problem, shard=shard, key=key, field=where, fix=fix)

    if not isinstance(meta, dict):
        raise SchemaError(
            f"metadata must be a JSON object, got {type(meta).__name__}",
            shard=shard,
            key=key,
            fix="write the sample's .json as an object",
        )
    task = meta.get("task")
    if not isinstance(task, str) or not task:
        raise fail(f"'task' must be a non-empty string, got {task!r}", "task", 'name the task, e.g. "asr"')
    out = dict(meta) | {"task": task, "turns": _check_turns(meta.get("turns"), fail)} | _check_optional(meta, fail)
    for name in TASK_REQUIRED_FIELDS.get(task, ()):
        if out.get(name) in (None, ""):
            raise fail(f"task '{task}' needs '{name}' but it is missing", name, f"add '{name}' or change the task")
    return out


def audio_part_names(meta: dict) -> list[str]:
    """Audio part names referenced by the turns, in order (a name used twice is listed twice)."""
    return [part["audio"] for turn in meta.get("turns", []) for part in turn.get("parts", []) if "audio" in part]
