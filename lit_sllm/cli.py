"""`lit-sllm`: the Lightning CLI (fit/validate/test/predict) plus the suite's tool subcommands."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lit_sllm.callbacks.run_dir import run_dir
from lit_sllm.modules.base import SpeechLLMModule

LIGHTNING_COMMANDS = {
    "fit": "train a recipe from an experiment YAML",
    "validate": "run the validation sets once",
    "test": "run the test sets once",
    "predict": "generate answers and write them out",
}
# Tool modules, each exposing `add_parser(subparsers)`; only tools that work are listed.
TOOL_MODULES: tuple[str, ...] = (
    "lit_sllm.tools.bench",
    "lit_sllm.tools.data",
    "lit_sllm.tools.export",
    "lit_sllm.tools.params",
    "lit_sllm.tools.sweep",
    "lit_sllm.tools.teacher",
    "lit_sllm.tools.toy",
)


def git_state(cwd: Path | None = None) -> dict[str, str | bool]:
    """Commit and dirtiness of the code that ran, for the run's saved config."""
    root = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": False}


class SaveConfigWithGit(SaveConfigCallback):
    """Saves the resolved config and the git commit next to the checkpoints and logs."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        folders = {run_dir(trainer)}  # rank 0 only: no collective calls here
        checkpoints = trainer.checkpoint_callback
        if stage == "fit" and checkpoints is not None and getattr(checkpoints, "dirpath", None):
            folders.add(Path(checkpoints.dirpath))  # only training writes beside its checkpoints
        state = git_state()
        text = self.parser.dump(self.config, skip_none=False)
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.yaml").write_text(text)
            (folder / "git.json").write_text(json.dumps(state, indent=2))
        resolved = yaml.safe_load(text)
        for logger in trainer.loggers:  # W&B's run config gets the resolved config and the commit
            logger.log_hyperparams({"config": resolved, "git": state})


def tokenizer_of(llm: Any) -> str:
    """The tokenizer path of an `llm:` config section (its own `tokenizer`, else the model path)."""
    return llm.tokenizer or llm.name_or_path


class LitSLLMCLI(LightningCLI):
    """LightningCLI with the suite's defaults: omegaconf interpolation, any recipe by class_path, and the data's
    tokenizer taken from the model's LLM so the two can never disagree."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_args.llm", "data.init_args.tokenizer", compute_fn=tokenizer_of)
        parser.link_arguments("model.init_args.audio_token", "data.init_args.audio_token")

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=SpeechLLMModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveConfigWithGit,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf"},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )


def tool_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lit-sllm", description=__doc__)
    subparsers = parser.add_subparsers(dest="tool", required=True)
    for module_name in TOOL_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def print_help() -> None:
    lines = ["usage: lit-sllm COMMAND [options]", "", "Training (Lightning CLI; `lit-sllm fit --help` for options):"]
    lines += [f"  {name:<10} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    tools = tool_parser()._subparsers._group_actions[0]._choices_actions if TOOL_MODULES else []
    if tools:
        lines += ["", "Tools (`lit-sllm TOOL --help`):"]
        lines += [f"  {action.dest:<10} {action.help}" for action in tools]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    if not argv or argv[0] in ("-h", "--help"):
        print_help()
        return 0
    if argv[0] in LIGHTNING_COMMANDS or argv[0].startswith("-"):
        try:
            LitSLLMCLI(args=None if from_command_line else argv)
        except SystemExit as done:  # --print_config and --help end by exiting; report their code instead
            return int(done.code or 0)
        return 0
    args = tool_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
