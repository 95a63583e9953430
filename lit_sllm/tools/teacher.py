"""`lit-sllm teacher`: the frozen LLM answers task prompts about each transcript; answers go into the shards.

Output shards mirror the input shards one to one (same file names, audio bytes copied untouched), with
`responses[task]` and `prompts[task]` added to each sample's JSON (with --topk, the teacher's most likely tokens
at each answer token too, for KD without a teacher pass); reruns skip finished shards; `--out` may be the
input folder, to label in place (`lit_sllm.data.teacher`). The LLM is loaded as a run loads `model.llm`.
"""

from __future__ import annotations

import argparse
import json
import logging

DTYPES = ("float32", "bfloat16", "float16")  # lit_sllm.models.llm's; listed here so --help imports no torch
ATTENTION = ("sdpa", "eager", "flash_attention_2")


def run(args: argparse.Namespace) -> int:
    import torch

    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.data.teacher import TeacherSpec, label_shards
    from lit_sllm.models.llm import LLMSpec

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    llm = LLMSpec(
        args.llm,
        tokenizer=args.tokenizer,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        trust_remote_code=args.trust_remote_code,
        chat_template=args.chat_template,
        chat_template_kwargs=args.chat_template_kwargs,
    )
    spec = TeacherSpec(
        llm,
        args.tasks,
        args.batch_size,
        args.max_new_tokens,
        args.seed,
        device,
        topk=args.topk,
        asr_prompt=args.asr_prompt,
        keep_answers=args.keep_answers,
    )
    index = label_shards(args.shards, args.out, spec)
    print(f"teacher: {len(index['shards'])} shards, {index['samples']} samples; index at {args.out}/index.json")
    return 0


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "teacher", help="write the frozen LLM's task answers into shards (MTBI)", description=__doc__
    )
    parser.add_argument("--shards", required=True, help="input shards: folder, index.json, glob or brace pattern")
    parser.add_argument("--out", required=True, help="output folder (same shard names); may be the input folder")
    parser.add_argument("--llm", required=True, help="the frozen text LLM (hub id or folder)")
    parser.add_argument("--tasks", required=True, help="task set YAML (see lit_sllm/data/tasks.py)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="picks each sample's prompt phrasing per task")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    kd = parser.add_argument_group("stored distributions for KD without a teacher pass (teacher_logits: true)")
    kd.add_argument("--topk", type=int, default=0, help="store the k most likely tokens at each answer token")
    kd.add_argument("--asr-prompt", help="with --topk, also for the ASR conversation with this prompt")
    kd.add_argument("--keep-answers", action="store_true", help="with --topk, keep the shards' answers; add only those")
    llm = parser.add_argument_group("LLM settings (as model.init_args.llm in a run's config)")
    llm.add_argument("--tokenizer", help="tokenizer hub id or folder, when apart from the weights")
    llm.add_argument("--dtype", choices=DTYPES, help="weights dtype (default: float32)")
    llm.add_argument("--attn-implementation", choices=ATTENTION, help="default: transformers chooses")
    llm.add_argument("--chat-template", help="a .jinja file or the template text (default: the tokenizer's own)")
    llm.add_argument(
        "--chat-template-kwargs",
        type=_json_object,
        help="extra template variables, e.g. '{\"enable_thinking\": false}'",
    )
    llm.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the checkpoint")
    parser.set_defaults(func=run)
