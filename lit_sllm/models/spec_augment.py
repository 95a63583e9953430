"""SpecAugment (Park et al., 2019): frequency and time masks on a padded batch of log-mel features, in training mode
only, on whatever device the features are on.

torchaudio's `FrequencyMasking`/`TimeMasking` draw time masks over the padded length of the batch, so a short clip
among long ones gets its masks in its padding, and their widths are absolute frames. These masks are drawn per clip
inside its valid frames, with widths relative to its length (the "adaptive" policy of Park et al., 2020), which is why
they are written here rather than taken from torchaudio.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_sllm.models.config import init_args_of


def _bands(starts: Tensor, widths: Tensor, size: int) -> Tensor:
    """(N, K) starts and widths of K bands -> (N, size) bool, True inside any band."""
    positions = torch.arange(size, device=starts.device)  # (size,)
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])  # (N, K, size)
    return inside.any(dim=1)


class SpecAugment(nn.Module):
    """Masks frequency bands and time spans of each clip's features while the model trains; a no-op in eval mode.

    Set it on an encoder with log-mel features (`HFSpeechEncoder` on Whisper, `ConformerEncoder`) as
    `encoder.init_args.spec_augment`. It follows the model's training mode even inside a frozen encoder, so the
    trained parts after it see masked features.

    Args:
        freq_masks: frequency masks per clip.
        freq_width: widest frequency mask in mel bins (each width is drawn uniformly from 0..freq_width).
        time_masks: time masks per clip.
        time_width: widest time mask as a fraction of the clip's valid frames.
        max_time_width: widest time mask in frames, whatever the clip's length (null: no cap).
        mask_value: what masked positions are set to (0 is the mean of normalised features).
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int = 10,
        time_width: float = 0.05,
        max_time_width: int | None = 40,
        mask_value: float = 0.0,
    ) -> None:
        self_args = init_args_of(locals())
        super().__init__()
        self.init_args = self_args
        if min(freq_masks, freq_width, time_masks) < 0 or not 0 <= time_width <= 1:
            raise ValueError(
                "spec_augment: freq_masks, freq_width and time_masks must be >= 0 and time_width in [0, 1], got "
                f"{freq_masks}, {freq_width}, {time_masks}, {time_width}."
            )
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width, self.max_time_width = time_masks, time_width, max_time_width
        self.mask_value = mask_value

    def masks(self, lengths: Tensor, n_mels: int, frames: int) -> Tensor:
        """(N,) valid frames -> (N, n_mels, frames) bool, True where features are masked."""
        n, device = lengths.shape[0], lengths.device
        widths = (torch.rand(n, self.freq_masks, device=device) * (min(self.freq_width, n_mels) + 1)).floor()
        starts = (torch.rand(n, self.freq_masks, device=device) * (n_mels - widths + 1)).floor()
        freq = _bands(starts, widths, n_mels)  # (N, M)
        limit = (self.time_width * lengths.float()).floor()  # (N,)
        if self.max_time_width is not None:
            limit = limit.clamp(max=self.max_time_width)
        widths = (torch.rand(n, self.time_masks, device=device) * (limit[:, None] + 1)).floor()
        starts = (torch.rand(n, self.time_masks, device=device) * (lengths[:, None] - widths + 1).clamp(min=1)).floor()
        time = _bands(starts, widths, frames)  # (N, T)
        return freq[:, :, None] | time[:, None, :]

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        """(N, M, T) features and (N,) valid frames -> the features with masks applied (unchanged in eval mode)."""
        if not self.training:
            return features
        return features.masked_fill(self.masks(lengths, features.shape[1], features.shape[2]), self.mask_value)
