"""MTBI teacher labels: the frozen LLM answers task prompts about each transcript; answers go into the shards.

Output shards mirror the input shards one to one (same file names, audio bytes copied untouched), with
`responses[task]` and `prompts[task]` added to each sample's JSON, and are written by `ShardSetWriter`, so the
index.json has the schema of every other shard set, plus a "teacher" field naming the LLM and the task set.
With `topk`, the teacher's k most likely tokens and their log-probabilities at every answer token go in too
(`teacher_topk[task]`, the ASR conversation included with `asr_prompt`), so MTBI can distil without running the
teacher in its training step (`BehaviourImitation(teacher_logits=True)`); `keep_answers` adds them to shards that
were answered before, without answering again.
A finished output shard is skipped on rerun, so an interrupted job resumes. The output folder may be the input
folder (labelling in place): the shards are then labelled into `<out>.labelling/` (where an interrupted job
resumes) and moved over the input ones when all are done; a rerun in place after that labels the set again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from lit_sllm.data.pipeline import DataTally, ShardInfo, read_shard, resolve_shards
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.data.schema import SchemaError
from lit_sllm.data.shards import INDEX_FILE, ShardSetWriter, SkipLog, StoredSample, stored_meta
from lit_sllm.data.tasks import TaskSet, pick_prompt, teacher_turns
from lit_sllm.models.llm import LLMSpec, load_llm, load_tokenizer
from lit_sllm.models.text_generation import answer_text_prompts, answer_top_log_probs

log = logging.getLogger(__name__)

LLM_KEY = "teacher.llm"  # how errors name the LLM settings
NUMBERED_SHARD = re.compile(r"^(.+)-\d{6}\.tar$")


@dataclass
class TeacherSpec:
    """How the teacher answers.

    Attributes:
        llm: the frozen text LLM, loaded as a run loads it (dtype, attention, tokenizer and chat template).
        tasks: the task set YAML (see `lit_sllm.data.tasks`); None only with `keep_answers`.
        batch_size: prompts per generation batch.
        max_new_tokens: answer length cap.
        seed: picks each sample's prompt phrasing per task.
        device: where the LLM runs ("cpu", "cuda", ...).
        topk: store the teacher's k most likely tokens at each answer token (0: none).
        asr_prompt: with `topk`, store them for the ASR conversation with this prompt too (the MTBI transform's
            `asr_prompt`); None for none.
        keep_answers: keep the responses and prompts the shards hold (only the `topk` distributions are added).
    """

    llm: LLMSpec
    tasks: str | None
    batch_size: int = 16
    max_new_tokens: int = 64
    seed: int = 0
    device: str = "cpu"
    topk: int = 0
    asr_prompt: str | None = None
    keep_answers: bool = False

    def __post_init__(self) -> None:
        if self.topk < 0 or (self.keep_answers and not self.topk):
            raise ValueError(
                f"teacher.topk is {self.topk} with keep_answers {self.keep_answers}: topk must be >= 0, and "
                "keep_answers only adds stored distributions, so it needs topk >= 1."
            )
        if self.tasks is None and not self.keep_answers:
            raise ValueError("teacher.tasks is needed to answer (a task set YAML); only keep_answers goes without.")


def load_teacher(spec: TeacherSpec) -> tuple[PreTrainedModel, ChatFormatter]:
    """The frozen LLM of `spec` on its device, in eval mode, and the chat formatter its prompts are encoded with."""
    llm = load_llm(spec.llm, LLM_KEY).eval().to(spec.device)
    formatter = ChatFormatter(
        load_tokenizer(spec.llm, LLM_KEY), chat_template_kwargs=spec.llm.chat_template_kwargs, key=LLM_KEY
    )
    return llm, formatter


def teacher_requests(meta: dict, key: str, tasks: TaskSet, seed: int) -> list[tuple[str, str, list[dict]]]:
    """(task, prompt, conversation) for every seen task the teacher answers about this sample's transcript."""
    transcript = meta.get("transcript")
    if not transcript:
        return []
    requests = []
    for task in tasks.seen:
        prompt = pick_prompt(task, key, seed)
        requests.append((task.name, prompt, teacher_turns(prompt, transcript)))
    return requests


def shard_samples(url: str, skips: SkipLog) -> list[StoredSample]:
    """The samples of one input shard as (meta with "key", audio members); those breaking the schema go to `skips`.

    Raises:
        ValueError: when the shard cannot be read in full (a labelled copy would silently miss samples).
    """
    tally, samples = DataTally(), []
    for raw in read_shard(url, tally):
        key = raw["__key__"]
        audio = {name: data for name, data in raw.items() if not name.startswith("__") and name != "json"}
        try:
            meta = json.loads(raw["json"]) | {"key": key}
            stored_meta(meta, audio)
        except (KeyError, json.JSONDecodeError, SchemaError) as err:
            skips.add("schema", f"{url}:{key}", str(err))
            continue
        samples.append((meta, audio))
    skipped, _ = tally.take()
    if skipped:
        raise ValueError(f"{url} could not be read in full ({skipped}); fix or re-copy it and rerun.")
    return samples


def label_shard(
    url: str, llm: PreTrainedModel, formatter: ChatFormatter, tasks: TaskSet | None, spec: TeacherSpec
) -> tuple[list[StoredSample], int, SkipLog]:
    """The samples of shard `url` with the teacher's answer and prompt for every seen task added to their JSON.

    Returns:
        (samples as (meta with "key", audio members), number of answers, the samples left out for breaking the
        schema).
    """
    skips = SkipLog()
    samples = shard_samples(url, skips)
    answers = 0
    if not spec.keep_answers:
        requests = [(meta, r) for meta, _ in samples for r in teacher_requests(meta, meta["key"], tasks, spec.seed)]
        conversations = [conversation for _, (_, _, conversation) in requests]
        texts = answer_text_prompts(llm, formatter, conversations, spec.max_new_tokens, spec.batch_size)
        for (meta, (task, prompt, _)), answer in zip(requests, texts, strict=True):
            meta.setdefault("responses", {})[task] = answer
            meta.setdefault("prompts", {})[task] = prompt
        answers = len(texts)
    if spec.topk:
        store_topk([meta for meta, _ in samples], llm, formatter, spec)
    return samples, answers, skips


def answered_conversations(meta: dict, asr_prompt: str | None) -> list[tuple[str, str, list[dict]]]:
    """(task, prompt, teacher conversation with its answer) for each answer of the sample, and ASR with `asr_prompt`:
    the conversations `BehaviourImitation` gives its teacher view."""
    transcript = meta.get("transcript")
    if not transcript:
        return []
    prompts, responses = meta.get("prompts", {}), meta.get("responses", {})
    if not set(responses) <= set(prompts):
        raise ValueError(
            f"Sample {meta['key']}: responses {sorted(set(responses) - set(prompts))} have no recorded prompt; "
            "label the shards with `lit-sllm teacher` (without --keep-answers)."
        )
    answered = [(task, prompts[task], answer) for task, answer in sorted(responses.items())]
    if asr_prompt is not None:
        answered.append(("asr", asr_prompt, transcript))
    return [(task, prompt, teacher_turns(prompt, transcript, answer)) for task, prompt, answer in answered]


def store_topk(metas: list[dict], llm: PreTrainedModel, formatter: ChatFormatter, spec: TeacherSpec) -> None:
    """Adds `teacher_topk[task]` (prompt, (n, k) ids, (n, k) log-probabilities to 4 decimals) to each sample."""
    requests = [
        (meta, *conversation) for meta in metas for conversation in answered_conversations(meta, spec.asr_prompt)
    ]
    tops = answer_top_log_probs(llm, formatter, [turns for *_, turns in requests], spec.topk, spec.batch_size)
    for (meta, task, prompt, _), (ids, log_probs) in zip(requests, tops, strict=True):
        stored = {"prompt": prompt, "ids": ids.tolist(), "log_probs": log_probs.mul(1e4).round().div(1e4).tolist()}
        meta.setdefault("teacher_topk", {})[task] = stored


def label_shards(shards: str | Sequence[str], out: str | Path, spec: TeacherSpec) -> dict[str, Any]:
    """Labels every shard of `shards` into `out` (finished shards are kept); returns `out/index.json`'s content.

    Args:
        shards: the input shards: a folder, index.json, glob, brace pattern or a list (see `resolve_shards`).
        out: output folder; shards keep their file names. It may be the folder of the input shards: they are then
            labelled into `<out>.labelling/` and replace the input shards, and index.json, when all are done.
        spec: the teacher.

    Raises:
        ValueError: when two input shards have the same file name, or one cannot be read in full.
    """
    inputs, out = resolve_shards(shards), Path(out)
    names = [Path(shard.url).name for shard in inputs]
    if len(set(names)) < len(names):
        raise ValueError(f"input shards {shards!r} repeat a file name; the output mirrors them by name.")
    in_place = any(Path(shard.url).resolve().parent == out.resolve() for shard in inputs)
    work = out.resolve().with_name(f"{out.resolve().name}.labelling") if in_place else out
    index = _label_into(inputs, work, spec, _set_name(names, out.resolve().name))
    if in_place:
        for name in [*names, INDEX_FILE]:  # the index last: until it is there, the old index describes the set
            os.replace(work / name, out / name)
        work.rmdir()
    return index


def _label_into(inputs: list[ShardInfo], out: Path, spec: TeacherSpec, name: str) -> dict[str, Any]:
    tasks = TaskSet.load(spec.tasks) if spec.tasks is not None else None
    names = [task.name for task in tasks.seen] if tasks is not None else None
    about = dataclasses.asdict(spec) | {"tasks": spec.tasks and str(spec.tasks), "task_names": names}
    if spec.keep_answers:  # the answers are an earlier run's: keep how they were made
        about["answered_by"] = _input_teacher(inputs)
    with ShardSetWriter(out, name, resume=True, extra={"teacher": about}) as writer:
        teacher = None  # loaded at the first shard to label: a finished job reruns without the LLM
        for shard in inputs:
            path = Path(shard.url).name
            if (out / path).exists():
                writer.keep_shard(path)
                log.info("kept %s, labelled by an earlier run", out / path)
                continue
            if teacher is None:
                torch.manual_seed(spec.seed)
                teacher = load_teacher(spec)
            samples, answers, skips = label_shard(shard.url, *teacher, tasks, spec)
            writer.write_shard(path, samples)
            log.info("labelled %s -> %s (%d answers; %s)", shard.url, out / path, answers, skips.summary())
    return writer.index


def _input_teacher(inputs: list[ShardInfo]) -> dict[str, Any] | None:
    """The "teacher" field of the input set's index.json (one folder's), None when there is none."""
    folders = {Path(shard.url).parent for shard in inputs}
    index = folders.pop() / INDEX_FILE if len(folders) == 1 else None
    return json.loads(index.read_text()).get("teacher") if index is not None and index.is_file() else None


def _set_name(names: list[str], fallback: str) -> str:
    """The shared prefix of numbered shard names ("asr-train" for asr-train-000000.tar, ...), else `fallback`."""
    prefixes = {match.group(1) if (match := NUMBERED_SHARD.match(name)) else None for name in names}
    return prefixes.pop() if len(prefixes) == 1 and None not in prefixes else fallback
