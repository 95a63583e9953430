"""Audio in and out of the shards: soundfile reading/writing, mono downmix, resampling, FLAC bytes.

torchaudio's load/save need torchcodec, which the suite does not depend on, so every byte of audio goes through
soundfile; torchaudio is used only for its resampling kernel.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor


def read_audio(source: str | Path | bytes) -> tuple[Tensor, int]:
    """Reads any soundfile-readable audio (path or encoded bytes) as a mono float32 waveform.

    Args:
        source: a file path, or the encoded bytes of a file (e.g. a tar member).

    Returns:
        (waveform (S,) float32 in [-1, 1], sample rate). Multi-channel audio is averaged over channels.
    """
    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source)
    data, sample_rate = sf.read(handle, dtype="float32", always_2d=True)  # (S, C)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (S,)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), int(sample_rate)


def decode_audio(data: bytes) -> tuple[Tensor, int]:
    """Decodes the bytes of an audio tar member (flac, wav, ...) into (mono waveform (S,), sample rate)."""
    return read_audio(data)


def resample(wave: Tensor, from_sr: int, to_sr: int) -> Tensor:
    """Resamples a waveform (..., S) from `from_sr` to `to_sr` Hz; returns it unchanged when the rates match."""
    if from_sr == to_sr:
        return wave
    return AF.resample(wave, orig_freq=from_sr, new_freq=to_sr)


def encode_flac(wave: Tensor, sample_rate: int) -> bytes:
    """Encodes a mono waveform (S,) as 16-bit FLAC bytes; samples outside [-1, 1] are clipped, not wrapped."""
    if wave.dim() != 1:
        raise ValueError(f"encode_flac expects a mono waveform of shape (S,), got {tuple(wave.shape)}; downmix first.")
    samples = wave.detach().to(torch.float32).clamp(-1.0, 1.0).cpu().numpy()
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def audio_seconds(data: bytes) -> float:
    """Length in seconds of encoded audio bytes, read from the header without decoding the samples."""
    return float(sf.info(io.BytesIO(data)).duration)
