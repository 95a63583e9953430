"""Offline speech synthesis with the espeak-ng binary: whole texts, or word by word with exact word times.

No TTS model can be downloaded, yet the toy world and mixed-modal dialogue data need speech; espeak-ng is small,
deterministic and installable with apt. Word-by-word synthesis gives exact word boundaries, which MTBI
interleaving needs and a forced aligner would otherwise have to estimate.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Protocol

import torch
from torch import Tensor

from lit_sllm.data.audio import read_audio, resample

Word = tuple[str, float, float]


class TTS(Protocol):
    """What the converters need from a speech synthesiser."""

    sample_rate: int

    def synthesize(self, text: str) -> Tensor:
        """Speech for `text` as a mono float32 waveform (S,) at `sample_rate`."""
        ...


def trim_silence(wave: Tensor, threshold: float) -> Tensor:
    """Drops leading and trailing samples quieter than `threshold` x the clip's peak; (S,) -> (S',).

    Returns an empty waveform when the clip is silent throughout (e.g. a word that is only punctuation).
    """
    peak = float(wave.abs().max()) if wave.numel() else 0.0
    if peak == 0.0:
        return wave[:0]
    loud = (wave.abs() > threshold * peak).nonzero().squeeze(1)  # (K,), never empty: the peak itself is loud
    return wave[int(loud[0]) : int(loud[-1]) + 1]


class EspeakTTS:
    """Speech from the `espeak-ng` command-line synthesiser.

    Args:
        voice: espeak-ng voice name (`espeak-ng --voices` lists them), e.g. "en-us", "en-gb", "de".
        rate: speaking rate in words per minute.
        pitch: pitch, 0-99.
        sample_rate: rate of the returned waveforms; espeak-ng's own output (22.05 kHz) is resampled to it.
        silence_threshold: in `synthesize_words`, samples below this fraction of a word's peak are trimmed
            from its ends.
    """

    def __init__(
        self,
        voice: str = "en-us",
        rate: int = 160,
        pitch: int = 50,
        sample_rate: int = 16000,
        silence_threshold: float = 0.02,
    ) -> None:
        self.binary = shutil.which("espeak-ng")
        if self.binary is None:
            raise RuntimeError(
                "espeak-ng is not installed or not on PATH: install it with `apt-get install espeak-ng`."
            )
        self.voice, self.rate, self.pitch = voice, rate, pitch
        self.sample_rate = sample_rate
        self.silence_threshold = silence_threshold

    def synthesize(self, text: str) -> Tensor:
        """Speech for `text` as a mono float32 waveform (S,) at `sample_rate`, with espeak-ng's own end silences."""
        command = [self.binary, "-v", self.voice, "-s", str(self.rate), "-p", str(self.pitch), "-b", "1", "--stdout"]
        # Text goes through stdin so that a text starting with "-" is never read as an option.
        result = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False)
        if result.returncode != 0 or not result.stdout:
            message = result.stderr.decode("utf-8", "replace").strip().rstrip(".")
            raise RuntimeError(
                f"espeak-ng failed for voice {self.voice!r} on text {text[:60]!r}: {message or 'no audio produced'}. "
                "Check the voice name with `espeak-ng --voices`."
            )
        wave, rate = read_audio(result.stdout)
        return resample(wave, rate, self.sample_rate)

    def synthesize_words(self, words: list[str], pause_s: float = 0.08) -> tuple[Tensor, list[Word]]:
        """Speaks `words` one at a time, trims each word's silences and joins them with `pause_s` pauses.

        Word times are exact by construction: each word occupies [start, end) of the returned clip. A word that
        yields no sound (e.g. lone punctuation) gets start == end at its position.

        Args:
            words: the words, in order.
            pause_s: seconds of silence before, between and after the words.

        Returns:
            (waveform (S,) at `sample_rate`, [(word, start s, end s), ...] with non-decreasing times in the clip).
        """
        pause = torch.zeros(round(pause_s * self.sample_rate))
        pieces, times, position = [pause], [], pause.numel()
        for word in words:
            clip = trim_silence(self.synthesize(word), self.silence_threshold)
            times.append((word, position / self.sample_rate, (position + clip.numel()) / self.sample_rate))
            pieces += [clip, pause]
            position += clip.numel() + pause.numel()
        return torch.cat(pieces), times
