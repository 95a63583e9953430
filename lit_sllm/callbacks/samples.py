"""A table of what the model says at each validation: audio, prompt, reference, hypothesis.

W&B gets a `wandb.Table` with playable audio; other loggers get a JSONL file per validation under their log dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from lit_sllm.data.batch import Batch

COLUMNS = ["set", "key", "audio", "prompt", "reference", "hypothesis"]


class SampleTable(L.Callback):
    """Generates answers for the first rows of each validation set and logs them as a table.

    Args:
        rows_per_set: rows taken from the first batch of every validation set.
        max_new_tokens: answer length cap.
    """

    def __init__(self, rows_per_set: int = 4, max_new_tokens: int = 48) -> None:
        self.rows_per_set = rows_per_set
        self.max_new_tokens = max_new_tokens
        self.rows: list[dict[str, Any]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or trainer.global_rank != 0:
            return
        model = pl_module.model
        prompts = batch.generation_view()
        answers = model.generate(prompts, max_new_tokens=self.max_new_tokens)
        clips = prompts.clip_rows(model.audio_token_id)
        for row in range(min(self.rows_per_set, prompts.size)):
            first_clip = clips[row][0] if clips[row] else None
            audio = None
            if first_clip is not None:
                audio = prompts.audio[first_clip, : int(prompts.audio_lengths[first_clip])].float().cpu().numpy()
            prompt_ids = prompts.input_ids[row][prompts.attention_mask[row].bool()]
            self.rows.append(
                {
                    "set": batch.source,
                    "key": batch.keys[row] if batch.keys else str(row),
                    "audio": audio,
                    "prompt": model.tokenizer.decode(prompt_ids, skip_special_tokens=False),
                    "reference": prompts.references[row],
                    "hypothesis": answers[row],
                }
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.rows or trainer.global_rank != 0:
            return
        sample_rate = pl_module.model.sample_rate
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                data = [
                    [r["set"], r["key"], None if r["audio"] is None else wandb.Audio(r["audio"], sample_rate)]
                    + [r["prompt"], r["reference"], r["hypothesis"]]
                    for r in self.rows
                ]
                logger.log_table(key="samples/val", columns=COLUMNS, data=data, step=trainer.global_step)
            elif logger.log_dir:
                folder = Path(logger.log_dir) / "samples"
                folder.mkdir(parents=True, exist_ok=True)
                with open(folder / f"step_{trainer.global_step:08d}.jsonl", "w") as handle:
                    for r in self.rows:
                        handle.write(json.dumps({k: v for k, v in r.items() if k != "audio"}) + "\n")
