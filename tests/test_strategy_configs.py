"""Scale-out configs against the code: the strategy overlays resolve through `lit-sllm fit --print_config` on top of
a model YAML and build Lightning's strategy objects; the SLURM templates are valid bash whose `srun` line the CLI
accepts, with W&B offline by default and resumption from the newest checkpoint."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import Strategy

from lit_sllm.cli import main

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = sorted((REPO / "experiments" / "strategies").glob("*.yaml"))
SBATCH = sorted((REPO / "experiments" / "slurm").glob("*.sbatch"))
FSDP = "lightning.pytorch.strategies.FSDPStrategy"
TINY_MODEL = """
model:
  class_path: lit_sllm.modules.joint_sft.JointSFT
  init_args:
    llm: {name_or_path: /nowhere/llm}
    encoder:
      class_path: lit_sllm.models.encoders.HFSpeechEncoder
      init_args: {name_or_path: /nowhere/encoder}
trainer:
  accelerator: gpu
  devices: 2
  max_steps: 7
"""
FAKE_SRUN = """#!/bin/bash
printf '%s\\n' "$@" > "$SRUN_LOG"
echo "$WANDB_MODE" > "$SRUN_LOG.wandb_mode"
"""


@pytest.fixture()
def tiny_model(tmp_path) -> Path:
    path = tmp_path / "tiny_model.yaml"
    path.write_text(TINY_MODEL)
    return path


def run_cli(argv: list[str]) -> int:
    """`lit-sllm <argv>` in-process (the imports are paid once), its exit code whether it returns or exits."""
    try:
        return main(argv)
    except SystemExit as done:
        return int(done.code or 0)


def print_config(argv: list[str], capsys) -> dict:
    """The resolved config `lit-sllm <argv> --print_config` prints."""
    capsys.readouterr()
    code = run_cli([*argv, "--print_config"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return yaml.safe_load(out)


def assert_subset(printed, expected, where: str = "trainer") -> None:
    """Every value of `expected` is in `printed`; class lists compare as sets, and a dataclass given by class_path
    (which jsonargparse prints as its fields alone) compares by its init_args."""
    if isinstance(expected, dict):
        if "class_path" in expected and "class_path" not in printed:
            expected = expected["init_args"]
        for key, value in expected.items():
            assert key in printed, f"{where}.{key} missing from the printed config"
            assert_subset(printed[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert sorted(map(str, printed)) == sorted(map(str, expected)), where
    else:
        assert printed == expected, where


@pytest.mark.parametrize("path", STRATEGIES, ids=lambda p: p.name)
def test_overlay_is_a_trainer_only_yaml_naming_importable_classes(path):
    overlay = yaml.safe_load(path.read_text())
    assert set(overlay) == {"trainer"}, "an overlay sets trainer keys only, so it composes with any recipe"
    module, _, name = overlay["trainer"]["strategy"]["class_path"].rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), name), Strategy)


@pytest.mark.parametrize("path", STRATEGIES, ids=lambda p: p.name)
def test_overlay_resolves_on_top_of_a_model_config(path, tiny_model, capsys):
    overlay = yaml.safe_load(path.read_text())["trainer"]
    printed = print_config(["fit", "--config", str(tiny_model), "--config", str(path)], capsys)["trainer"]
    assert_subset(printed, overlay)
    assert (printed["devices"], printed["max_steps"]) == (2, 7)  # the model config's trainer keys survive


@pytest.mark.parametrize("path", [p for p in STRATEGIES if FSDP in p.read_text()], ids=lambda p: p.name)
def test_fsdp_overlays_build_the_strategy_they_describe(path):
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer
    from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

    overlay = yaml.safe_load(path.read_text())["trainer"]
    parser = ArgumentParser(parser_mode="omegaconf")
    parser.add_subclass_arguments(Strategy, "strategy")
    strategy = parser.instantiate(parser.parse_object({"strategy": overlay["strategy"]})).strategy
    expected = overlay["strategy"]["init_args"]["sharding_strategy"]
    assert strategy.sharding_strategy == ShardingStrategy[expected]
    assert strategy.mixed_precision.param_dtype == torch.bfloat16
    assert strategy.mixed_precision.buffer_dtype == torch.float32
    wrap = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(wrap, ModuleWrapPolicy) and {GemmaDecoderLayer, WhisperEncoderLayer} <= wrap._module_classes
    checkpointed = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes
    assert {GemmaDecoderLayer, WhisperEncoderLayer} <= checkpointed
    assert strategy._state_dict_type == "full"


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_overlay_builds_a_zero2_strategy():
    overlay = yaml.safe_load((REPO / "experiments" / "strategies" / "deepspeed_zero2.yaml").read_text())["trainer"]
    parser = ArgumentParser(parser_mode="omegaconf")
    parser.add_subclass_arguments(Strategy, "strategy")
    strategy = parser.instantiate(parser.parse_object({"strategy": overlay["strategy"]})).strategy
    assert strategy.config["zero_optimization"]["stage"] == 2 and strategy.exclude_frozen_parameters


def test_a_misspelt_block_class_is_rejected_by_name(tmp_path, tiny_model, capsys):
    text = (REPO / "experiments" / "strategies" / "fsdp_full.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("GemmaDecoderLayer\n", "GemmaDecoderLayr\n", 1))
    assert run_cli(["fit", "--config", str(tiny_model), "--config", str(bad), "--print_config"]) != 0
    assert "has no attribute 'GemmaDecoderLayr'" in capsys.readouterr().err


# --- SLURM templates --------------------------------------------------------------------------------------------


def sbatch_options(path: Path) -> dict[str, str]:
    lines = [line.split("#", 2)[1].split()[1] for line in path.read_text().splitlines() if line.startswith("#SBATCH")]
    return dict(option.removeprefix("--").partition("=")[::2] for option in lines)


def run_template(path: Path, tmp_path: Path, config: Path, **env: str) -> tuple[list[str], str]:
    """Runs an sbatch template as SLURM would, with `srun` replaced by a recorder; returns srun's arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    log = tmp_path / "srun.args"
    slurm = dict(SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_NAME="job", SLURM_JOB_ID="42", SLURM_NNODES="2")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env = base | slurm | dict(SLURM_GPUS_ON_NODE="4", CONFIGS=str(config), SRUN_LOG=str(log)) | env
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    subprocess.run(["bash", str(path)], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    return log.read_text().splitlines(), Path(f"{log}.wandb_mode").read_text().strip()


@pytest.mark.parametrize("path", SBATCH, ids=lambda p: p.name)
def test_sbatch_template_is_valid_bash_with_requeue_options(path):
    subprocess.run(["bash", "-n", str(path)], check=True, capture_output=True)
    options = sbatch_options(path)
    assert options["signal"] == "SIGUSR1@120" and "requeue" in options
    assert options["ntasks-per-node"] == options["gpus-per-node"], "Lightning runs one task per GPU"


@pytest.mark.parametrize("path", SBATCH, ids=lambda p: p.name)
def test_sbatch_srun_line_resolves_through_the_cli(path, tmp_path, tiny_model, capsys):
    args, wandb_mode = run_template(path, tmp_path, tiny_model)
    assert args[:2] == ["--kill-on-bad-exit=1", "lit-sllm"]
    assert wandb_mode == "offline"
    config = print_config(args[2:], capsys)
    run_dir = "runs/job-42"
    # devices stays the string "4", which Lightning reads as four devices (as it would from a YAML)
    assert (config["trainer"]["num_nodes"], str(config["trainer"]["devices"])) == (2, "4")
    assert config["trainer"]["default_root_dir"] == run_dir
    (checkpoint,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert checkpoint["init_args"]["dirpath"] == f"{run_dir}/checkpoints"
    assert checkpoint["init_args"]["save_last"] is True and checkpoint["init_args"]["every_n_train_steps"] == 1000
    assert config["ckpt_path"] == "last"  # nothing saved yet: Lightning warns and starts fresh
    assert run_template(path, tmp_path, tiny_model, WANDB_MODE="online")[1] == "online"


@pytest.mark.parametrize("path", SBATCH, ids=lambda p: p.name)
def test_sbatch_resumes_from_the_newest_checkpoint(path, tmp_path, tiny_model):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    last, requeue = run_dir / "checkpoints" / "last.ckpt", run_dir / "hpc_ckpt_1.ckpt"
    last.write_bytes(b"")
    requeue.mkdir()  # sharded strategies save a folder
    for newer, older in ((requeue, last), (last, requeue)):
        os.utime(older, (1_000_000, 1_000_000))
        os.utime(newer, (2_000_000, 2_000_000))
        args, _ = run_template(path, tmp_path, tiny_model, RUN_DIR=str(run_dir))
        assert args[args.index("--ckpt_path") + 1] == str(newer)


@pytest.mark.parametrize("path", SBATCH, ids=lambda p: p.name)
def test_sbatch_on_cpu_only_nodes_starts_one_process_per_task(path, tmp_path, tiny_model):
    args, _ = run_template(path, tmp_path, tiny_model, SLURM_GPUS_ON_NODE="", SLURM_NTASKS_PER_NODE="3")
    assert args[args.index("--trainer.devices") + 1] == "3"  # --gpus-per-node=0 leaves SLURM_GPUS_ON_NODE unset
