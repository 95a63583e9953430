"""`lit-sllm`: the Lightning CLI (fit/validate/test/predict) plus the suite's tool subcommands.

This module imports nothing heavy: `lit-sllm --help` and `lit-sllm TOOL --help` answer without loading torch.
The training commands load the Lightning CLI (`lit_sllm.lightning_cli`) and a tool its own module only when
that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

LIGHTNING_COMMANDS = {
    "fit": "train a recipe from an experiment YAML",
    "validate": "run the validation sets once",
    "test": "run the test sets once",
    "predict": "generate answers and write them out",
    "evaluate": "validate a checkpoint: val sets, forgetting sets and the generalisation benchmark",
}
# Commands that are another Lightning command under a name that says what they are for.
ALIASES = {"evaluate": "validate"}
# Tool name -> (module exposing `add_parser(subparsers)`, one-line help). Tool modules keep their heavy imports
# inside the functions that run the command, so parsing and `--help` stay fast.
TOOLS: dict[str, tuple[str, str]] = {
    "bench": ("lit_sllm.tools.bench", "speed benchmarks against baselines"),
    "data": ("lit_sllm.tools.data", "write and inspect WebDataset shard sets"),
    "export": ("lit_sllm.tools.export", "checkpoint -> HF/PEFT export folder"),
    "params": ("lit_sllm.tools.params", "parameter table of a config's model, on the meta device"),
    "sweep": ("lit_sllm.tools.sweep", "expand a W&B sweep file into runs (local or SLURM)"),
    "teacher": ("lit_sllm.tools.teacher", "write the frozen LLM's task answers into shards (MTBI)"),
    "toy": ("lit_sllm.tools.toy", "build the embedded toy world or measure it"),
}


def tool_parser(names: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The tools' argument parser; with `names`, only those tools' modules are imported."""
    parser = argparse.ArgumentParser(prog="lit-sllm", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="tool", required=True)
    for name in names or tuple(TOOLS):
        importlib.import_module(TOOLS[name][0]).add_parser(subparsers)
    return parser


def help_text() -> str:
    lines = ["usage: lit-sllm COMMAND [options]", "", "Training (Lightning CLI; `lit-sllm fit --help` for options):"]
    lines += [f"  {name:<10} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += ["", "Tools (`lit-sllm TOOL --help`):"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in TOOLS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text())
        return 0
    if argv[0] in LIGHTNING_COMMANDS or argv[0].startswith("-"):
        from lit_sllm.lightning_cli import run_lightning  # lazy: loads Lightning, only for training commands

        if argv[0] in ALIASES:
            return run_lightning([ALIASES[argv[0]], *argv[1:]])
        return run_lightning(None if from_command_line else argv)
    if argv[0] not in TOOLS:
        print(f"lit-sllm: unknown command {argv[0]!r}.\n\n{help_text()}", file=sys.stderr)
        return 2
    args = tool_parser((argv[0],)).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
