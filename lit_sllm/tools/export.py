"""`lit-sllm export`: a training checkpoint to a folder that `SpeechLLM.from_pretrained` and plain peft can load.

The recipe is rebuilt from the checkpoint's own config in this process; only recipes from `lit_sllm.modules` are
imported unless `--recipe-module` names another trusted module.
"""

from __future__ import annotations

import argparse
import sys

from lit_sllm.config_errors import ConfigError


def run(args: argparse.Namespace) -> int:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.modules.loading import load_recipe

    try:
        module = load_recipe(args.ckpt, args.recipe_module)
    except (ConfigError, FileNotFoundError) as err:
        print(f"lit-sllm export: {err}", file=sys.stderr)
        return 2
    folder = module.model.save_pretrained(args.out, args.merge_lora)
    print(f"exported {args.ckpt} -> {folder}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="checkpoint -> HF/PEFT export folder", description=__doc__)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `lit-sllm fit`")
    parser.add_argument("--out", required=True, help="export folder to create")
    parser.add_argument("--merge-lora", action="store_true", help="fold LoRA into the LLM weights (saves llm/)")
    parser.add_argument(
        "--recipe-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module outside lit_sllm.modules whose recipe classes checkpoints may name (repeatable; trusted code)",
    )
    parser.set_defaults(func=run)
