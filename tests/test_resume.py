"""Crash-safe resume: a toy-world fit SIGKILLed after a checkpoint resumes with `--ckpt_path last` where it stopped."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_helpers import TOY_WORLD

CONFIG = """
seed_everything: 0
model:
  class_path: lit_sllm.modules.mtbi.MTBI
  init_args:
    llm: {{name_or_path: {llm}}}
    encoder: {{class_path: lit_sllm.models.encoders.HFSpeechEncoder, init_args: {{name_or_path: {encoder}}}}}
    adapter: {{class_path: lit_sllm.models.adapters.FrameStackMLP, init_args: {{stack: 2}}}}
    optimizer: {{lr: 0.001}}
data:
  class_path: lit_sllm.data.SpeechTextDataModule
  init_args:
    num_workers: 0
    batches_per_epoch: 1000
    train:
      asr: {{shards: {asr}, batching: {{batch_size: 2}}}}
trainer:
  accelerator: cpu
  max_steps: {steps}
  log_every_n_steps: 1
  enable_progress_bar: false
  limit_val_batches: 0
  default_root_dir: {root}
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}, name: run}}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {root}/ckpt, save_last: true, every_n_train_steps: 3}}
"""


def _adam_step(checkpoint: dict) -> int:
    return int(next(iter(checkpoint["optimizer_states"][0]["state"].values()))["step"])


@pytest.mark.slow
def test_sigkilled_fit_resumes_from_its_last_checkpoint(tmp_path):
    root, steps = tmp_path / "out", 400
    config = tmp_path / "run.yaml"
    models = dict(llm=TOY_WORLD / "models" / "llm", encoder=TOY_WORLD / "models" / "encoder")
    values = dict(asr=TOY_WORLD / "asr" / "train", root=root, steps=steps, **models)
    config.write_text(CONFIG.format(**values))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_sllm.cli", "fit", "--config", str(config)]
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = root / "ckpt" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and run.poll() is None:
        if last.exists() and _global_step(last) >= 6:
            break
        time.sleep(0.2)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, "the fit ended before it could be killed mid-run"
    killed = torch.load(last, weights_only=True, map_location="cpu")
    done_before = killed["global_step"]
    assert _adam_step(killed) == done_before and "SpeechTextDataModule" in killed

    resumed_steps = done_before + 6
    command += ["--trainer.max_steps", str(resumed_steps), "--ckpt_path", "last"]
    assert subprocess.run(command, env=env, capture_output=True, timeout=300).returncode == 0
    final = torch.load(last, weights_only=True, map_location="cpu")
    assert final["global_step"] == resumed_steps
    assert _adam_step(final) == resumed_steps  # the optimizer continued, it did not start again
    assert final["SpeechTextDataModule"]["batches"] > killed["SpeechTextDataModule"]["batches"]
    with open(sorted(Path(root, "run").glob("version_*"))[-1] / "metrics.csv") as handle:
        trained_steps = sorted({int(r["step"]) for r in csv.DictReader(handle) if r.get("train/loss")})
    assert trained_steps[0] >= done_before and len(trained_steps) == 6  # only the remaining steps ran


def _global_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")["global_step"]
    except Exception:  # noqa: BLE001 - the file may be half written while we poll it
        return 0
