"""`lit-sllm teacher`: the frozen LLM answers task prompts about each transcript; answers go into the shards.

Output shards mirror the input shards one to one (same file names, audio bytes copied untouched), with
`responses[task]` and `prompts[task]` added to each sample's JSON; reruns skip finished shards
(`lit_sllm.data.teacher`).
"""

from __future__ import annotations

import argparse
import logging


def run(args: argparse.Namespace) -> int:
    import torch

    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.teacher import TeacherSpec, label_shards

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    spec = TeacherSpec(args.llm, args.tasks, args.batch_size, args.max_new_tokens, args.seed, device)
    index = label_shards(args.shards, args.out, spec)
    print(f"teacher: {len(index['shards'])} shards, {index['samples']} samples; index at {args.out}/index.json")
    return 0


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
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    parser.set_defaults(func=run)
