"""Toy speech: each toy word spoken once per voice by espeak-ng, utterances assembled from the cached words.

One espeak-ng call per word and voice (a few hundred calls in all) instead of one per utterance makes thousands of
utterances cost seconds. Random tempo, pauses, word gains, level and light noise keep two readings of a sentence
apart, and word times are exact by construction. Clips are stored as 16 kHz 8-bit FLAC (about 6 kB per second,
a third of 16-bit) so the whole world fits its size budget; the 8-bit step adds quantisation noise well below the
speech, and the encoder is trained on exactly these stored bytes.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import soundfile as sf
import torch
from torch import Tensor

from lit_sllm.data.audio import resample
from lit_sllm.data.tts import EspeakTTS, Word, trim_silence

STORE_RATE = 16000  # Hz, the rate Whisper-style encoders read
STORE_SUBTYPE = "PCM_S8"  # 8-bit samples inside FLAC


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice setting.

    Attributes:
        name: espeak-ng voice with an optional `+variant` (e.g. "en-gb+f2"); `espeak-ng --voices` lists them.
        rate: speaking rate in words per minute.
        pitch: base pitch, 0-99.
    """

    name: str
    rate: int
    pitch: int


VOICES = (  # eight accents, four female and four male variants, rates 230-260 wpm, pitches 35-80
    Voice("en-us", 250, 50),
    Voice("en-gb+f2", 235, 65),
    Voice("en-us+m3", 260, 35),
    Voice("en-gb-x-rp+f4", 240, 80),
    Voice("en-gb-scotland+m1", 245, 45),
    Voice("en-029+f3", 230, 70),
    Voice("en-us-nyc+m5", 255, 40),
    Voice("en-gb-x-gbclan+f1", 240, 75),
)


@dataclass(frozen=True)
class Style:
    """How utterances vary; each value is drawn per utterance (gain: per word) from its range or choices.

    Attributes:
        tempos: speed factors (> 1 is faster), applied by resampling each word (tempo and pitch move together).
        pause_s: silence between words, seconds.
        edge_s: silence before the first and after the last word, seconds.
        word_gain_db: loudness of each word relative to the others.
        peak: the utterance's peak amplitude before noise.
        snr_db: speech-to-noise ratio of the added white noise.
    """

    tempos: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)
    pause_s: tuple[float, float] = (0.03, 0.1)
    edge_s: tuple[float, float] = (0.05, 0.15)
    word_gain_db: tuple[float, float] = (-3.0, 3.0)
    peak: tuple[float, float] = (0.35, 0.9)
    snr_db: tuple[float, float] = (25.0, 40.0)


@dataclass
class Utterance:
    """Assembled speech: waveform (S,) at `sample_rate`, with (word, start s, end s) for every word in order."""

    wave: Tensor
    words: list[Word]
    sample_rate: int
    voice: str

    @property
    def duration(self) -> float:
        return self.wave.numel() / self.sample_rate

    def flac(self) -> bytes:
        """The clip as stored in the shards: 8-bit FLAC (samples outside [-1, 1] are clipped)."""
        buffer = io.BytesIO()
        samples = self.wave.clamp(-1.0, 1.0).numpy()
        sf.write(buffer, samples, self.sample_rate, format="FLAC", subtype=STORE_SUBTYPE)
        return buffer.getvalue()


def speak_words(voice: Voice, words: Sequence[str], sample_rate: int, workers: int) -> dict[str, Tensor]:
    """Each word spoken alone by one voice, end silences trimmed: word -> waveform (S_w,) at `sample_rate`.

    Raises:
        ValueError: naming a word that yields no sound, since an utterance with it would have a silent word.
    """
    tts = EspeakTTS(voice.name, voice.rate, voice.pitch, sample_rate=sample_rate)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # each call runs its own espeak-ng process
        clips = list(pool.map(lambda word: trim_silence(tts.synthesize(word), tts.silence_threshold), words))
    silent = [word for word, clip in zip(words, clips) if clip.numel() == 0]
    if silent:
        raise ValueError(f"espeak-ng voice {voice.name!r} produced no sound for {silent[:5]}; drop these words.")
    return dict(zip(words, clips))


class ToySpeech:
    """Speaks toy sentences from a cache of words spoken once per voice.

    Args:
        words: every word an utterance may contain.
        voices: the voice settings; each utterance uses one, drawn at random.
        style: how utterances vary.
        sample_rate: output rate in Hz.
        workers: espeak-ng processes run at once while the cache is built.
    """

    def __init__(
        self,
        words: Sequence[str],
        voices: Sequence[Voice] = VOICES,
        style: Style | None = None,
        sample_rate: int = STORE_RATE,
        workers: int = 2,
    ) -> None:
        self.voices, self.style, self.sample_rate = tuple(voices), style or Style(), sample_rate
        unique = sorted(set(words))
        self.clips = {voice: speak_words(voice, unique, sample_rate, workers) for voice in self.voices}
        self._tempo_cache: dict[tuple[Voice, str, float], Tensor] = {}

    def word_clip(self, voice: Voice, word: str, tempo: float) -> Tensor:
        """The cached clip of `word` in `voice`, played `tempo` times faster (cached too)."""
        if word not in self.clips[voice]:
            raise KeyError(f"'{word}' was not synthesised; pass it in `words` when building ToySpeech.")
        key = (voice, word, tempo)
        if key not in self._tempo_cache:
            # reading the clip as if recorded at rate * tempo and resampling it to rate speeds it up by tempo
            self._tempo_cache[key] = resample(
                self.clips[voice][word], round(self.sample_rate * tempo), self.sample_rate
            )
        return self._tempo_cache[key]

    def speak(self, words: Sequence[str], rng: random.Random) -> Utterance:
        """One utterance of `words` with every random choice drawn from `rng` (same rng state, same samples)."""
        style = self.style
        voice, tempo = rng.choice(self.voices), rng.choice(style.tempos)
        pieces, times = [self._silence(rng.uniform(*style.edge_s))], []
        position = pieces[0].numel()
        for index, word in enumerate(words):
            if index:
                pieces.append(self._silence(rng.uniform(*style.pause_s)))
                position += pieces[-1].numel()
            clip = self.word_clip(voice, word, tempo) * 10 ** (rng.uniform(*style.word_gain_db) / 20)
            times.append(
                (word, round(position / self.sample_rate, 5), round((position + clip.numel()) / self.sample_rate, 5))
            )
            pieces.append(clip)
            position += clip.numel()
        pieces.append(self._silence(rng.uniform(*style.edge_s)))
        speech = torch.cat(pieces)  # (S,)
        speech = speech * (rng.uniform(*style.peak) / float(speech.abs().max()))
        return Utterance(self._add_noise(speech, rng), times, self.sample_rate, voice.name)

    def _silence(self, seconds: float) -> Tensor:
        return torch.zeros(round(seconds * self.sample_rate))

    def _add_noise(self, speech: Tensor, rng: random.Random) -> Tensor:
        """White noise at a random SNR relative to the speech's RMS; seeded from `rng`, so repeatable."""
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        rms = float(speech.pow(2).mean().sqrt())
        scale = rms * math.pow(10.0, -rng.uniform(*self.style.snr_db) / 20)
        return speech + scale * torch.randn(speech.shape, generator=generator)
