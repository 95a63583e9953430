"""The LightningModule both recipes share: build the model, one `_step`, optimizer, logging, lean checkpoints."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lit_sllm.callbacks.answers import TestAnswers
from lit_sllm.config_errors import ConfigError
from lit_sllm.data.batch import Batch, TeacherTopK
from lit_sllm.models.freezing import Trainable, component_of, format_parameter_table, parameter_counts
from lit_sllm.models.speech_llm import SpeechLLM
from lit_sllm.models.splice import Spliced
from lit_sllm.modules.listening import audio_from_other_rows
from lit_sllm.modules.losses import Teacher, TokenLosses, full_logit_losses, labelled_losses
from lit_sllm.modules.optim import OptimSpec, ScheduleSpec, build_optimizer, build_scheduler

# Frozen components stay in eval mode on purpose (`SpeechLLM.train`); Lightning warns about each one at fit start.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


@dataclass
class GenerationSpec:
    """Decoding settings for evaluation and prediction.

    Attributes:
        max_new_tokens: answer length cap.
        num_beams: 1 is greedy (the papers' evaluation setting).
    """

    max_new_tokens: int = 64
    num_beams: int = 1


class SpeechLLMModule(L.LightningModule):
    """Shared recipe base: a thin step around `SpeechLLM` with config-driven optimisation.

    The model's own settings (`llm`, `encoder`, `adapter`, `lora`, `audio_token`, `match_embedding_rms`) pass
    through `model_args` to `SpeechLLM`, which documents them; the CLI reads them from its signature, so they stay
    flat under `model.init_args` and have one home.

    Args:
        trainable: which components train; null takes the recipe's default.
        optimizer: optimizer settings.
        schedule: learning-rate schedule.
        generation: decoding settings for eval/predict.
        max_nonfinite_steps: consecutive non-finite losses tolerated (each skips its step) before training stops.
        log_audio_gap: on val and test speech batches, also log the loss with audio taken from other rows and its
            gap to the true loss (`lit_sllm.modules.listening`; one more forward pass per batch).
        compile: `torch.compile` the encoder and the LLM in place (dynamic shapes, since bucketed batches vary in
            length); parameter names and checkpoints are unchanged.
        loss_logits: "labelled" runs the LLM's output head only where a token is labelled, in chunks
            (`lit_sllm.modules.losses.labelled_losses`); "full" computes (B, L', V) logits at every position first
            (the same losses, much more memory at large vocabularies).
        loss_chunk_size: labelled positions per chunk of the output head with "labelled" (the peak holds one
            chunk's logits: chunk_size x vocabulary floats).
    """

    default_trainable = Trainable()

    def __init__(
        self,
        trainable: Trainable | None = None,
        optimizer: OptimSpec | None = None,
        schedule: ScheduleSpec | None = None,
        generation: GenerationSpec | None = None,
        max_nonfinite_steps: int = 20,
        log_audio_gap: bool = True,
        compile: bool = False,
        loss_logits: Literal["labelled", "full"] = "labelled",
        loss_chunk_size: int = 1024,
        **model_args: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "adapter"])
        self.model = SpeechLLM(trainable=trainable or self.default_trainable, **model_args)
        self._record_hparams()
        self.optim_spec = optimizer or OptimSpec()
        self.schedule_spec = schedule or ScheduleSpec()
        self.generation = generation or GenerationSpec()
        self.max_nonfinite_steps = max_nonfinite_steps
        self.log_audio_gap = log_audio_gap
        if loss_logits not in ("labelled", "full") or loss_chunk_size < 1:
            raise ConfigError(
                f"model.init_args.loss_logits is {loss_logits!r} and loss_chunk_size {loss_chunk_size}: use "
                "loss_logits 'labelled' or 'full' and a loss_chunk_size of at least 1 (default 1024)."
            )
        self.loss_logits, self.loss_chunk_size = loss_logits, loss_chunk_size
        if compile:
            self.model.encoder.compile(dynamic=True)
            self.model.llm.compile(dynamic=True)
            self.model.llm.get_decoder().compile(dynamic=True)  # the training loss calls the decoder body directly
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._data_counts: Counter[str] = Counter()  # data counts since the logger last wrote
        # Checkpoints hold trainable weights only; frozen weights come from the pretrained paths in the config.
        self.strict_loading = False

    def _record_hparams(self) -> None:
        """Hyperparameters as plain data, components by class_path, so `load_from_checkpoint` rebuilds the module
        through jsonargparse and `torch.load(weights_only=True)` can read every checkpoint."""
        config = self.model.config()
        for key, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)
        cls = type(self)
        self.hparams.update(
            encoder=config["encoder"],
            adapter=config["adapter"],
            _class_path=f"{cls.__module__}.{cls.__qualname__}",
            _instantiator="lightning.pytorch.cli.instantiate_module",
        )

    # --- the step -------------------------------------------------------------------------------------------------

    def compute_loss(self, batch: Batch, inputs: Spliced, hidden: Tensor) -> dict[str, Tensor]:
        """Recipe loss terms; the base trains with cross-entropy on labelled (assistant) tokens.

        Args:
            batch: the batch `inputs` were prepared from.
            inputs: the spliced inputs.
            hidden: (B, L', H) the LLM's final hidden states on `inputs` (`SpeechLLM.hidden_states`).

        Returns:
            {"loss": scalar to optimise, ...other scalars to log}.
        """
        losses = self.token_losses(hidden, inputs.labels)
        return {"loss": losses.ce.sum() / losses.count.sum().clamp(min=1)}

    def token_losses(
        self, hidden: Tensor, labels: Tensor, teacher: Teacher | TeacherTopK | None = None, temperature: float = 1.0
    ) -> TokenLosses:
        """Per-row CE (and KL to `teacher`: its (B_t, L_t, H) hidden states and labels, or its stored top-k) by
        `loss_logits`."""
        head = self.model.lm_head
        if self.loss_logits == "labelled":
            trains = any(p.requires_grad for p in self.model.llm.get_output_embeddings().parameters())
            return labelled_losses(hidden, labels, head, self.loss_chunk_size, teacher, temperature, trains)
        if teacher is not None and not isinstance(teacher, TeacherTopK):
            with torch.no_grad():
                teacher = (head(teacher[0]), teacher[1])
        return full_logit_losses(head(hidden), labels, teacher, temperature)  # logits (B, L', V)

    def _loss(self, batch: Batch) -> dict[str, Tensor]:
        inputs = self.model.prepare_inputs(batch)
        return self.compute_loss(batch, inputs, self.model.hidden_states(inputs.inputs_embeds, inputs.attention_mask))

    def _step(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        terms = self._loss(batch)
        size = batch.size
        if stage != "train" or self._logger_writes():
            for name, value in terms.items():
                key = f"{stage}/{batch.source}/{name}"
                self.log(key, value, batch_size=size, add_dataloader_idx=False, sync_dist=True)
        self.log(f"{stage}/loss", terms["loss"], batch_size=size, prog_bar=True, sync_dist=stage != "train")
        if stage != "train":  # summed over batches and ranks: equals the set's size when each sample is seen once
            name = f"{stage}/{batch.source}/samples"
            self.log(name, float(size), reduce_fx="sum", sync_dist=True, add_dataloader_idx=False, batch_size=size)
            if self.log_audio_gap:
                self._log_audio_gap(batch, stage, terms["loss"])
        return terms

    def _log_audio_gap(self, batch: Batch, stage: str, loss: Tensor) -> None:
        """`<stage>/<set>/shuffled_audio_loss` and `audio_gap` (its excess over the true loss; see `listening`)."""
        foreign = audio_from_other_rows(batch, self.model.audio_token_id)
        if foreign is None or not batch.num_target_tokens():
            return
        shuffled = self._loss(foreign)["loss"]
        for name, value in (("shuffled_audio_loss", shuffled), ("audio_gap", shuffled - loss)):
            key = f"{stage}/{batch.source}/{name}"
            self.log(key, value, batch_size=batch.size, add_dataloader_idx=False, sync_dist=True)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        self._log_data_stats(batch)
        terms = self._step(batch, "train")
        if not batch.num_clips:
            terms["loss"] = terms["loss"] + self._speech_params_in_graph()
        if not torch.isfinite(terms["loss"]):
            return self._skip_nonfinite(batch)
        self.nonfinite_in_a_row = 0
        groups = self.optimizers().param_groups
        self.log("train/lr", groups[0]["lr"], prog_bar=True, batch_size=batch.size)
        if self._logger_writes():
            for group in groups:
                self.log(f"train/lr/{group.get('name', 'all')}", group["lr"], batch_size=batch.size)
        return terms["loss"]

    def _logger_writes(self) -> bool:
        """Whether this training step's logged values reach the logger (every `trainer.log_every_n_steps`).

        Each `self.log` costs Lightning about 0.5 ms of CPU time (measured on the 2-core machine), whether or not the
        step's values are written, so the per-source terms, the learning rate of each group and the data statistics
        are logged on the steps the logger writes only; the loss and the learning rate, which the progress bar shows,
        every step.
        """
        trainer = self._trainer
        return trainer is None or trainer._logger_connector.should_update_logs

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, str]]:
        """Loss on teacher-forced sets, then answers generated from the batch's prompt view, returned for
        `TestAnswers` to score against the references of every set."""
        if batch.num_target_tokens():
            self._step(batch, "test")
        return self._answers(batch.generation_view())

    def configure_callbacks(self) -> list[L.Callback]:
        """Every recipe scores its test answers the same way (`lit_sllm.callbacks.answers`)."""
        return [TestAnswers()]

    def _answers(self, prompts: Batch) -> list[dict[str, str]]:
        answers = self.model.generate(prompts, self.generation.max_new_tokens, self.generation.num_beams)
        return [
            {"key": key, "task": task, "answer": answer, "reference": reference}
            for key, task, answer, reference in zip(prompts.keys, prompts.tasks, answers, prompts.references)
        ]

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        return self._answers(batch.generation_view())

    def _speech_params_in_graph(self) -> Tensor:
        """Zero that depends on every trainable encoder/adapter weight.

        A text-only batch never reaches the speech side, so those weights would get no gradient on this rank while
        another rank's speech batch gives them one: DDP then waits forever for the missing reduction. Adding this
        zero keeps every rank's gradients in step at the cost of one tiny sum, whatever the strategy settings.
        """
        speech = [p for p in (*self.model.encoder.parameters(), *self.model.adapter.parameters()) if p.requires_grad]
        return sum((p.sum() * 0.0 for p in speech), torch.zeros((), device=self.device))

    def _skip_nonfinite(self, batch: Batch) -> None:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total), batch_size=batch.size)
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise RuntimeError(
                f"{self.nonfinite_in_a_row} training steps in a row had a non-finite loss (last batch: source "
                f"'{batch.source}', keys {batch.keys[:4]}). Lower the learning rate, check the data with "
                "`lit-sllm data inspect`, or use 32-bit precision; raise model.max_nonfinite_steps to tolerate more."
            )
        return None

    def _log_data_stats(self, batch: Batch) -> None:
        """Skipped samples by reason and augmentations by transform, counted since the last step the logger wrote
        (so no count is lost between written steps), and the batch's padding ratio."""
        self._data_counts.update({f"data/skipped/{k}": v for k, v in batch.extras.get("skipped", {}).items()})
        self._data_counts.update({f"data/augment/{k}": v for k, v in batch.extras.get("augment", {}).items()})
        if not self._logger_writes():
            return
        for key, count in self._data_counts.items():
            self.log(key, float(count), reduce_fx="sum", batch_size=batch.size)
        self._data_counts = Counter()
        if "padding_ratio" in batch.extras:
            self.log(f"data/{batch.source}/padding_ratio", float(batch.extras["padding_ratio"]), batch_size=batch.size)

    # --- optimisation ---------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model.named_parameters(), self.optim_spec, on_cuda=self.device.type == "cuda")
        total = self.schedule_spec.total_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, self.schedule_spec, self.optim_spec.lr, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_end(self) -> None:
        """Leaves the final state in `last.ckpt` when `max_steps` falls between validations (Lightning saves `last`
        only with the validation-time checkpoints)."""
        for callback in self.trainer.checkpoint_callbacks:
            saves_last = isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath
            if saves_last and callback._last_global_step_saved < self.trainer.global_step:
                last = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
                self.trainer.save_checkpoint(last, weights_only=False)
                rank_zero_info(f"Saved the final state (step {self.trainer.global_step}) to {last}")

    def on_fit_start(self) -> None:
        rank_zero_info("Parameters by component:\n" + format_parameter_table(parameter_counts(self.model)))
        datamodule = getattr(self.trainer, "datamodule", None)
        data_rate = getattr(datamodule, "sample_rate", self.model.sample_rate)
        if data_rate != self.model.sample_rate:
            raise ConfigError(
                f"data.sample_rate is {data_rate} Hz but the encoder expects {self.model.sample_rate} Hz; set "
                f"data.sample_rate: {self.model.sample_rate} (audio is resampled while streaming)."
            )

    # --- lean checkpoints -----------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keeps only trainable weights; works on the state dict the strategy gathered (DDP, FSDP full state)."""
        state = checkpoint.get("state_dict")
        if state is None:  # the strategy saves weights itself (DeepSpeed)
            return
        trainable = {unwrapped_name(k) for k in self.model.trainable_state_dict()}
        checkpoint["state_dict"] = {
            unwrapped_name(k): v for k, v in state.items() if unwrapped_name(k).removeprefix("model.") in trainable
        }

    def load_state_dict(self, state_dict: dict[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        """Loads a lean checkpoint: the trainable weights it holds, the frozen ones kept as read from their pretrained
        paths when the module was built, reported in one line instead of as missing keys."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        trainable = {f"model.{name}" for name in self.model.trainable_state_dict()}
        missing = [key for key in result.missing_keys if key in trainable or not key.startswith("model.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"Checkpoint does not fit {type(self).__name__}: missing trainable keys {missing[:3]}, unexpected keys "
                f"{result.unexpected_keys[:3]}. Check that the config matches the one the checkpoint was trained with."
            )
        kept = Counter(component_of(key.removeprefix("model.")) for key in result.missing_keys if key not in missing)
        if kept:
            counts = ", ".join(f"{component} ({count} tensors)" for component, count in sorted(kept.items()))
            rank_zero_info(f"Loaded {len(state_dict)} trainable tensors; frozen {counts} kept from pretrained paths.")
        result.missing_keys.clear()
        result.missing_keys.extend(missing)
        return result

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checks the checkpoint fits this model before Lightning loads it (non-strict, frozen weights stay)."""
        if "state_dict" not in checkpoint:
            return
        state = {unwrapped_name(k).removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        checkpoint["state_dict"] = {f"model.{k}": v for k, v in state.items()}
        self.model.check_trainable_state_dict(state)


_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def unwrapped_name(name: str) -> str:
    """A parameter name without the segments FSDP, activation checkpointing and torch.compile insert."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name
