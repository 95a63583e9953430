"""The Lightning CLI of `lit-sllm fit|validate|test|predict`: omegaconf configs, any recipe by class_path, the run's
config and git state saved beside its logs, and the commonest mistakes reported in a few lines."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lit_sllm.callbacks.progress import step_bar_for
from lit_sllm.callbacks.requeue import RequeueAtStepEnd
from lit_sllm.callbacks.run_dir import run_dir
from lit_sllm.config_errors import ConfigError, explain_parse_error
from lit_sllm.modules.base import SpeechLLMModule
from lit_sllm.provenance import git_state
from lit_sllm.run_summary import summary_lines


class SaveConfigWithGit(SaveConfigCallback):
    """Saves the resolved config, the git commit and the chat template used next to the checkpoints and logs."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        folders = {run_dir(trainer)}  # rank 0 only: no collective calls here
        checkpoints = trainer.checkpoint_callback
        if stage == "fit" and checkpoints is not None and getattr(checkpoints, "dirpath", None):
            folders.add(Path(checkpoints.dirpath))  # only training writes beside its checkpoints
        state = git_state()
        text = self.parser.dump(self.config, skip_none=False)
        template = pl_module.model.formatter.template  # the text itself, whatever file the config names
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.yaml").write_text(text)
            (folder / "git.json").write_text(json.dumps(state, indent=2))
            (folder / "chat_template.jinja").write_text(template)
        resolved = yaml.safe_load(text)
        for logger in trainer.loggers:  # W&B's run config gets the resolved config, the commit and the template
            logger.log_hyperparams({"config": resolved, "git": state, "chat_template": template})


def tokenizer_of(llm: Any) -> str:
    """The tokenizer path of an `llm:` config section (its own `tokenizer`, else the model path)."""
    return llm.tokenizer or llm.name_or_path


def chat_template_of(llm: Any) -> str | None:
    return llm.chat_template


def chat_template_kwargs_of(llm: Any) -> dict[str, Any] | None:
    return llm.chat_template_kwargs


def sample_rate_of(module: SpeechLLMModule) -> int:
    return module.model.sample_rate


def _default_sample_rate(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    param = inspect.signature(getattr(importlib.import_module(module), name)).parameters.get("sample_rate")
    return None if param is None else param.default


class LitSLLMCLI(LightningCLI):
    """LightningCLI with the suite's defaults: omegaconf interpolation, any recipe by class_path, the data's
    tokenizer and chat template taken from the model's LLM so the two can never disagree, and SLURM requeues saved
    between steps."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_args.llm", "data.init_args.tokenizer", compute_fn=tokenizer_of)
        parser.link_arguments("model.init_args.llm", "data.init_args.chat_template", compute_fn=chat_template_of)
        parser.link_arguments(
            "model.init_args.llm", "data.init_args.chat_template_kwargs", compute_fn=chat_template_kwargs_of
        )
        parser.link_arguments("model.init_args.audio_token", "data.init_args.audio_token")
        # the encoder decides the rate audio is resampled to while streaming: one home for it
        parser.link_arguments("model", "data.init_args.sample_rate", compute_fn=sample_rate_of, apply_on="instantiate")

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=SpeechLLMModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveConfigWithGit,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [RequeueAtStepEnd()]},  # added to every trainer's callbacks
            parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def before_instantiate_classes(self) -> None:
        """The linked `data.sample_rate` is set from the encoder: a value given for it could not take effect."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        data = config.get("data")
        given = data.get("init_args", {}).get("sample_rate") if data else None
        if given is not None and given != _default_sample_rate(data.class_path):
            raise ConfigError(
                f"data.init_args.sample_rate is {given} but follows from the encoder "
                "(model.init_args.encoder): remove it; audio is resampled to the encoder's rate while streaming."
            )

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The trainer, with Lightning's default progress bar swapped for one that counts steps of `max_steps`."""
        trainer = super().instantiate_trainer(**kwargs)
        for index, callback in enumerate(trainer.callbacks):
            replacement = step_bar_for(callback)
            if replacement is not None:
                trainer.callbacks[index] = replacement
        return trainer

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except Exception as err:  # jsonargparse's errors carry the whole namespace; keep the part a user can act on
            raise ConfigError(explain_parse_error(err, parser)) from None


def config_error_in(err: BaseException) -> ConfigError | None:
    """The first `ConfigError` in an exception's cause/context chain (jsonargparse wraps instantiation errors)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_lightning(argv: list[str] | None) -> int:
    """Runs a Lightning command; returns its exit code. A `ConfigError` prints as one short message, exit 2."""
    command = (argv if argv is not None else sys.argv[1:])[:1] or ["fit"]
    try:
        cli = LitSLLMCLI(args=argv)
    except SystemExit as done:  # --print_config and --help end by exiting; report their code instead
        return int(done.code or 0)
    except Exception as err:
        found = config_error_in(err)
        if found is None:
            raise
        print(f"lit-sllm {command[0]}: {found}", file=sys.stderr)
        return 2
    if cli.subcommand == "fit" and cli.trainer.global_rank == 0:
        print("\n".join(summary_lines(cli.trainer)), flush=True)
    return 0
