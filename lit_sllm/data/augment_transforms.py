"""The waveform transforms of speech augmentation, by name (`TRANSFORMS`), each a dataclass of its parameters.

A transform takes the clips of one sample at one rate and a generator, and returns new clips: `(clips, rate, rng)
-> clips`. Random choices come from `rng` only (tensor noise from a torch generator seeded from it), so the same
generator gives the same result. The signal work is torchaudio's and soundfile's (resampling kernels, fftconvolve,
gain, highpass_biquad, lfilter; codecs through libsndfile); written here by hand are only what neither offers:
coloured noise filters, a synthetic room impulse response, the direct-path alignment of a reverberated clip, peak
clipping, and mixing at an SNR (torchaudio's `add_noise` formula, in fewer passes over the clip).
"""

from __future__ import annotations

import functools
import io
import math
import random
from dataclasses import dataclass, field
from typing import ClassVar

import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from lit_sllm.data.audio import resample_clip
from lit_sllm.data.audio_bank import AudioBank

Range = tuple[float, float]


def _check_range(name: str, values: Range, low: float = -math.inf, high: float = math.inf) -> None:
    numbers = isinstance(values, list | tuple) and all(isinstance(v, int | float) for v in values)
    if not numbers or len(values) != 2 or not low <= values[0] <= values[1] <= high:
        raise ValueError(f"{name} must be [low, high] with {low} <= low <= high <= {high}, got {list(values)}")


def _generator(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.getrandbits(63))


class Transform:
    """Base of the transforms: applies `one` to every clip of the sample (override `__call__` to act on all)."""

    name: ClassVar[str]

    def setup(self, sample_rate: int) -> None:
        """Checks the transform can run at the data's rate (raises ValueError) and prepares what it reads."""

    def __call__(self, clips: list[Tensor], rate: int, rng: random.Random) -> list[Tensor]:
        return [self.one(clip, rate, rng) for clip in clips]

    def one(self, clip: Tensor, rate: int, rng: random.Random) -> Tensor:
        raise NotImplementedError


@dataclass
class SpeedPerturb(Transform):
    """Speed perturbation by resampling (as torchaudio's `speed`): tempo and pitch change together, as with sox `speed`.

    A factor of 1.1 makes a clip 1.1x faster, so 1/1.1 as long; word times scale with it. One factor is drawn per
    sample, so all its clips share it.

    Attributes:
        factors: the factors to draw from, uniformly (1.0 leaves the sample as it is).
    """

    name: ClassVar[str] = "speed"
    factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])

    def __post_init__(self) -> None:
        if not self.factors or any(f <= 0 or f > 4 for f in self.factors):
            raise ValueError(f"factors must be a non-empty list of values in (0, 4], got {self.factors}")

    def __call__(self, clips: list[Tensor], rate: int, rng: random.Random) -> list[Tensor]:
        factor = rng.choice(self.factors)
        if factor == 1.0:
            return clips
        source = int(factor * rate)  # as torchaudio's `speed`: from factor x rate to rate
        return [resample_clip(clip, source, rate) for clip in clips]  # (S / factor,)


def coloured_noise(length: int, colour: str, generator: torch.Generator) -> Tensor:
    """(length,) unit-RMS noise: white, pink (-3 dB/octave, J. O. Smith's 4-pole filter) or brown (-6 dB/octave,
    a leaky integrator)."""
    white = torch.randn(length, generator=generator)
    if colour == "pink":
        b = torch.tensor([0.049922035, -0.095993537, 0.050612699, -0.004408786])
        a = torch.tensor([1.0, -2.494956002, 2.017265875, -0.522189400])
        white = AF.lfilter(white, a, b, clamp=False)
    elif colour == "brown":
        white = AF.lfilter(white, torch.tensor([1.0, -0.995]), torch.tensor([1.0, 0.0]), clamp=False)
    return white / white.pow(2).mean().sqrt().clamp(min=1e-12)


NOISE_COLOURS = ("white", "pink", "brown")


@dataclass
class AddNoise(Transform):
    """Additive noise at a signal-to-noise ratio drawn per clip (torchaudio's `add_noise`: energy over the clip).

    Attributes:
        snr_db: [low, high] SNR in dB, drawn uniformly.
        source: noise to draw from: a folder of audio files (searched recursively, e.g. MUSAN's `noise/`) or a shard
            set; a random excerpt of a random file, looped if short. Null: generated noise of `colour`.
        colour: generated noise when there is no source: white, pink or brown.
        pool_seconds: for a shard-set source, the most noise decoded into memory per process.
    """

    name: ClassVar[str] = "noise"
    snr_db: list[float] = field(default_factory=lambda: [10.0, 20.0])
    source: str | list[str] | None = None
    colour: str = "white"
    pool_seconds: float = 600.0

    def __post_init__(self) -> None:
        _check_range("snr_db", self.snr_db)
        if self.colour not in NOISE_COLOURS:
            raise ValueError(f"colour must be one of {NOISE_COLOURS}, got {self.colour!r}")
        self.bank = AudioBank(self.source, self.pool_seconds) if self.source is not None else None

    def one(self, clip: Tensor, rate: int, rng: random.Random) -> Tensor:
        snr = rng.uniform(*self.snr_db)
        if self.bank is not None:
            noise = self.bank.excerpt(clip.numel(), rate, rng)
        else:
            noise = coloured_noise(clip.numel(), self.colour, _generator(rng))
        return mix_at_snr(clip, noise, snr)


def mix_at_snr(clip: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """(S,) `clip + scale * noise`, `scale` chosen so that clip energy over scaled noise energy is `snr_db` (as
    torchaudio's `add_noise`, energies over the whole clip), in one pass over each input and one output; a silent
    `noise` leaves the clip as it is (no SNR can be reached)."""
    noise_energy = float(torch.dot(noise, noise))
    if noise_energy <= 1e-12:
        return clip
    scale = math.sqrt(float(torch.dot(clip, clip)) / noise_energy * 10 ** (-snr_db / 10))
    return torch.add(clip, noise, alpha=scale)  # (S,)


def synthetic_rir(rt60: float, drr_db: float, rate: int, generator: torch.Generator) -> Tensor:
    """(S,) a room impulse response: a unit direct path, then Gaussian noise decaying 60 dB over `rt60` seconds,
    scaled so the direct path is `drr_db` above the tail's energy."""
    length = max(2, round(rt60 * rate))
    t = torch.arange(1, length) / rate
    tail = torch.randn(length - 1, generator=generator) * torch.exp(-3 * math.log(10) * t / rt60)
    tail *= (10 ** (-drr_db / 10) / tail.pow(2).sum().clamp(min=1e-12)).sqrt()
    return torch.cat([torch.ones(1), tail])


@functools.lru_cache(maxsize=64)
def fast_fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: pocketfft is several times faster at such lengths than at other ones."""
    best = 1 << (n - 1).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


def reverberate(clip: Tensor, rir: Tensor) -> Tensor:
    """(S,) `clip` convolved with `rir` (torchaudio's `fftconvolve`, at a fast FFT length), cut to the clip's length
    from the RIR's direct path (its largest tap), so speech keeps its timing, and scaled back to the clip's energy."""
    n = clip.numel() + rir.numel() - 1
    padded_rir = torch.nn.functional.pad(rir, (0, fast_fft_length(n) - n))
    direct = int(rir.abs().argmax())
    wet = AF.fftconvolve(clip, padded_rir)[direct : direct + clip.numel()]  # (S,)
    scale = (clip.pow(2).sum() / wet.pow(2).sum().clamp(min=1e-12)).sqrt()
    return wet * scale


@dataclass
class Reverb(Transform):
    """Reverberation: convolution with a room impulse response from a folder (or shard set), or a synthetic one.

    Attributes:
        rirs: RIR audio to draw from (a folder searched recursively, or a shard set); null for synthetic RIRs.
        rt60: [low, high] reverberation time in seconds of the synthetic RIRs.
        drr_db: [low, high] direct-to-reverberant energy ratio in dB of the synthetic RIRs.
    """

    name: ClassVar[str] = "reverb"
    rirs: str | list[str] | None = None
    rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])
    drr_db: list[float] = field(default_factory=lambda: [0.0, 10.0])

    def __post_init__(self) -> None:
        _check_range("rt60", self.rt60, low=0.01, high=5.0)
        _check_range("drr_db", self.drr_db)
        self.bank = AudioBank(self.rirs) if self.rirs is not None else None

    def one(self, clip: Tensor, rate: int, rng: random.Random) -> Tensor:
        if self.bank is not None:
            rir = self.bank.clip(rate, rng)
        else:
            rir = synthetic_rir(rng.uniform(*self.rt60), rng.uniform(*self.drr_db), rate, _generator(rng))
        return reverberate(clip, rir)


@dataclass
class Gain(Transform):
    """Volume change by a gain in dB drawn per clip (torchaudio's `gain`); nothing is clipped.

    Attributes:
        db: [low, high] gain in dB.
    """

    name: ClassVar[str] = "gain"
    db: list[float] = field(default_factory=lambda: [-6.0, 6.0])

    def __post_init__(self) -> None:
        _check_range("db", self.db, low=-60.0, high=60.0)

    def one(self, clip: Tensor, rate: int, rng: random.Random) -> Tensor:
        return AF.gain(clip, rng.uniform(*self.db))


@dataclass
class Clipping(Transform):
    """Saturation: the waveform is cut flat at a fraction of its own peak, as an overdriven recording is.

    Attributes:
        level: [low, high] fraction of the clip's peak where it is clipped (1.0: untouched).
    """

    name: ClassVar[str] = "clipping"
    level: list[float] = field(default_factory=lambda: [0.3, 0.9])

    def __post_init__(self) -> None:
        _check_range("level", self.level, low=0.01, high=1.0)

    def one(self, clip: Tensor, rate: int, rng: random.Random) -> Tensor:
        limit = rng.uniform(*self.level) * float(clip.abs().max()) if clip.numel() else 0.0
        return clip.clamp(-limit, limit)


@dataclass
class TelephoneBand(Transform):
    """Telephone bandwidth: down to `band_rate` and back (torchaudio's resampler), then a high-pass at `highpass` Hz.

    Attributes:
        band_rate: the narrow-band rate in Hz (8000: 300-3400 Hz telephony).
        highpass: cut-off in Hz of the high-pass below the band (0 for none).
    """

    name: ClassVar[str] = "telephone"
    band_rate: int = 8000
    highpass: float = 300.0

    def setup(self, sample_rate: int) -> None:
        if not 0 < self.band_rate < sample_rate:
            raise ValueError(f"band_rate must be below data.sample_rate {sample_rate} Hz, got {self.band_rate}")

    def one(self, clip: Tensor, rate: int, rng: random.Random) -> Tensor:
        narrow = resample_clip(clip, rate, self.band_rate)
        wide = resample_clip(narrow, self.band_rate, rate)[: clip.numel()]
        wide = torch.nn.functional.pad(wide, (0, clip.numel() - wide.numel()))
        return AF.highpass_biquad(wide, rate, self.highpass) if self.highpass > 0 else wide


# name -> (soundfile format, subtype); each round trip runs libsndfile's encoder and decoder in memory.
CODECS = {
    "ulaw": ("WAV", "ULAW"),
    "alaw": ("WAV", "ALAW"),
    "gsm": ("WAV", "GSM610"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "vorbis": ("OGG", "VORBIS"),
}


@dataclass
class Codec(Transform):
    """Lossy codec artefacts: an encode/decode round trip through libsndfile (soundfile), one codec drawn per clip.

    Costs differ widely (CPU s per audio hour in `lit-sllm bench augment`): the G.711 laws are nearly free, MP3, Vorbis
    and GSM cost more than decoding the clip did.

    Attributes:
        codecs: codecs to draw from: ulaw, alaw (G.711), gsm (GSM 06.10), mp3, vorbis.
        compression_level: libsndfile's compression level in [0, 1] for mp3 and vorbis (null: its default).
    """

    name: ClassVar[str] = "codec"
    codecs: list[str] = field(default_factory=lambda: ["ulaw", "mp3"])
    compression_level: float | None = None

    def __post_init__(self) -> None:
        unknown = [c for c in self.codecs if c not in CODECS]
        if not self.codecs or unknown:
            raise ValueError(f"codecs must name some of {sorted(CODECS)}, got {self.codecs}")
        if self.compression_level is not None and not 0 <= self.compression_level <= 1:
            raise ValueError(f"compression_level must be in [0, 1], got {self.compression_level}")

    def one(self, clip: Tensor, rate: int, rng: random.Random) -> Tensor:
        fmt, subtype = CODECS[rng.choice(self.codecs)]
        buffer = io.BytesIO()
        level = self.compression_level if fmt in ("MP3", "OGG") else None
        extra = {} if level is None else {"compression_level": level}
        sf.write(buffer, clip.clamp(-1, 1).numpy(), rate, format=fmt, subtype=subtype, **extra)
        buffer.seek(0)
        decoded = torch.from_numpy(sf.read(buffer, dtype="float32")[0])[: clip.numel()]
        return torch.nn.functional.pad(decoded, (0, clip.numel() - decoded.numel()))  # (S,)


TRANSFORMS: dict[str, type[Transform]] = {
    cls.name: cls for cls in (SpeedPerturb, AddNoise, Reverb, Gain, Clipping, TelephoneBand, Codec)
}
