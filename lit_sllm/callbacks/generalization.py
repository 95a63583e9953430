"""Runs MTBI's generalisation benchmark on `data.eval.<set>` when training ends (and on `lit-sllm evaluate` /
`validate` of a checkpoint) and prints its table (also to the loggers and `<run dir>/generalization.json`)."""

from __future__ import annotations

import json

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from lit_sllm.callbacks.gather import gather_rows
from lit_sllm.callbacks.run_dir import run_dir
from lit_sllm.data.batch import Batch
from lit_sllm.metrics.generalization import Answered, TaskChecker, format_table, score_answers
from lit_sllm.models.speech_llm import SpeechLLM
from lit_sllm.models.text_generation import answer_token_prompts


class GeneralizationBenchmark(L.Callback):
    """Seen / unseen-prompt / unseen-task agreement between answers from speech and from the transcript.

    Args:
        set: the eval set under `data.eval` whose `expand` is `lit_sllm.data.generalization.GeneralizationRequests`
            (held-out speech with transcripts, e.g. the ASR test set; `max_samples` utterances, each asked every task
            in every category it has).
        max_new_tokens: answer length cap.
        checker: `(task, transcript, answer) -> bool` for tasks whose answers can be checked (the toy world).
    """

    def __init__(self, set: str = "generalization", max_new_tokens: int = 32, checker: TaskChecker | None = None):
        self.set, self.max_new_tokens, self.checker = set, max_new_tokens, checker
        self.table: dict[str, dict[str, float]] = {}
        self.answered: list[Answered] = []  # every rank's answers, by key
        self.local_keys: list[str] = []  # the questions this rank answered

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        trainer.datamodule.require_eval_set(self.set, "GeneralizationBenchmark.set")

    @torch.no_grad()
    def answer(self, model: SpeechLLM, batch: Batch) -> list[Answered]:
        """Both answers to one batch of questions: from speech, and from the transcript by the LLM alone."""
        if batch.teacher is None:
            raise ValueError(
                f"Eval set '{batch.source}' gives questions without a transcript-only view; set its expand to "
                "lit_sllm.data.generalization.GeneralizationRequests."
            )
        speech = model.generate(batch.generation_view(), max_new_tokens=self.max_new_tokens)
        text_view = batch.teacher
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(text_view.input_ids, text_view.attention_mask)]
        with model.without_lora():
            text = answer_token_prompts(model.llm, model.tokenizer, prompts, self.max_new_tokens)
        rows = zip(batch.keys, batch.groups, batch.tasks, batch.transcripts, speech, text)
        return [Answered(*row) for row in rows]

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, dict[str, float]]:
        """This rank answers its share of the set; the table is scored over every rank's answers."""
        model: SpeechLLM = pl_module.model
        was_training = model.training
        model.eval()
        answered = []
        for batch in trainer.datamodule.eval_dataloader(self.set):
            answered += self.answer(model, batch.to(pl_module.device))
        model.train(was_training)
        self.local_keys = [a.key for a in answered]
        self.answered = sorted(gather_rows(trainer, answered), key=lambda a: a.key)
        return score_answers(self.answered, self.checker)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # `lit-sllm evaluate` / `validate` of a checkpoint
            self.report(trainer, pl_module)

    def report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.table = self.run(trainer, pl_module)
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
