"""MTBI teacher labels: the frozen LLM answers task prompts about each transcript; answers go into the shards.

Output shards mirror the input shards one to one (same file names, audio bytes copied untouched), with
`responses[task]` and `prompts[task]` added to each sample's JSON. A finished output shard is skipped on rerun, so
an interrupted job resumes; each shard is written to a temporary name and renamed when complete. index.json
records the LLM and the task set.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_sllm.data.pipeline import DataTally, read_shard, resolve_shards
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.data.tasks import TaskSet, pick_prompt, task_turns
from lit_sllm.models.text_generation import answer_text_prompts

log = logging.getLogger(__name__)


def _teacher_requests(meta: dict, key: str, tasks: TaskSet, seed: int) -> list[tuple[str, str, list[dict]]]:
    """(task, prompt, conversation) for every seen task the teacher answers about this sample's transcript."""
    transcript = meta.get("transcript")
    if not transcript:
        return []
    requests = []
    for task in tasks.seen:
        prompt = pick_prompt(task, key, seed)
        requests.append((task.name, prompt, task_turns(prompt, [{"text": transcript}])))
    return requests


@dataclass
class TeacherSpec:
    """How the teacher answers.

    Attributes:
        llm: the frozen text LLM (hub id or folder).
        tasks: the task set YAML (see `lit_sllm.data.tasks`).
        batch_size: prompts per generation batch.
        max_new_tokens: answer length cap.
        seed: picks each sample's prompt phrasing per task.
        device: where the LLM runs ("cpu", "cuda", ...).
    """

    llm: str
    tasks: str
    batch_size: int = 16
    max_new_tokens: int = 64
    seed: int = 0
    device: str = "cpu"


def label_shard(
    url: str, out_path: Path, llm, formatter: ChatFormatter, tasks: TaskSet, spec: TeacherSpec
) -> dict[str, Any]:
    """Writes one labelled copy of a shard; returns its index entry."""
    tally = DataTally()
    samples = list(read_shard(url, tally))
    metas = [json.loads(sample["json"]) for sample in samples]
    requests = [
        (i, r)
        for i, sample in enumerate(samples)
        for r in _teacher_requests(metas[i], sample["__key__"], tasks, spec.seed)
    ]
    answers = answer_text_prompts(llm, formatter, [r[2] for _, r in requests], spec.max_new_tokens, spec.batch_size)
    for (i, (task, prompt, _)), answer in zip(requests, answers):
        metas[i].setdefault("responses", {})[task] = answer
        metas[i].setdefault("prompts", {})[task] = prompt
    partial = out_path.with_suffix(".tar.partial")
    hours, task_counts = 0.0, {}
    with wds.TarWriter(str(partial), encoder=False, mtime=0) as writer:  # same bytes on every run
        for sample, meta in zip(samples, metas):
            members = {k: v for k, v in sample.items() if not k.startswith("__") and k != "json"}
            writer.write(
                {"__key__": sample["__key__"], "json": json.dumps(meta, ensure_ascii=False).encode(), **members}
            )
            hours += (meta.get("duration") or 0.0) / 3600
            task_counts[meta.get("task", "?")] = task_counts.get(meta.get("task", "?"), 0) + 1
    os.replace(partial, out_path)
    skipped, _ = tally.take()
    if skipped:
        log.warning("%s: %s skipped while reading (%s)", url, sum(skipped.values()), skipped)
    return {
        "path": out_path.name,
        "samples": len(samples),
        "hours": hours,
        "tasks": task_counts,
        "answers": len(answers),
    }


def label_shards(shards: str, out: str | Path, spec: TeacherSpec) -> dict[str, Any]:
    """Labels every shard of `shards` into `out` (finished shards are kept), writes `out/index.json` and returns it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = TaskSet.load(spec.tasks)
    tokenizer = AutoTokenizer.from_pretrained(spec.llm)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    formatter = ChatFormatter(tokenizer)
    llm = AutoModelForCausalLM.from_pretrained(spec.llm).eval().to(spec.device)
    torch.manual_seed(spec.seed)
    entries, done = [], 0
    for shard in resolve_shards(shards):
        out_path = out / Path(shard.url).name
        if out_path.exists():
            done += 1
            entries.append(_existing_entry(out, out_path.name))
            continue
        entries.append(label_shard(shard.url, out_path, llm, formatter, tasks, spec))
        log.info("labelled %s -> %s (%d answers)", shard.url, out_path, entries[-1]["answers"])
    index = {
        "name": out.name,
        "shards": entries,
        "samples": sum(e["samples"] for e in entries),
        "hours": sum(e["hours"] for e in entries),
        "teacher": {
            "llm": spec.llm,
            "tasks": str(spec.tasks),
            "task_names": [t.name for t in tasks.seen],
            "seed": spec.seed,
            "max_new_tokens": spec.max_new_tokens,
        },
    }
    (out / "index.json").write_text(json.dumps(index, indent=2))
    log.info("teacher: %d shards labelled, %d finished earlier and kept", len(entries) - done, done)
    return index


def _existing_entry(out: Path, name: str) -> dict[str, Any]:
    """Index entry of a shard finished by an earlier run (from the earlier index.json, else by reading it)."""
    index = out / "index.json"
    if index.exists():
        for entry in json.loads(index.read_text()).get("shards", []):
            if entry["path"] == name:
                return entry
    samples = [json.loads(s["json"]) for s in read_shard(str(out / name), DataTally())]
    return {
        "path": name,
        "samples": len(samples),
        "hours": sum((m.get("duration") or 0.0) for m in samples) / 3600,
        "tasks": {},
        "answers": sum(len(m.get("responses", {})) for m in samples),
    }
