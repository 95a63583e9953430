"""Modality adapters: encoder frames (width D_enc) -> LLM-width embeddings at a lower frame rate.

Every adapter takes `(input_dim, output_dim)` as its first two arguments, so a YAML names it by `class_path` with
the remaining arguments in `init_args` and the model supplies the two widths (encoder and LLM) when it builds it.

Frame-level interleaving cuts an encoded clip's adapter output at word times, so an adapter that supports it has
`frame_map(frames, lengths) -> (N, T + 1)`: how many output frames the first e encoder frames of each clip make up,
for e = 0..T (monotone in e, the clip's output length from its last encoder frame on). Stride adapters floor-divide;
`CTCCompressionAdapter` counts the CTC segments begun before e.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_sllm.models.config import init_args_of
from lit_sllm.models.features import lengths_to_mask

AdapterFactory = Callable[[int, int], nn.Module]


def stack_frames(frames: Tensor, lengths: Tensor, stack: int) -> tuple[Tensor, Tensor]:
    """Concatenates every `stack` consecutive frames: (N, T, D) -> (N, ceil(T / k), k * D).

    Frames past each clip's length are zeroed first, so the last stacked frame of a clip is the same whatever else
    is in the batch.
    """
    frames = frames * lengths_to_mask(lengths, frames.shape[1])[..., None].to(frames.dtype)
    n, t, d = frames.shape
    pad = (-t) % stack
    if pad:
        frames = nn.functional.pad(frames, (0, 0, 0, pad))
    return frames.reshape(n, (t + pad) // stack, stack * d), (lengths + stack - 1) // stack


def stride_frame_map(lengths: Tensor, out_lengths: Tensor, width: int, stride: int) -> Tensor:
    """`frame_map` of an adapter that makes one output frame of every `stride` encoder frames: (N,) -> (N, T + 1).

    A cut at encoder frame e falls after output frame e // stride (a stacked frame straddling the cut goes to the
    span after it); from the clip's last encoder frame on, the map is its output length.
    """
    index = torch.arange(width + 1, device=lengths.device)[None, :]  # (1, T + 1)
    return torch.where(index < lengths[:, None], index // stride, out_lengths[:, None])


class SwiGLU(nn.Module):
    """Gated linear unit with SiLU gate (as in Ultravox's projector)."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, 2 * hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * nn.functional.silu(gate)


class FrameStackMLP(nn.Module):
    """Frame stacking then a 2-layer MLP (Ultravox / SLAM-LLM style projector).

    Args:
        input_dim: encoder width (supplied by the model).
        output_dim: LLM hidden size (supplied by the model).
        stack: frames concatenated into one (the frame-rate reduction).
        hidden_dim: MLP width; defaults to `output_dim`.
        activation: "swiglu" or "gelu".
        norm: LayerNorm on the stacked input (keeps the scale steady when the encoder is frozen).
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        stack: int = 4,
        hidden_dim: int | None = None,
        activation: str = "swiglu",
        norm: bool = True,
    ) -> None:
        self_args = init_args_of(locals())
        super().__init__()
        self.init_args = self_args
        hidden_dim = hidden_dim or output_dim
        self.stack = stack
        self.norm = nn.LayerNorm(stack * input_dim) if norm else nn.Identity()
        activations: dict[str, Callable[[], nn.Module]] = {
            "swiglu": lambda: SwiGLU(stack * input_dim, hidden_dim),
            "gelu": lambda: nn.Sequential(nn.Linear(stack * input_dim, hidden_dim), nn.GELU()),
        }
        if activation not in activations:
            raise ValueError(f"adapter activation '{activation}' is unknown; use one of {sorted(activations)}.")
        self.up = activations[activation]()
        self.down = nn.Linear(hidden_dim, output_dim)

    def forward(self, frames: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, T, D_enc) -> (N, ceil(T / stack), D_llm), (N,)."""
        stacked, lengths = stack_frames(frames, lengths, self.stack)
        return self.down(self.up(self.norm(stacked))), lengths

    def frame_map(self, frames: Tensor, lengths: Tensor) -> Tensor:
        """(N, T, D_enc), (N,) -> (N, T + 1) output frames of the first e encoder frames (module docstring)."""
        return stride_frame_map(lengths, (lengths + self.stack - 1) // self.stack, frames.shape[1], self.stack)


class ConformerAdapter(nn.Module):
    """Downsampling then N Conformer layers (VoiceTextBlender's modality adapter).

    Args:
        input_dim: encoder width (supplied by the model).
        output_dim: LLM hidden size (supplied by the model).
        num_layers: Conformer layers (VoiceTextBlender: 2).
        d_model: Conformer width (VoiceTextBlender: 1024).
        num_heads: attention heads.
        ffn_dim: feed-forward width; defaults to 4 * d_model.
        kernel_size: depthwise convolution kernel.
        downsample: frames stacked before the Conformer (frame-rate reduction).
        dropout: dropout inside the Conformer.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_layers: int = 2,
        d_model: int = 1024,
        num_heads: int = 8,
        ffn_dim: int | None = None,
        kernel_size: int = 31,
        downsample: int = 2,
        dropout: float = 0.1,
    ) -> None:
        self_args = init_args_of(locals())
        super().__init__()
        self.init_args = self_args
        from torchaudio.models import Conformer

        self.downsample = downsample
        self.input_proj = nn.Linear(downsample * input_dim, d_model)
        self.conformer = Conformer(d_model, num_heads, ffn_dim or 4 * d_model, num_layers, kernel_size, dropout=dropout)
        self.output_proj = nn.Linear(d_model, output_dim)

    def forward(self, frames: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, T, D_enc) -> (N, ceil(T / downsample), D_llm), (N,)."""
        stacked, lengths = stack_frames(frames, lengths, self.downsample)
        lengths = lengths.clamp(min=1)
        # torchaudio's Conformer sizes its padding mask from the longest clip.
        hidden, lengths = self.conformer(self.input_proj(stacked[:, : int(lengths.max())]), lengths)
        hidden = hidden.masked_fill(~lengths_to_mask(lengths, hidden.shape[1])[..., None], 0.0)
        return self.output_proj(hidden), lengths

    def frame_map(self, frames: Tensor, lengths: Tensor) -> Tensor:
        """(N, T, D_enc), (N,) -> (N, T + 1) output frames of the first e encoder frames (module docstring)."""
        out_lengths = ((lengths + self.downsample - 1) // self.downsample).clamp(min=1)
        return stride_frame_map(lengths, out_lengths, frames.shape[1], self.downsample)
