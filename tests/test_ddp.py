"""Two-process CPU DDP (gloo) on the toy world: its models and shards, uneven validation shards per rank, no hang,
every sample validated exactly once."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import TOY_WORLD, toy_samples, write_index, write_shard

CONFIG = """
seed_everything: 0
model:
  class_path: lit_sllm.modules.joint_sft.JointSFT
  init_args:
    llm: {{name_or_path: {llm}}}
    encoder: {{class_path: lit_sllm.models.encoders.HFSpeechEncoder, init_args: {{name_or_path: {encoder}}}}}
    adapter: {{class_path: lit_sllm.models.adapters.FrameStackMLP, init_args: {{stack: 4}}}}
    lora: {{r: 4, alpha: 8}}
data:
  class_path: lit_sllm.data.SpeechTextDataModule
  init_args:
    num_workers: 1
    batches_per_epoch: 3
    train:
      asr: {{shards: {train}, weight: 0.8, batching: {{batch_size: 2}}}}
      text: {{shards: {text}, weight: 0.2, batching: {{batch_size: 2}}}}
    val:
      dev: {{shards: {dev}, batching: {{batch_size: 2}}}}
trainer:
  accelerator: cpu
  devices: 2
  strategy: ddp
  max_steps: 3
  log_every_n_steps: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_checkpointing: false
  default_root_dir: {root}
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}}}}}
  callbacks:
    - {{class_path: model_helpers.KeyRecorder, init_args: {{folder: {root}}}}}
"""


def _uneven_dev_set(folder: Path) -> list[str]:
    """Toy ASR validation samples in three shards of 5, 2 and 4: rank 0 reads 9, rank 1 reads 2."""
    samples, layout = iter(toy_samples("asr/val", 11)), {}
    for shard, count in enumerate((5, 2, 4)):
        name = f"dev-{shard:06d}.tar"
        layout[name] = [next(samples) for _ in range(count)]
        write_shard(folder / name, layout[name])
    write_index(folder, layout)
    return [key for samples in layout.values() for key, _, _ in samples]


@pytest.mark.slow
def test_two_process_ddp_fit_validates_every_sample_exactly_once(tmp_path):
    keys = _uneven_dev_set(tmp_path / "dev")
    root = tmp_path / "out"
    root.mkdir()
    config = tmp_path / "ddp.yaml"
    values = dict(train=TOY_WORLD / "asr" / "train", text=TOY_WORLD / "text" / "train", dev=tmp_path / "dev")
    models = dict(llm=TOY_WORLD / "models" / "llm", encoder=TOY_WORLD / "models" / "encoder")
    config.write_text(CONFIG.format(root=root, **models, **values))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_sllm.cli", "fit", "--config", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [key for rank in (0, 1) for key in json.loads((root / f"val_keys.rank{rank}.json").read_text())]
    assert sorted(seen) == sorted(f"dev/{key}" for key in keys)  # every sample once: none missing, none twice
    per_rank = [len(json.loads((root / f"val_keys.rank{rank}.json").read_text())) for rank in (0, 1)]
    assert per_rank == [9, 2]
    with open(next(root.rglob("metrics.csv"))) as handle:
        counts = [float(r["val/dev/samples"]) for r in csv.DictReader(handle) if r.get("val/dev/samples")]
    assert counts == [len(keys)]  # the logged count is reduced across ranks
