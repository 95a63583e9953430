"""Runs MTBI's generalisation benchmark when training ends and prints its table (also to the loggers)."""

from __future__ import annotations

import itertools
import json

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from lit_sllm.callbacks.run_dir import run_dir
from lit_sllm.data.pipeline import DataTally, ReadConfig, Slot, finite_samples, resolve_shards
from lit_sllm.data.tasks import TaskSet
from lit_sllm.metrics.generalization import (
    TaskChecker,
    answer_requests,
    build_requests,
    format_table,
    score_requests,
)


class GeneralizationBenchmark(L.Callback):
    """Seen / unseen-prompt / unseen-task agreement between answers from speech and from the transcript.

    Args:
        shards: held-out speech with transcripts (e.g. the ASR test set).
        tasks: the MTBI task set YAML (with held-out phrasings and tasks).
        max_samples: utterances used (each is asked every task in every category it has).
        batch_size: requests per generation batch.
        max_new_tokens: answer length cap.
        checker: `(task, transcript, answer) -> bool` for tasks whose answers can be checked (the toy world).
        seed: draws the phrasing of each request.
    """

    def __init__(
        self,
        shards: str,
        tasks: str,
        max_samples: int = 32,
        batch_size: int = 16,
        max_new_tokens: int = 32,
        checker: TaskChecker | None = None,
        seed: int = 0,
    ) -> None:
        self.shards, self.tasks = shards, tasks
        self.max_samples, self.batch_size, self.max_new_tokens = max_samples, batch_size, max_new_tokens
        self.checker, self.seed = checker, seed
        self.table: dict[str, dict[str, float]] = {}

    def run(self, pl_module: L.LightningModule) -> dict[str, dict[str, float]]:
        model = pl_module.model
        read = ReadConfig(sample_rate=model.sample_rate)
        samples = list(
            itertools.islice(finite_samples(resolve_shards(self.shards), read, Slot(), DataTally()), self.max_samples)
        )
        requests = build_requests(samples, TaskSet.load(self.tasks), self.seed)
        was_training = model.training
        model.eval()
        speech, text = answer_requests(model, requests, self.batch_size, self.max_new_tokens)
        model.train(was_training)
        return score_requests(requests, speech, text, self.checker)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.table = self.run(pl_module)
        if trainer.global_rank != 0:
            return
        rank_zero_info(
            "Generalisation benchmark (agreement of answers from speech with answers from text):\n"
            + format_table(self.table)
        )
        metrics = {f"generalization/{c}/{m}": v for c, entry in self.table.items() for m, v in entry.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                columns = ["category", *next(iter(self.table.values())).keys()]
                rows = [[c, *entry.values()] for c, entry in self.table.items()]
                logger.log_table(key="generalization", columns=columns, data=rows, step=trainer.global_step)
        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "generalization.json").write_text(json.dumps(self.table, indent=2))
