"""End to end through `lit-sllm fit`: real shards in tmp, tiny random models, a real Trainer for a few steps."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from data_helpers import speech_set, text_set

from lit_sllm.cli import main
from lit_sllm.data.chat_template import FALLBACK_CHAT_TEMPLATE
from lit_sllm.models.freezing import component_of

# The fallback behind a system line that reads a template kwarg, so the run shows the template and its kwargs arrive
CHAT_TEMPLATE = "{% if greeting is defined %}<|system|>\n{{ greeting }}<|end|>\n{% endif %}" + FALLBACK_CHAT_TEMPLATE

CONFIG = """
seed_everything: 0
model:
  class_path: lit_sllm.modules.joint_sft.JointSFT
  init_args:
    llm: {{name_or_path: {llm}, chat_template: {template}, chat_template_kwargs: {{greeting: hello}}}}
    encoder:
      class_path: lit_sllm.models.encoders.HFSpeechEncoder
      init_args: {{name_or_path: {encoder}}}
    adapter:
      class_path: lit_sllm.models.adapters.FrameStackMLP
      init_args: {{stack: 2}}
    lora: {{r: 4, alpha: 8, dropout: 0.0}}
    optimizer: {{lr: 0.01, weight_decay: 0.0}}
    schedule: {{warmup_steps: 1}}
    generation: {{max_new_tokens: 4}}
data:
  class_path: lit_sllm.data.SpeechTextDataModule
  init_args:
    num_workers: 0
    batches_per_epoch: 6
    train:
      asr: {{shards: {asr}, weight: 0.5, batching: {{max_duration: 2.0, batch_size: 4}}}}
      text: {{shards: {text}, weight: 0.5, batching: {{batch_size: 2}}}}
    val:
      asr: {{shards: {asr}, batching: {{batch_size: 4}}}}
    test:
      asr: {{shards: {asr}, batching: {{batch_size: 4}}}}
      text: {{shards: {text}, batching: {{batch_size: 4}}, generate: true}}
    eval:
      text: {{shards: {text}, batching: {{batch_size: 2}}, max_samples: 4}}
trainer:
  accelerator: cpu
  max_steps: 6
  log_every_n_steps: 1
  val_check_interval: 3
  num_sanity_val_steps: 0
  enable_progress_bar: false
  default_root_dir: {root}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {root}, name: run}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {root}/ckpt, save_last: true, every_n_train_steps: 3}}
    - class_path: lit_sllm.callbacks.forgetting.TextForgetting
      init_args: {{sets: [text], max_new_tokens: 3}}
    - class_path: lit_sllm.callbacks.samples.SampleTable
      init_args: {{rows_per_set: 2, max_new_tokens: 3}}
    - class_path: lit_sllm.callbacks.throughput.Throughput
"""


@pytest.fixture(scope="module")
def run_config(tmp_path_factory, tiny_llm_dir, tiny_whisper_dir):
    tmp_path = tmp_path_factory.mktemp("e2e")
    speech_set(tmp_path / "asr", shards=2, per_shard=6)
    text_set(tmp_path / "text", shards=1, per_shard=6)
    (tmp_path / "chat.jinja").write_text(CHAT_TEMPLATE)
    values = dict(llm=tiny_llm_dir, encoder=tiny_whisper_dir, asr=tmp_path / "asr", text=tmp_path / "text")
    values["template"] = tmp_path / "chat.jinja"
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.format(root=tmp_path / "out", **values))
    return path


def _metrics(folder, version: int = 0) -> list[dict[str, str]]:
    with open(folder / "run" / f"version_{version}" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(run_config):
    """One short fit shared by the tests below; returns its output folder."""
    assert main(["fit", "--config", str(run_config)]) == 0
    return run_config.parent / "out"


def test_fit_logs_forgetting_saves_lean_checkpoints_config_and_git(trained):
    out = trained
    rows = _metrics(out)
    columns = set(rows[0])
    assert {"train/loss", "train/asr/loss", "train/text/loss", "val/asr/loss", "train/tokens_per_s"} <= columns
    forgetting = [r for r in rows if r.get("forgetting/text/ppl_ratio")]
    assert len(forgetting) == 2  # validations at steps 3 and 6
    assert all(float(r["forgetting/text/kl"]) >= 0 for r in forgetting)
    assert any(r.get("forgetting/text/base_ppl") for r in rows)
    # the run's resolved config, git commit and chat template sit next to the checkpoints
    for name in ("config.yaml", "git.json", "chat_template.jinja"):
        assert (out / "ckpt" / name).is_file()
    assert (out / "ckpt" / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    samples = [json.loads(line) for path in (out / "run").rglob("samples/step_*.jsonl") for line in path.open()]
    assert samples and all(row["prompt"].startswith("<|system|> hello <|end|> <|user|>") for row in samples)
    assert set(json.loads((out / "ckpt" / "git.json").read_text())) == {"commit", "dirty"}
    # lean checkpoints: trainable weights only (encoder, adapter and LoRA for joint SFT)
    state = torch.load(out / "ckpt" / "last.ckpt", weights_only=True, map_location="cpu")
    assert {component_of(k.removeprefix("model.")) for k in state["state_dict"]} == {"encoder", "adapter", "lora"}
    assert state["global_step"] == 6
    assert list((out / "run").rglob("samples/step_*.jsonl"))


def test_print_config_loads_back_unchanged(run_config, tmp_path, capsys):
    assert main(["fit", "--config", str(run_config), "--model.adapter.stack", "4", "--print_config"]) == 0
    first = capsys.readouterr().out
    (tmp_path / "p.yaml").write_text(first)
    assert main(["fit", "--config", str(tmp_path / "p.yaml"), "--print_config"]) == 0
    assert capsys.readouterr().out == first
    assert yaml.safe_load(first)["model"]["init_args"]["adapter"]["init_args"]["stack"] == 4


def test_test_scores_every_set_and_writes_predictions(run_config, trained):
    ckpt = trained / "ckpt" / "last.ckpt"
    assert main(["test", "--config", str(run_config), "--ckpt_path", str(ckpt)]) == 0
    logged = {k: v for row in _metrics(trained, version=1) for k, v in row.items() if v}
    assert {"test/asr/wer", "test/asr/bleu", "test/asr/rougeL", "test/text/wer", "test/asr/loss"} <= set(logged)
    assert 0.0 <= float(logged["test/asr/rougeL"]) <= 1.0
    predictions = trained / "run" / "version_1" / "predictions" / "test_asr.jsonl"
    keys = [json.loads(line)["key"] for line in predictions.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 12  # every sample of the set exactly once


def test_predict_on_a_folder_of_audio_files_writes_one_answer_per_file(run_config, trained, tmp_path):
    from data_helpers import encode, sine

    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "a.wav").write_bytes(encode(sine(0.5), fmt="WAV"))
    (folder / "b.flac").write_bytes(encode(sine(0.4, rate=8000), rate=8000))
    (folder / "c.flac").write_bytes(b"not audio at all")
    output = tmp_path / "answers.jsonl"
    args = ["predict", "--config", str(trained / "ckpt" / "config.yaml"), "--config", "experiments/predict_files.yaml"]
    args += ["--data.inputs", str(folder), "--trainer.callbacks+=lit_sllm.callbacks.predictions.PredictionWriter"]
    args += ["--trainer.callbacks.output", str(output), "--ckpt_path", str(trained / "ckpt" / "last.ckpt")]
    assert main(args) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(line["key"] for line in lines) == ["a", "b"]  # the unreadable file is skipped, with a warning
    assert all(isinstance(line["answer"], str) for line in lines)


def test_resume_from_last_checkpoint_continues_the_global_step(run_config, trained):
    ckpt = trained / "ckpt" / "last.ckpt"
    args = ["fit", "--config", str(run_config), "--trainer.max_steps", "8", "--ckpt_path", str(ckpt)]
    assert main(args) == 0
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert state["global_step"] == 8
