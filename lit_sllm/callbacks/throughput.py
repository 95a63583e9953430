"""Training speed in the units speech-LLM runs are budgeted in: tokens and seconds of audio per second."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from lit_sllm.data.batch import Batch


class Throughput(L.Callback):
    """Logs `train/tokens_per_s` (target tokens, on the progress bar), `train/input_tokens_per_s` and
    `train/audio_s_per_s` for every training batch, timed from batch start to batch end."""

    def __init__(self) -> None:
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Batch, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, *args: Any
    ) -> None:
        seconds = max(time.perf_counter() - self._start, 1e-9)
        audio_seconds = float(batch.audio_lengths.sum()) / pl_module.model.sample_rate
        size = batch.size
        pl_module.log("train/tokens_per_s", batch.num_target_tokens() / seconds, prog_bar=True, batch_size=size)
        pl_module.log("train/input_tokens_per_s", float(batch.attention_mask.sum()) / seconds, batch_size=size)
        pl_module.log("train/audio_s_per_s", audio_seconds / seconds, batch_size=size)
