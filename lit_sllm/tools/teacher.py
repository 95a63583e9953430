"""`lit-sllm teacher`: the frozen LLM answers task prompts about each transcript; answers go into the shards.

Output shards mirror the input shards one to one (same file names, audio bytes copied untouched), with
`responses[task]` and `prompts[task]` added to each sample's JSON. A finished output shard is skipped on rerun, so
an interrupted job resumes; each shard is written to a temporary name and renamed when complete. index.json
records the LLM and the task set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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


def label_shard(
    url: str, out_path: Path, llm, formatter: ChatFormatter, tasks: TaskSet, args: argparse.Namespace
) -> dict[str, Any]:
    """Writes one labelled copy of a shard; returns its index entry."""
    tally = DataTally()
    samples = list(read_shard(url, tally))
    metas = [json.loads(sample["json"]) for sample in samples]
    requests = [
        (i, r)
        for i, sample in enumerate(samples)
        for r in _teacher_requests(metas[i], sample["__key__"], tasks, args.seed)
    ]
    answers = answer_text_prompts(llm, formatter, [r[2] for _, r in requests], args.max_new_tokens, args.batch_size)
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


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = TaskSet.load(args.tasks)
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    formatter = ChatFormatter(tokenizer)
    llm = AutoModelForCausalLM.from_pretrained(args.llm).eval().to(args.device)
    torch.manual_seed(args.seed)
    entries, done = [], 0
    for shard in resolve_shards(args.shards):
        out_path = out / Path(shard.url).name
        if out_path.exists():
            done += 1
            entries.append(_existing_entry(out, out_path.name))
            continue
        entries.append(label_shard(shard.url, out_path, llm, formatter, tasks, args))
        print(f"labelled {shard.url} -> {out_path} ({entries[-1]['answers']} answers)")
    index = {
        "name": out.name,
        "shards": entries,
        "samples": sum(e["samples"] for e in entries),
        "hours": sum(e["hours"] for e in entries),
        "teacher": {
            "llm": args.llm,
            "tasks": str(args.tasks),
            "task_names": [t.name for t in tasks.seen],
            "seed": args.seed,
            "max_new_tokens": args.max_new_tokens,
        },
    }
    (out / "index.json").write_text(json.dumps(index, indent=2))
    print(f"teacher: {len(entries) - done} shards labelled, {done} already done; index at {out / 'index.json'}")
    return 0


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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "teacher", help="write the frozen LLM's task answers into shards (MTBI)", description=__doc__
    )
    parser.add_argument("--shards", required=True, help="input shards: folder, index.json, glob or brace pattern")
    parser.add_argument("--out", required=True, help="output folder (same shard names)")
    parser.add_argument("--llm", required=True, help="the frozen text LLM (hub id or folder)")
    parser.add_argument("--tasks", required=True, help="task set YAML (see lit_sllm/data/tasks.py)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="picks each sample's prompt phrasing per task")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.set_defaults(func=run)
