"""Where a run writes its files, found without collective calls.

`Trainer.log_dir` broadcasts from rank 0, so calling it on rank 0 alone hangs a multi-process job; code that runs
on rank 0 only asks the logger directly.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


def run_dir(trainer: L.Trainer) -> Path:
    """The first logger's log dir (CSV, TensorBoard), else its save dir (W&B has no log dir), else the trainer's
    default root dir."""
    for logger in trainer.loggers:
        folder = logger.log_dir or logger.save_dir
        if folder:
            return Path(folder)
    return Path(trainer.default_root_dir)
