"""Run files (config, git commit, benchmark tables, predictions) go where the logger writes, W&B included."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from lit_sllm.callbacks.run_dir import run_dir


def test_run_dir_follows_the_first_logger(tmp_path):
    wandb = L.Trainer(logger=WandbLogger(save_dir=str(tmp_path / "wb"), offline=True), default_root_dir=tmp_path)
    assert run_dir(wandb) == tmp_path / "wb"  # W&B has no log_dir: its save_dir, not the working directory
    csv = L.Trainer(logger=CSVLogger(str(tmp_path / "csv"), name="x", version=0), default_root_dir=tmp_path)
    assert run_dir(csv) == tmp_path / "csv" / "x" / "version_0"
    assert run_dir(L.Trainer(logger=False, default_root_dir=tmp_path / "root")) == tmp_path / "root"
