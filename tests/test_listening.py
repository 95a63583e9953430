"""The guard that would have caught a speech LLM that does not listen: the shipped toy recipes, trained briefly, must
do clearly worse on validation when each row hears another row's audio (`val/<set>/audio_gap`)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A short fit of the shipped config: CSV logging into tmp, no end-of-fit benchmarks, one validation at the end.
OVERLAY = """
trainer:
  max_steps: {steps}
  val_check_interval: {steps}
  limit_val_batches: 2
  enable_progress_bar: false
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {root}, name: run}}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {root}/ckpt, save_last: true}}
"""
# recipe config -> (steps, validation set, the smallest gap in nats per answer token that counts as listening)
GUARDS = {
    "experiments/toy/mtbi.yaml": (240, "mtbi", 1.0),
    "experiments/toy/joint_sft.yaml": (300, "asr", 1.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(GUARDS))
def test_the_shipped_recipes_listen(config, tmp_path):
    steps, val_set, margin = GUARDS[config]
    overlay = tmp_path / "short.yaml"
    overlay.write_text(OVERLAY.format(steps=steps, root=tmp_path / "out"))
    (tmp_path / "data_shards").symlink_to(REPO / "data_shards")  # the configs' relative paths, from tmp
    command = [sys.executable, "-m", "lit_sllm.cli", "fit", "--config", str(REPO / config), "--config", str(overlay)]
    env = os.environ | {"OMP_NUM_THREADS": "2", "WANDB_MODE": "offline"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(next((tmp_path / "out" / "run").glob("version_*/metrics.csv"))) as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(f"val/{val_set}/audio_gap")]
    true_loss = float(rows[-1][f"val/{val_set}/loss"])
    shuffled = float(rows[-1][f"val/{val_set}/shuffled_audio_loss"])
    print(f"{config}: loss {true_loss:.3f} with its own audio, {shuffled:.3f} with another row's")
    assert shuffled - true_loss >= margin, f"loss {true_loss:.3f} with its own audio, {shuffled:.3f} with another's"
