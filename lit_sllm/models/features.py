"""Feature extraction in torch on padded batches, so it runs on the accelerator next to the encoder."""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(N,) lengths -> (N, T) bool mask, True on valid positions."""
    max_len = int(lengths.max()) if max_len is None and lengths.numel() else (max_len or 0)
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def reflect_tails(audio: Tensor, lengths: Tensor, width: int) -> Tensor:
    """Mirrors each clip's last samples into the `width` samples after it, as centred STFT framing of the clip alone
    would, so a clip's features do not depend on what else is in its batch. (N, S) -> (N, S + width)."""
    padded = nn.functional.pad(audio, (0, width))
    index = torch.arange(padded.shape[1], device=audio.device)[None, :]  # (1, S + width)
    last = (lengths[:, None] - 1).clamp(min=0)
    source = torch.where(index <= last, index, (2 * last - index).clamp(min=0))
    return padded.gather(1, source.expand(audio.shape[0], -1))


class LogMelFeatures(nn.Module):
    """Log-mel filterbank features on a padded batch.

    Args:
        n_mels: mel bins.
        sample_rate: input rate in Hz.
        n_fft: FFT size (400 = 25 ms at 16 kHz).
        hop_length: hop in samples (160 = 10 ms at 16 kHz).
        whisper_scaling: Whisper's log10, 8-decade dynamic-range clamp and (x + 4) / 4 scaling, taken per clip over
            its valid frames only; otherwise natural log with per-clip mean/variance normalisation.
    """

    def __init__(
        self,
        n_mels: int = 80,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        whisper_scaling: bool = False,
    ) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.whisper_scaling = whisper_scaling
        # filterbanks are computed, not learned: build them on the CPU even inside a meta-device context
        with torch.device("cpu"):
            self.mel = self._mel_spectrogram(sample_rate, n_fft, hop_length, n_mels)

    @staticmethod
    def _mel_spectrogram(sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> nn.Module:
        return torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
        )

    def output_lengths(self, audio_lengths: Tensor) -> Tensor:
        return audio_lengths // self.hop_length

    def _apply(self, fn, recurse: bool = True):
        """Filterbank and window stay float32 when the model is cast to bf16/fp16 (FSDP, DeepSpeed, `.half()`)."""
        super()._apply(fn, recurse)
        for module in self.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.is_floating_point():
                    module._buffers[name] = buffer.float()
        return self

    def forward(self, audio: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, S) waveforms -> (N, n_mels, T) features and (N,) frame counts."""
        lengths = self.output_lengths(audio_lengths)
        with torch.autocast(audio.device.type, enabled=False):
            audio = reflect_tails(audio.float(), audio_lengths, self.n_fft // 2)
            power = self.mel(audio)[..., : int(lengths.max())]  # (N, M, T)
        mask = lengths_to_mask(lengths, power.shape[-1])[:, None, :]  # (N, 1, T)
        if self.whisper_scaling:
            log_spec = power.clamp(min=1e-10).log10()
            peak = log_spec.masked_fill(~mask, float("-inf")).amax(dim=(1, 2), keepdim=True)
            features = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
        else:
            log_spec = (power + 1e-6).log()
            count = (mask.sum(dim=(1, 2), keepdim=True) * log_spec.shape[1]).clamp(min=1)
            mean = (log_spec * mask).sum(dim=(1, 2), keepdim=True) / count
            var = (((log_spec - mean) * mask) ** 2).sum(dim=(1, 2), keepdim=True) / count
            features = (log_spec - mean) / (var.sqrt() + 1e-5)
        return features.masked_fill(~mask, 0.0), lengths


def normalize_waveform(audio: Tensor, audio_lengths: Tensor) -> Tensor:
    """Zero mean, unit variance per clip over its valid samples (the wav2vec2 family's input convention)."""
    mask = lengths_to_mask(audio_lengths, audio.shape[-1])
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (audio * mask).sum(dim=1, keepdim=True) / count
    var = (((audio - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return ((audio - mean) / (var + 1e-7).sqrt()).masked_fill(~mask, 0.0)
