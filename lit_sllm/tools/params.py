"""`lit-sllm params`: the parameter table of an experiment's model, built on the meta device without weights.

Sizes a run before any download or GPU: a Gemma-2B + Conformer-adapter config costs no memory and seconds here.
"""

from __future__ import annotations

import argparse
from typing import Any


def model_section(config_paths: list[str]) -> dict[str, Any]:
    """The merged `model:` section of one or more experiment YAMLs, interpolations resolved."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(*(OmegaConf.load(path) for path in config_paths))
    if "model" not in merged:
        raise KeyError(f"No `model:` section in {config_paths}; pass the experiment YAML(s) given to `lit-sllm fit`.")
    return OmegaConf.to_container(merged.model, resolve=True)


def without_weights(section: dict[str, Any]) -> dict[str, Any]:
    """The same model config with every pretrained load switched to config-only."""
    init_args = section.setdefault("init_args", {})
    init_args.setdefault("llm", {})["load_weights"] = False
    encoder_args = init_args.get("encoder", {}).get("init_args", {})
    if "name_or_path" in encoder_args:
        encoder_args["load_weights"] = False
    return section


def build_on_meta(section: dict[str, Any]) -> Any:
    """Instantiates the recipe module from its config on the meta device: shapes only, no memory, no downloads."""
    import torch
    from jsonargparse import ArgumentParser

    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.modules.base import SpeechLLMModule

    parser = ArgumentParser(parser_mode="omegaconf")
    parser.add_subclass_arguments(SpeechLLMModule, "model", required=True)
    config = parser.parse_object({"model": without_weights(section)})
    with torch.device("meta"):
        return parser.instantiate_classes(config).model


def run(args: argparse.Namespace) -> int:
    # lazy: loads torch, so it waits until the command runs (`--help` stays fast)
    from lit_sllm.models.freezing import format_parameter_table, parameter_counts

    module = build_on_meta(model_section(args.config))
    print(format_parameter_table(parameter_counts(module.model)))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "params", help="parameter table of a config's model, on the meta device", description=__doc__
    )
    parser.add_argument("--config", action="append", required=True, help="experiment YAML (repeat to compose)")
    parser.set_defaults(func=run)
