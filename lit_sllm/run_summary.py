"""What a finished fit left behind, printed by `lit-sllm fit` last: the run folder, the last checkpoint, the
offline W&B run and the command that uploads it, and the generalisation table when the run measured one."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from lit_sllm.callbacks.run_dir import run_dir
from lit_sllm.metrics.generalization import format_table


def wandb_run_folder(logger: WandbLogger) -> Path | None:
    """The local folder of a W&B run (`.../wandb/offline-run-...`), which `wandb sync` uploads."""
    files = getattr(logger.experiment, "dir", None)  # `<run folder>/files`
    return Path(files).parent if files else None


def summary_lines(trainer: L.Trainer) -> list[str]:
    """The summary `lit-sllm fit` prints last."""
    lines = ["Run summary:", f"  run folder       {run_dir(trainer)}"]
    for callback in trainer.checkpoint_callbacks:
        last = getattr(callback, "dirpath", None) and Path(callback.dirpath) / "last.ckpt"
        if last and last.exists():
            lines.append(f"  last checkpoint  {last} (step {trainer.global_step})")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            folder = wandb_run_folder(logger)
            if folder is not None:
                lines += [f"  W&B run          {folder}", f"  upload it with   wandb sync {folder}"]
    tables = [getattr(c, "table", None) for c in trainer.callbacks if type(c).__name__ == "GeneralizationBenchmark"]
    for table in filter(None, tables):
        lines += ["  generalisation (answers from speech vs from text):", format_table(table)]
    return lines
