"""Scores a test pass: every rank's generated answers gathered, scored per set with `lit_sllm.metrics`, written out.

The recipes' `test_step` generates from each batch's prompt view and returns its rows; this callback (which every
recipe module adds through `configure_callbacks`) is the one place they are scored.
"""

from __future__ import annotations

import json
from typing import Any

import lightning as L

from lit_sllm.callbacks.gather import gather_rows
from lit_sllm.callbacks.run_dir import run_dir
from lit_sllm.metrics import answer_metrics


class TestAnswers(L.Callback):
    """Logs `test/<set>/{wer,bleu,rougeL,exact_match}` over the whole set and writes
    `<run dir>/predictions/test_<set>.jsonl` ({"key", "task", "answer", "reference"} per sample, sorted by key)."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.scores: dict[str, dict[str, float]] = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows, self.scores = [], {}

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        self.rows += [{"set": batch.source, **row} for row in outputs or []]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = sorted(gather_rows(trainer, self.rows), key=lambda row: (row["set"], row["key"]))
        for name in sorted({row["set"] for row in rows}):
            mine = [{k: v for k, v in row.items() if k != "set"} for row in rows if row["set"] == name]
            answers, references = [r["answer"] for r in mine], [r["reference"] for r in mine]
            self.scores[name] = answer_metrics(answers, references)
            for metric, value in self.scores[name].items():
                pl_module.log(f"test/{name}/{metric}", value, add_dataloader_idx=False, rank_zero_only=True)
            if trainer.global_rank == 0:
                path = run_dir(trainer) / "predictions" / f"test_{name}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in mine))
