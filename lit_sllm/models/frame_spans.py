"""Frame-level interleaving: which adapter output frames of an encoded clip each placeholder's seconds cover.

Time maps to frames in two monotone steps: seconds -> encoder frames through the encoder's strides
(`SpeechEncoder.frames_at`), then encoder frames -> adapter frames through the adapter's `frame_map` (floor division
for stride adapters, CTC segments for `CTCCompressionAdapter`). Adjacent spans share their cut time, so they share
the boundary frame: the spans of one clip partition its output frames.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lit_sllm.config_errors import ConfigError


def whole_clip(span_times: Tensor) -> Tensor:
    """(P, 2) start/end seconds -> (P,) True where the span is its whole clip (0 to inf)."""
    return (span_times[:, 0] <= 0) & torch.isinf(span_times[:, 1])


def frame_ranges(
    span_clips: Tensor,
    span_times: Tensor,
    audio_lengths: Tensor,
    out_lengths: Tensor,
    sample_rate: int,
    frames_at: Callable[[Tensor], Tensor],
    frame_map: Tensor | None,
) -> Tensor:
    """(clip, first frame, end frame) of adapter output for every placeholder.

    Args:
        span_clips: (P,) clip of each placeholder.
        span_times: (P, 2) start and end seconds of each placeholder's span (0 and inf: the whole clip).
        audio_lengths: (N,) valid samples per clip.
        out_lengths: (N,) valid adapter frames per clip.
        sample_rate: rate of the waveforms.
        frames_at: the encoder's map from samples to encoder frames (elementwise, monotone).
        frame_map: (N, T + 1) the adapter's map from encoder frames to output frames; None when the adapter has
            none (then every span must be a whole clip).

    Returns:
        (P, 3) long.
    """
    clips = span_clips.long()
    first, end = torch.zeros_like(clips), out_lengths.long()[clips]  # (P,), (P,)
    whole = whole_clip(span_times)
    if not bool(whole.all()):
        if frame_map is None:
            raise ConfigError(
                "model.init_args.adapter: this adapter has no `frame_map(frames, lengths)`, so its output cannot be "
                "cut at word times; use FrameStackMLP, ConformerAdapter or CTCCompressionAdapter (or define "
                "frame_map on it), or set the transform's interleave_level: clips."
            )
        valid = audio_lengths.to(span_times.dtype)[clips, None]  # (P, 1)
        samples = torch.minimum((span_times * sample_rate).round(), valid).clamp(min=0).long()  # (P, 2)
        encoder_frames = frames_at(samples).clamp(max=frame_map.shape[1] - 1)  # (P, 2)
        cut = frame_map.long()[clips[:, None], encoder_frames]  # (P, 2)
        first = torch.where(whole, first, cut[:, 0])
        end = torch.where(whole, end, cut[:, 1])
    return torch.stack([clips, first, end], dim=1)
