"""Model FLOPs of one speech-LLM training step, for MFU.

PaLM-style accounting (Chowdhery et al. 2022, appendix B): a matmul weight costs 2 FLOPs per token forward and
4 backward (input and weight gradients), so 6 per token when it trains; a frozen weight skips its weight gradient, 4
per token. Attention adds 12 x layers x width x T per token of a length-T sequence (forward plus backward, no causal
discount). Only real positions count, never padding: MFU here is useful work over peak. Approximations: every
encoder weight is charged at the encoder's frame rate (Whisper's first convolution runs at twice that rate, about
0.2 % of a Whisper-small encoder's weights), and the log-mel front end, norms and softmaxes are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_sllm.data.batch import Batch
from lit_sllm.models.speech_llm import SpeechLLM


@dataclass
class MatmulWeights:
    """Weights of linear and convolution layers (embeddings excluded), split by whether they train."""

    trained: int = 0
    frozen: int = 0

    def flops_per_position(self) -> int:
        return 6 * self.trained + 4 * self.frozen


def matmul_weights(module: nn.Module) -> MatmulWeights:
    """Counts the weights of every `nn.Linear` and `nn.Conv1d` in `module` (LoRA's small linears included)."""
    counts = MatmulWeights()
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv1d):
            if layer.weight.requires_grad:
                counts.trained += layer.weight.numel()
            else:
                counts.frozen += layer.weight.numel()
    return counts


def attention_flops(lengths: Tensor, layers: int, width: int) -> int:
    """Forward + backward attention FLOPs of sequences of the given (N,) lengths: 12 * layers * width * sum(T^2)."""
    return 12 * layers * width * int((lengths.long() ** 2).sum())


@dataclass
class StepShape:
    """Real positions of one batch at each stage: (N,) encoder frames and adapter frames per clip, (B,) LLM tokens
    (text plus the adapter frames each row's placeholders splice in: its clips' spans)."""

    encoder_frames: Tensor
    adapter_frames: Tensor
    llm_tokens: Tensor


@torch.no_grad()
def step_shape(model: SpeechLLM, batch: Batch) -> StepShape:
    """Measures the batch's real positions by running the encoder, adapter and splice (no gradients)."""
    frames, encoder_lengths = model.encoder(batch.audio, batch.audio_lengths)  # (N, T, D)
    _, adapter_lengths = model.adapter(frames, encoder_lengths)
    ranges = model.span_ranges(batch, frames, encoder_lengths, adapter_lengths)  # (P, 3)
    placeholders = ((batch.input_ids == model.audio_token_id) & batch.attention_mask.bool()).sum(dim=1)  # (B,)
    text = batch.attention_mask.sum(dim=1) - placeholders  # (B,)
    span_row = torch.repeat_interleave(torch.arange(batch.size, device=placeholders.device), placeholders)
    audio = torch.zeros_like(text).index_add_(0, span_row, (ranges[:, 2] - ranges[:, 1]).long())  # (B,)
    return StepShape(encoder_lengths.long(), adapter_lengths.long(), text + audio)


def step_flops(model: SpeechLLM, shape: StepShape) -> int:
    """Model FLOPs of one training step (forward + backward) of `model` on a batch of the given shape."""
    llm_config = model.llm.config
    encoder = model.encoder.model.config
    llm_layers, llm_width = llm_config.num_hidden_layers, llm_config.hidden_size
    return (
        matmul_weights(model.encoder).flops_per_position() * int(shape.encoder_frames.sum())
        + attention_flops(shape.encoder_frames, encoder.encoder_layers, encoder.d_model)
        + matmul_weights(model.adapter).flops_per_position() * int(shape.adapter_frames.sum())
        + matmul_weights(model.llm).flops_per_position() * int(shape.llm_tokens.sum())
        + attention_flops(shape.llm_tokens, llm_layers, llm_width)
    )
