"""Rebuilding a recipe from its checkpoint in any process, importing only recipe code the user trusts.

A checkpoint records its recipe's class path (`_class_path` in its hyperparameters); Lightning refuses to build a
class that is not already imported, so a fresh process (`lit-sllm export`) must import it first. Importing a
module a file names runs that module's code, so only the suite's own recipes (`lit_sllm.modules`) and modules the
user names are imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import torch

from lit_sllm.config_errors import ConfigError
from lit_sllm.modules.base import SpeechLLMModule

RECIPE_PACKAGE = "lit_sllm.modules"


def checkpoint_class_path(ckpt: str | Path) -> str:
    """The recipe class path a checkpoint written by `lit-sllm fit` records."""
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"Checkpoint {ckpt} does not exist; pass a .ckpt written by `lit-sllm fit`.")
    hparams = torch.load(ckpt, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    if "_class_path" not in hparams:
        raise ConfigError(f"{ckpt} records no recipe class (`_class_path`); it was not written by `lit-sllm fit`.")
    return hparams["_class_path"]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def recipe_class(class_path: str, allowed_modules: Sequence[str] = ()) -> type[SpeechLLMModule]:
    """Imports the recipe class at `class_path` when it lives in `lit_sllm.modules` or in one of `allowed_modules`
    (or their submodules); anything else is refused without being imported."""
    module_name, _, name = class_path.rpartition(".")
    trusted = (RECIPE_PACKAGE, *allowed_modules)
    if not any(_within(module_name, package) for package in trusted):
        raise ConfigError(
            f"The checkpoint's recipe class {class_path!r} is outside {RECIPE_PACKAGE}, and importing it would run "
            f"its module's code. If you trust it, pass --recipe-module {module_name}."
        )
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, SpeechLLMModule)):
        raise ConfigError(f"{class_path!r} is not a SpeechLLMModule recipe class; the checkpoint cannot be rebuilt.")
    return cls


def load_recipe(
    ckpt: str | Path, allowed_modules: Sequence[str] = (), map_location: str | torch.device = "cpu"
) -> SpeechLLMModule:
    """The recipe module a checkpoint was trained with, rebuilt from its recorded config and weights."""
    cls = recipe_class(checkpoint_class_path(ckpt), allowed_modules)
    return cls.load_from_checkpoint(ckpt, map_location=map_location)
