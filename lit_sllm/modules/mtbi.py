"""MTBI (Multi-Task Behavior Imitation): answer from speech what the frozen LLM answers from the transcript.

Encoder and LLM are frozen; the adapter learns. The target is the teacher's response (written into the shards by
`lit-sllm teacher`); an optional KL term matches the teacher's next-token distributions: computed online by the
same frozen LLM reading the transcript (`teacher_view`), or stored with the shards when they were labelled, as the
teacher's top-k (`teacher_logits`: no teacher pass in the step). Interleaving and task sampling happen in the
data transform.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.batch import Batch
from lit_sllm.models.freezing import Trainable
from lit_sllm.models.splice import Spliced
from lit_sllm.modules.base import SpeechLLMModule


class MTBI(SpeechLLMModule):
    """Behaviour imitation with optional logit distillation.

    Args:
        kd_weight: weight of the KL term to the teacher's logits (0 trains on the teacher's text only).
        kd_temperature: softening temperature of the KL term.
        asr_weight: loss weight of batches whose task is ASR, when ASR is mixed in as one more task.
        **kwargs: the shared recipe arguments (llm, encoder, adapter, lora, trainable, optimizer, ...).
    """

    default_trainable = Trainable(encoder=False, adapter=True, llm=False, lora=False)

    def __init__(self, kd_weight: float = 0.0, kd_temperature: float = 1.0, asr_weight: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.asr_weight = asr_weight

    def compute_loss(self, batch: Batch, inputs: Spliced, hidden: Tensor) -> dict[str, Tensor]:
        teacher = None
        given = batch.teacher is not None or batch.teacher_topk is not None
        if self.kd_weight > 0 and batch.num_target_tokens() and (self.training or given):
            if not given:  # training without a teacher: the KD term would silently not take effect
                raise ConfigError(
                    f"model.init_args.kd_weight is {self.kd_weight} but a batch from '{batch.source}' has no teacher; "
                    f"set data.<split>.{batch.source}.transform.init_args.teacher_view: true (or teacher_logits: true "
                    "with shards labelled by `lit-sllm teacher --topk K`), or kd_weight: 0."
                )
            teacher = batch.teacher_topk
            if teacher is None:
                teacher = (self.teacher_hidden(batch), batch.teacher.labels)
        losses = self.token_losses(hidden, inputs.labels, teacher, self.kd_temperature)
        weights = torch.tensor([self.asr_weight if t == "asr" else 1.0 for t in batch.tasks], device=hidden.device)
        ce = (losses.ce * weights).sum() / (losses.count * weights).sum().clamp(min=1)
        terms = {"loss": ce, "ce": ce}
        if losses.kl is not None:
            kd = losses.kl.sum() / losses.count.sum().clamp(min=1) * self.kd_temperature**2
            terms |= {"kd": kd, "loss": ce + self.kd_weight * kd}
        return terms

    def on_fit_start(self) -> None:
        """KD needs a teacher view on every training source: checked before the first step."""
        super().on_fit_start()
        specs = getattr(getattr(self.trainer, "datamodule", None), "train_specs", {})
        if self.kd_weight > 0:
            for name, spec in specs.items():
                if not getattr(spec.transform, "gives_teacher", False):
                    raise ConfigError(
                        f"model.init_args.kd_weight is {self.kd_weight} but data.train.{name}.transform gives no "
                        f"teacher, so the KD term could not take effect; set data.train.{name}.transform."
                        "init_args.teacher_view: true or teacher_logits: true (BehaviourImitation), or kd_weight: 0."
                    )

    @torch.no_grad()
    def teacher_hidden(self, batch: Batch) -> Tensor:
        """The frozen LLM's (B, L_t, H) final hidden states reading the transcript instead of the speech; the loss
        applies the output head at the response tokens only."""
        teacher = batch.teacher
        embeds = self.model.llm.get_input_embeddings()(teacher.input_ids)  # (B, L_t, H)
        return self.model.hidden_states(embeds, teacher.attention_mask)
