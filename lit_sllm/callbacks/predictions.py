"""Writes `lit-sllm predict` answers as JSONL, one line per input, as batches finish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from lit_sllm.callbacks.run_dir import run_dir


class PredictionWriter(BasePredictionWriter):
    """Appends {"set", "key", "task", "answer", "reference"} lines to a JSONL file.

    Args:
        output: the JSONL path; with several ranks each writes `<stem>.rank<r>.jsonl` beside it. Default:
            `<log dir>/predictions/predict.jsonl`.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self._path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(self.output) if self.output else run_dir(trainer) / "predictions" / "predict.jsonl"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self._path = path

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        with open(self._path, "a") as handle:
            for row in prediction:
                handle.write(json.dumps({"set": batch.source, **row}, ensure_ascii=False) + "\n")
