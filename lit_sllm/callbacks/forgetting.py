"""Text-only forgetting: is the LLM still the LLM it was?

At fit start the base LLM (LoRA disabled) is scored on text-only eval sets (`data.eval.<set>`, each rank its share);
at every validation the current model is scored on the same samples. Logged per set as `forgetting/<set>/<metric>`,
summed over ranks: perplexity on answer tokens and its ratio to the base, KL(base || current) on answer tokens,
generation accuracy and its drop. A frozen-LLM recipe must read ppl_ratio 1 and KL 0; this callback is how it proves
it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_sllm.callbacks.gather import sum_over_ranks
from lit_sllm.data.batch import Batch
from lit_sllm.metrics.normalize import normalize_text
from lit_sllm.models.speech_llm import SpeechLLM
from lit_sllm.modules.losses import answer_positions

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
    """One rank's scores of its share of an eval set; `log_probs` (by sample key) are kept for the KL to the base."""

    nll: float = 0.0
    tokens: int = 0
    hits: int = 0
    answered: int = 0
    samples: int = 0
    log_probs: dict[str, Tensor] = field(default_factory=dict)


def answer_log_probs(model: SpeechLLM, batch: Batch) -> tuple[list[Tensor], float, int]:
    """Log-probabilities over the vocabulary at each answer token (the head runs at answer positions only).

    Returns:
        Per row a (n_answer_tokens, V) float32 tensor, the summed NLL of the answer tokens, and their count.
    """
    inputs = model.prepare_inputs(batch)
    hidden = model.hidden_states(inputs.inputs_embeds, inputs.attention_mask)  # (B, L, H)
    rows, positions = answer_positions(inputs.labels)  # (n,), (n,)
    log_probs = model.lm_head(hidden[rows, positions]).float().log_softmax(dim=-1)  # (n, V)
    targets = inputs.labels[rows, positions + 1]  # (n,)
    nll = -log_probs.gather(-1, targets[:, None]).sum()
    per_row = [log_probs[rows == b].cpu() for b in range(inputs.labels.shape[0])]
    return per_row, float(nll), int(targets.numel())


def kl_sum(base: dict[str, Tensor], current: dict[str, Tensor]) -> tuple[float, int]:
    """Summed KL(base || current) over the answer tokens of the samples both scored, and those tokens' count."""
    total, count = 0.0, 0
    for key in base.keys() & current.keys():
        p_log, q_log = base[key], current[key]
        total += float((p_log.exp() * (p_log - q_log)).sum())
        count += p_log.shape[0]
    return total, count


class TextForgetting(L.Callback):
    """Scores the LLM's text-only skills against its own base during training.

    Args:
        sets: names of text-only eval sets under `data.eval` (their size is the set's `max_samples`).
        generate: also score generation accuracy against the references.
        max_new_tokens: answer length cap when generating.
        checker: `(task, answer, reference) -> bool`; defaults to normalised exact match.
        limits: optional alarms on perplexity ratio and accuracy drop.
    """

    def __init__(
        self,
        sets: list[str],
        generate: bool = True,
        max_new_tokens: int = 32,
        checker: Checker | None = None,
        limits: ForgettingLimits | None = None,
    ) -> None:
        self.sets = list(sets)
        self.generate = generate
        self.max_new_tokens = max_new_tokens
        self.checker = checker or matches_reference
        self.limits = limits or ForgettingLimits()
        self.base: dict[str, SetScore] = {}
        self.last: dict[str, SetScore] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for name in self.sets:
            trainer.datamodule.require_eval_set(name, "TextForgetting.sets")

    # --- scoring --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, trainer: L.Trainer, model: SpeechLLM, name: str, device: torch.device) -> SetScore:
        """This rank's share of set `name`, as the DataModule hands it out."""
        result = SetScore()
        for batch in trainer.datamodule.eval_dataloader(name):
            batch = batch.to(device)
            rows, nll, tokens = answer_log_probs(model, batch)
            result.log_probs.update(zip(batch.keys, rows))
            result.nll, result.tokens, result.samples = (
                result.nll + nll,
                result.tokens + tokens,
                result.samples + batch.size,
            )
            if self.generate:
                prompts = batch.generation_view()
                answers = model.generate(prompts, max_new_tokens=self.max_new_tokens)
                result.hits += sum(map(self.checker, prompts.tasks, answers, prompts.references))
                result.answered += len(answers)
        return result

    def metrics(self, trainer: L.Trainer, name: str, current: SetScore) -> dict[str, float]:
        """The set's metrics over every rank's share."""
        base = self.base[name]
        kl, kl_tokens = kl_sum(base.log_probs, current.log_probs)
        sums = [current.nll, current.tokens, base.nll, base.tokens, kl, kl_tokens, current.samples]
        sums += [current.hits, base.hits, current.answered]
        nll, tokens, base_nll, base_tokens, kl, kl_tokens, samples, hits, base_hits, answered = sum_over_ranks(
            trainer, sums
        )
        perplexity, base_perplexity = math.exp(nll / max(tokens, 1)), math.exp(base_nll / max(base_tokens, 1))
        out = {
            "ppl": perplexity,
            "ppl_ratio": perplexity / base_perplexity,
            "base_ppl": base_perplexity,
            "kl": kl / max(kl_tokens, 1),
            "samples": samples,
        }
        if self.generate:
            accuracy, base_accuracy = hits / max(answered, 1), base_hits / max(answered, 1)
            out |= {"accuracy": accuracy, "base_accuracy": base_accuracy, "accuracy_drop": base_accuracy - accuracy}
        return out

    # --- hooks ----------------------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.score_base(trainer, pl_module)

    def score_base(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Scores the base LLM (LoRA disabled) on every set and logs `forgetting/<set>/base_*`."""
        model: SpeechLLM = pl_module.model
        was_training = model.training
        model.eval()
        with model.without_lora():
            self.base = {name: self.score(trainer, model, name, pl_module.device) for name in self.sets}
        model.train(was_training)
        for name in self.sets:
            values = self.metrics(trainer, name, self.base[name])
            base_metrics = {f"forgetting/{name}/base_ppl": values["base_ppl"]}
            if self.generate:
                base_metrics[f"forgetting/{name}/base_accuracy"] = values["base_accuracy"]
            for logger in trainer.loggers:
                logger.log_metrics(base_metrics, step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING and not self.base:  # `lit-sllm evaluate` of a checkpoint
            self.score_base(trainer, pl_module)
        if trainer.sanity_checking or not self.base:
            return
        for name in self.sets:
            self.last[name] = self.score(trainer, pl_module.model, name, pl_module.device)
            values = self.metrics(trainer, name, self.last[name])
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
