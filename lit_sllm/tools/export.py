"""`lit-sllm export`: a training checkpoint to a folder that `SpeechLLM.from_pretrained` and plain peft can load."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lit_sllm.models.export import save_pretrained
from lit_sllm.modules.base import SpeechLLMModule


def export_checkpoint(ckpt: str | Path, out: str | Path, merge_lora: bool = False) -> Path:
    """Rebuilds the recipe module from the checkpoint's own config and writes the export folder."""
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"Checkpoint {ckpt} does not exist; pass a .ckpt written by `lit-sllm fit`.")
    module = SpeechLLMModule.load_from_checkpoint(ckpt, map_location=torch.device("cpu"))
    return save_pretrained(module.model, out, merge_lora)


def run(args: argparse.Namespace) -> int:
    folder = export_checkpoint(args.ckpt, args.out, args.merge_lora)
    print(f"exported {args.ckpt} -> {folder}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="checkpoint -> HF/PEFT export folder", description=__doc__)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `lit-sllm fit`")
    parser.add_argument("--out", required=True, help="export folder to create")
    parser.add_argument("--merge-lora", action="store_true", help="fold LoRA into the LLM weights (saves llm/)")
    parser.set_defaults(func=run)
