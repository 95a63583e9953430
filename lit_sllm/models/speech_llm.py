"""`SpeechLLM`: speech encoder -> adapter -> spliced into the LLM's input embeddings -> causal LM (+ LoRA).

One model serves both recipes; they differ in data and loss, not in forward code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentParser
from torch import Tensor, nn

from lit_sllm.data.batch import Batch
from lit_sllm.data.prompts import DEFAULT_AUDIO_TOKEN, ChatFormatter, ensure_audio_token
from lit_sllm.models import export
from lit_sllm.models.adapters import AdapterFactory, FrameStackMLP
from lit_sllm.models.config import component_config
from lit_sllm.models.encoders import SpeechEncoder
from lit_sllm.models.frame_spans import frame_ranges, whole_clip
from lit_sllm.models.freezing import Trainable, apply_trainable
from lit_sllm.models.llm import LLMSpec, LoraSpec, add_lora, load_llm, load_tokenizer
from lit_sllm.models.lm_head import decoder_hidden_states, output_logits
from lit_sllm.models.spec_augment import SpecAugment
from lit_sllm.models.splice import Spliced, splice_audio


class SpeechLLM(nn.Module):
    """A speech LLM built from any HF causal LM and speech encoder.

    Args:
        llm: the causal LM (and its tokenizer) to load.
        encoder: the speech encoder module.
        adapter: builds the adapter from (encoder width, LLM hidden size); defaults to `FrameStackMLP`.
        lora: LoRA on the LLM; None for none.
        trainable: which components train.
        audio_token: placeholder string for one clip in the chat template.
        match_embedding_rms: scale every adapter output vector to the RMS of the LLM's input-embedding table, so a
            frozen LLM reads audio at the scale of its token embeddings (an unconstrained adapter's output can grow
            to hundreds of times that scale).
    """

    def __init__(
        self,
        llm: LLMSpec,
        encoder: SpeechEncoder,
        adapter: AdapterFactory = FrameStackMLP,
        lora: LoraSpec | None = None,
        trainable: Trainable | None = None,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        match_embedding_rms: bool = False,
    ) -> None:
        super().__init__()
        self.llm_spec, self.lora_spec = llm, lora
        self.match_embedding_rms = match_embedding_rms
        self._embedding_rms: Tensor | None = None
        self.tokenizer = load_tokenizer(llm)
        self.audio_token = audio_token
        self.audio_token_id = ensure_audio_token(self.tokenizer, audio_token)
        # the chat template and its kwargs are checked here, so one that cannot be trained on fails at start
        self.formatter = ChatFormatter(self.tokenizer, audio_token, chat_template_kwargs=llm.chat_template_kwargs)
        base = load_llm(llm)
        self.hidden_size = base.get_input_embeddings().embedding_dim
        self.llm = add_lora(base, lora) if lora is not None else base
        self.encoder = encoder
        self.adapter = adapter(encoder.output_dim, self.hidden_size)
        self.trainable = trainable or Trainable(lora=lora is not None)
        apply_trainable(self, self.trainable)

    def config(self) -> dict[str, Any]:
        """Everything needed to build this model again (weights aside), as plain data."""
        return {
            "llm": dataclasses.asdict(self.llm_spec),
            "encoder": component_config(self.encoder),
            "adapter": component_config(self.adapter),
            "lora": dataclasses.asdict(self.lora_spec) if self.lora_spec else None,
            "trainable": dataclasses.asdict(self.trainable),
            "audio_token": self.audio_token,
            "match_embedding_rms": self.match_embedding_rms,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SpeechLLM:
        """Builds a model from `config()` output (components by class_path), loading pretrained parts by path."""
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, "model")
        return parser.instantiate_classes(parser.parse_object({"model": config})).model

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SpeechLLM:
        """Rebuilds a model from a folder written by `save_pretrained` or `lit-sllm export`; the LLM base comes from
        its own path, as PEFT expects."""
        folder = Path(folder)
        config = export.read_config(folder)
        lora = config.pop("lora")
        model = cls.from_config({**config, "lora": None})
        if lora is not None:
            model.llm = export.load_lora(folder, model.llm)
            model.lora_spec = LoraSpec(**lora)
            apply_trainable(model, model.trainable)
        export.load_speech_weights(folder, model)
        return model

    def save_pretrained(self, folder: str | Path, merge_lora: bool = False) -> Path:
        """Writes an export folder (layout in `lit_sllm.models.export`) that `from_pretrained` and plain
        transformers + peft can read, and returns it; with `merge_lora` the LoRA is folded into a copy of the LLM."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config()
        config["encoder"]["init_args"] = self.encoder.portable_init_args(folder / export.ENCODER_FOLDER)
        config["llm"].update(export.save_tokenizer(folder, self.tokenizer, self.formatter.template))
        if self.has_lora and merge_lora:
            config["llm"].update(export.save_merged_llm(folder, self.llm, self.tokenizer))
            config["lora"] = None
            config["trainable"]["lora"] = False
        elif self.has_lora:
            export.save_lora(folder, self.llm)
        export.save_speech_weights(folder, self.encoder, self.adapter)
        export.write_config(folder, config)
        return folder

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    @property
    def has_lora(self) -> bool:
        return hasattr(self.llm, "disable_adapter")

    @contextlib.contextmanager
    def without_lora(self) -> Iterator[None]:
        """The LLM as it was before training: LoRA disabled. A fully fine-tuned LLM has no such view (warned)."""
        if self.has_lora:
            with self.llm.disable_adapter():
                yield
            return
        if self.trainable.llm:
            warnings.warn(
                "The LLM's own weights train and there is no LoRA to disable: its base view is the current one.",
                stacklevel=3,
            )
        yield

    def train(self, mode: bool = True) -> SpeechLLM:
        """Frozen components stay in eval mode (no dropout, fixed norm statistics) while the rest trains; SpecAugment
        follows the model's mode even inside a frozen encoder, so what trains after it sees masked features."""
        super().train(mode)
        if not self.trainable.encoder:
            self.encoder.eval()
            for module in self.encoder.modules():
                if isinstance(module, SpecAugment):
                    module.train(mode)
        if not (self.trainable.llm or (self.trainable.lora and self.has_lora)):
            self.llm.eval()
        return self

    def embed_audio(self, audio: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, S) waveforms -> (N, T, H) LLM-width frames and (N,) valid frame counts."""
        frames, lengths = self.encoder(audio, audio_lengths)  # (N, T_enc, D_enc)
        return self.adapt(frames, lengths)

    def adapt(self, frames: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, T_enc, D_enc) encoder frames -> (N, T, H) LLM-width frames and (N,) valid frame counts."""
        audio_embeds, lengths = self.adapter(frames, lengths)  # (N, T, H)
        if self.match_embedding_rms:
            rms = audio_embeds.float().pow(2).mean(dim=-1, keepdim=True).add(1e-12).sqrt()  # (N, T, 1)
            audio_embeds = audio_embeds * (self.embedding_rms() / rms).to(audio_embeds.dtype)
        return audio_embeds, lengths

    def embed_spans(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Encodes each clip of `batch` once: (N, T, H) frames, (N,) valid frame counts and the (P, 3) (clip, first,
        end) output frames of every placeholder (`span_ranges`)."""
        frames, encoder_lengths = self.encoder(batch.audio, batch.audio_lengths)  # (N, T_enc, D_enc)
        audio_embeds, lengths = self.adapt(frames, encoder_lengths)  # (N, T, H)
        return audio_embeds, lengths, self.span_ranges(batch, frames, encoder_lengths, lengths)

    def span_ranges(self, batch: Batch, frames: Tensor, encoder_lengths: Tensor, lengths: Tensor) -> Tensor:
        """(P, 3) (clip, first, end) adapter output frames of every placeholder of `batch`, its span's seconds
        mapped through the encoder's and the adapter's strides (`lit_sllm.models.frame_spans`).

        Args:
            batch: the batch (its `placeholder_spans()`, `audio_lengths`).
            frames: (N, T_enc, D_enc) encoder output of its clips.
            encoder_lengths: (N,) valid encoder frames.
            lengths: (N,) valid adapter frames.
        """
        span_clips, span_times = batch.placeholder_spans()
        frame_map = None
        if not bool(whole_clip(span_times).all()) and hasattr(self.adapter, "frame_map"):
            frame_map = self.adapter.frame_map(frames, encoder_lengths)  # (N, T_enc + 1)
        return frame_ranges(
            span_clips, span_times, batch.audio_lengths, lengths, self.sample_rate, self.encoder.frames_at, frame_map
        )

    def embedding_rms(self) -> Tensor:
        """RMS of the LLM's input-embedding table (cached while the table is frozen)."""
        weight = self.llm.get_input_embeddings().weight
        if self._embedding_rms is None or weight.requires_grad:
            with torch.no_grad():
                self._embedding_rms = weight.float().pow(2).mean().sqrt()
        return self._embedding_rms.to(weight.device)

    def prepare_inputs(self, batch: Batch, padding_side: str = "right") -> Spliced:
        """Embeds tokens and audio (each clip encoded once) and splices them into one sequence per row."""
        embedding = self.llm.get_input_embeddings()
        safe_ids = batch.input_ids.masked_fill(batch.input_ids == self.audio_token_id, 0)
        token_embeds = embedding(safe_ids)  # (B, L, H)
        if batch.num_clips:
            audio_embeds, audio_lengths, ranges = self.embed_spans(batch)  # (N, T, H), (N,), (P, 3)
        else:
            audio_embeds = token_embeds.new_zeros(0, 0, token_embeds.shape[-1])
            audio_lengths, ranges = batch.audio_lengths, batch.audio_lengths.new_zeros(0, 3)
        return splice_audio(
            token_embeds,
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            audio_embeds.to(token_embeds.dtype),
            audio_lengths,
            self.audio_token_id,
            padding_side,
            frame_ranges=ranges,
        )

    def forward(self, inputs: Spliced) -> Tensor:
        """Spliced inputs -> (B, L', V) logits at every position (the loss needs only `hidden_states`)."""
        return self.lm_head(self.hidden_states(inputs.inputs_embeds, inputs.attention_mask))

    def hidden_states(self, inputs_embeds: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L, H) input embeddings and (B, L) mask -> (B, L, H) the LLM's final hidden states, LoRA included."""
        return decoder_hidden_states(self.llm, inputs_embeds, attention_mask)

    def lm_head(self, hidden: Tensor) -> Tensor:
        """The LLM's output head: (..., H) final hidden states -> (..., V) logits."""
        return output_logits(self.llm, hidden)

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 64, num_beams: int = 1, **kwargs) -> list[str]:
        """Answers each prompt in `batch` (prompt-only rows, as made for generation); greedy unless told otherwise."""
        inputs = self.prepare_inputs(batch, padding_side="left")
        output = self.llm.generate(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            **kwargs,
        )
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Trainable parameters and the buffers of modules that own one: all a checkpoint needs beside the config."""
        state = {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}
        for module_name, module in self.named_modules():
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                prefix = f"{module_name}." if module_name else ""
                state.update({prefix + n: b.detach() for n, b in module.named_buffers(recurse=False)})
        return state

    def check_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Every trainable parameter must be in `state` and nothing foreign; raises a KeyError saying what differs."""
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        missing = sorted(n for n, p in self.named_parameters() if p.requires_grad and n not in state)
        if unexpected or missing:
            raise KeyError(
                f"Checkpoint does not fit this model: {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}), "
                f"{len(missing)} missing trainable keys (e.g. {missing[:3]}). Check that the config (adapter, "
                "LoRA, trainable components) matches the one the checkpoint was trained with."
            )

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Loads a `trainable_state_dict` after `check_trainable_state_dict`."""
        self.check_trainable_state_dict(state)
        self.load_state_dict(state, strict=False)
