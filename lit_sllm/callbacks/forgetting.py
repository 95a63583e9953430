"""Text-only forgetting: is the LLM still the LLM it was?

At fit start the base LLM (LoRA disabled) is scored on text-only eval sets; at every validation the current model
is scored on the same batches. Logged per set as `forgetting/<set>/<metric>`: perplexity on answer tokens and its
ratio to the base, KL(base || current) on answer tokens, generation accuracy and its drop. A frozen-LLM recipe must
read ppl_ratio 1 and KL 0; this callback is how it proves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_sllm.data.batch import IGNORE_INDEX, Batch
from lit_sllm.data.datamodule import text_eval_batches
from lit_sllm.metrics.normalize import normalize_text
from lit_sllm.models.speech_llm import SpeechLLM

Checker = Callable[[str, str, str], bool]


def matches_reference(task: str, answer: str, reference: str) -> bool:
    """Default checker: the answer equals the reference after text normalisation."""
    return normalize_text(answer) == normalize_text(reference)


@dataclass
class ForgettingLimits:
    """Alarms on forgetting; None disables a limit.

    Attributes:
        max_ppl_ratio: largest tolerated perplexity ratio (current / base) on any set.
        max_accuracy_drop: largest tolerated drop of generation accuracy (base - current, in [0, 1]).
        action: "warn" logs a warning; "stop" also ends training.
    """

    max_ppl_ratio: float | None = None
    max_accuracy_drop: float | None = None
    action: Literal["warn", "stop"] = "warn"


@dataclass
class SetScore:
    """Scores of one eval set; `log_probs` are kept for the KL against the base."""

    nll: float
    tokens: int
    accuracy: float | None
    log_probs: list[Tensor]

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / max(self.tokens, 1))


def answer_log_probs(model: SpeechLLM, batch: Batch) -> tuple[list[Tensor], float, int]:
    """Log-probabilities over the vocabulary at each answer token.

    Returns:
        Per row a (n_answer_tokens, V) float32 tensor, the summed NLL of the answer tokens, and their count.
    """
    inputs = model.prepare_inputs(batch)
    log_probs = model(inputs).float().log_softmax(dim=-1)[:, :-1]  # (B, L-1, V)
    targets = inputs.labels[:, 1:]  # (B, L-1)
    answer = targets != IGNORE_INDEX
    nll = -log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0][answer].sum()
    rows = [log_probs[b][answer[b]].cpu() for b in range(targets.shape[0])]
    return rows, float(nll), int(answer.sum())


def kl_divergence(base: list[Tensor], current: list[Tensor]) -> float:
    """Mean over answer tokens of KL(base || current)."""
    total, count = 0.0, 0
    for p_log, q_log in zip(base, current):
        total += float((p_log.exp() * (p_log - q_log)).sum())
        count += p_log.shape[0]
    return total / max(count, 1)


class TextForgetting(L.Callback):
    """Scores the LLM's text-only skills against its own base during training.

    Args:
        sets: name -> text-only eval set (shards glob, folder or index.json), scored in this order.
        batch_size: rows per batch.
        max_batches: batches per set (bounds the cost of every validation).
        generate: also score generation accuracy against the references.
        max_new_tokens: answer length cap when generating.
        checker: `(task, answer, reference) -> bool`; defaults to normalised exact match.
        limits: optional alarms on perplexity ratio and accuracy drop.
    """

    def __init__(
        self,
        sets: dict[str, str],
        batch_size: int = 8,
        max_batches: int = 4,
        generate: bool = True,
        max_new_tokens: int = 32,
        checker: Checker | None = None,
        limits: ForgettingLimits | None = None,
    ) -> None:
        self.sets = dict(sets)
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.generate = generate
        self.max_new_tokens = max_new_tokens
        self.checker = checker or matches_reference
        self.limits = limits or ForgettingLimits()
        self.base: dict[str, SetScore] = {}
        self._batches: dict[str, tuple[list[Batch], list[Batch]]] = {}

    # --- data -----------------------------------------------------------------------------------------------------

    def load_batches(self, name: str, model: SpeechLLM) -> tuple[list[Batch], list[Batch]]:
        """(teacher-forced batches, prompt-only batches) of one set, read once and kept."""
        if name not in self._batches:
            self._batches[name] = text_eval_batches(
                self.sets[name],
                model.tokenizer,
                self.batch_size,
                self.max_batches,
                audio_token=model.audio_token,
                chat_template_kwargs=model.llm_spec.chat_template_kwargs,
            )
        return self._batches[name]

    # --- scoring --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, model: SpeechLLM, name: str, device: torch.device) -> SetScore:
        scored, prompts = self.load_batches(name, model)
        log_probs, nll, tokens = [], 0.0, 0
        for batch in scored:
            rows, batch_nll, batch_tokens = answer_log_probs(model, batch.to(device))
            log_probs += rows
            nll += batch_nll
            tokens += batch_tokens
        accuracy = self._accuracy(model, prompts, device) if self.generate else None
        return SetScore(nll, tokens, accuracy, log_probs)

    def _accuracy(self, model: SpeechLLM, prompts: list[Batch], device: torch.device) -> float:
        hits, total = 0, 0
        for batch in prompts:
            answers = model.generate(batch.to(device), max_new_tokens=self.max_new_tokens)
            hits += sum(self.checker(t, a, r) for t, a, r in zip(batch.tasks, answers, batch.references))
            total += len(answers)
        return hits / max(total, 1)

    def metrics(self, name: str, current: SetScore) -> dict[str, float]:
        base = self.base[name]
        out = {
            "ppl": current.perplexity,
            "ppl_ratio": current.perplexity / base.perplexity,
            "kl": kl_divergence(base.log_probs, current.log_probs),
        }
        if current.accuracy is not None:
            out |= {"accuracy": current.accuracy, "accuracy_drop": base.accuracy - current.accuracy}
        return out

    # --- hooks ----------------------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model: SpeechLLM = pl_module.model
        was_training = model.training
        model.eval()
        with model.without_lora():
            self.base = {name: self.score(model, name, pl_module.device) for name in self.sets}
        model.train(was_training)
        for name, score in self.base.items():
            base_metrics = {f"forgetting/{name}/base_ppl": score.perplexity}
            if score.accuracy is not None:
                base_metrics[f"forgetting/{name}/base_accuracy"] = score.accuracy
            for logger in trainer.loggers:
                logger.log_metrics(base_metrics, step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.base:
            return
        for name in self.sets:
            values = self.metrics(name, self.score(pl_module.model, name, pl_module.device))
            for metric, value in values.items():
                pl_module.log(f"forgetting/{name}/{metric}", value, add_dataloader_idx=False, rank_zero_only=True)
            self._check_limits(trainer, name, values)

    def _check_limits(self, trainer: L.Trainer, name: str, values: dict[str, float]) -> None:
        breaches = []
        if self.limits.max_ppl_ratio is not None and values["ppl_ratio"] > self.limits.max_ppl_ratio:
            breaches.append(f"ppl_ratio {values['ppl_ratio']:.3f} > {self.limits.max_ppl_ratio}")
        drop = values.get("accuracy_drop")
        if self.limits.max_accuracy_drop is not None and drop is not None and drop > self.limits.max_accuracy_drop:
            breaches.append(f"accuracy_drop {drop:.3f} > {self.limits.max_accuracy_drop}")
        if not breaches:
            return
        message = f"Text-only forgetting on '{name}' at step {trainer.global_step}: {', '.join(breaches)}."
        if self.limits.action == "stop":
            trainer.should_stop = True
            message += " Stopping (limits.action: stop)."
        rank_zero_warn(message)
