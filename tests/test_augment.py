"""Speech augmentation: each transform's measured effect, word times under speed changes, per-sample seeding,
and config errors that name the key and the fix."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from data_helpers import encode, speech_sample, write_shard

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.audio import resample
from lit_sllm.data.audio_bank import AudioBank
from lit_sllm.data.augment import UNDONE, Augmentation, build_step
from lit_sllm.data.augment_transforms import (
    AddNoise,
    Clipping,
    Codec,
    Gain,
    Reverb,
    TelephoneBand,
    coloured_noise,
    mix_at_snr,
    resample_clip,
    reverberate,
    synthetic_rir,
)
from lit_sllm.data.interleave import Span, interleave
from lit_sllm.data.schema import Sample

RATE = 16000


def speech_like(seconds: float, seed: int = 0) -> torch.Tensor:
    """(S,) a harmonic tone under a syllable envelope plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * RATE)) / RATE
    voiced = sum(torch.sin(2 * math.pi * 150 * k * t) / k for k in (1, 2, 3))
    return 0.2 * voiced * torch.sin(2 * math.pi * 4 * t).abs() + 0.01 * torch.randn(t.numel(), generator=generator)


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    return float(10 * torch.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum()))


def sample_of(wave: torch.Tensor, words=None, key: str = "k") -> Sample:
    turns = [{"role": "user", "parts": [{"audio": "flac"}]}, {"role": "assistant", "parts": [{"text": "x"}]}]
    return Sample(key, "asr", turns, {"flac": (wave, RATE)}, "x", words, wave.numel() / RATE)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_by_the_factor_and_word_times_follow(factor):
    wave = speech_like(3.0)
    words = [("one", 0.2, 0.9), ("two", 1.1, 2.0), ("three", 2.2, 2.9)]
    chain = Augmentation([build_step({"name": "speed", "factors": [factor]}, "aug", RATE)], RATE)
    out, applied = chain.apply(sample_of(wave, words), random.Random(0))
    length = out.audio["flac"][0].numel()
    assert applied == ["speed"] and abs(length - wave.numel() / factor) <= 1
    assert out.duration == pytest.approx(3.0 / factor, abs=1e-4)
    for (_, start, end), (_, new_start, new_end) in zip(words, out.words):
        assert new_start == pytest.approx(start / factor, rel=1e-4) and new_end == pytest.approx(end / factor, rel=1e-4)


def test_padded_resampling_equals_torchaudios():
    for length in (12345, 8000, 40001):
        clip = torch.randn(length, generator=torch.Generator().manual_seed(length))
        for factor in (0.9, 1.1):
            expected = torchaudio.functional.speed(clip[None], RATE, factor)[0][0]
            got = resample_clip(clip, int(factor * RATE), RATE)
            assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("rates", [(24000, 16000), (22050, 16000), (44100, 16000), (8000, 16000), (16000, 8000)])
def test_resampling_with_the_kept_kernel_equals_torchaudios(rates):
    """`resample` (what decoding uses) keeps its kernel and pads once: the result is torchaudio's."""
    assert resample(torch.zeros(0), *rates).shape == (0,)  # torchaudio's own raises on an empty clip
    for length in (1, 7, 8000, 12345, 40001):
        clip = torch.randn(length, generator=torch.Generator().manual_seed(length))
        expected = torchaudio.functional.resample(clip, *rates)
        got = resample(clip, *rates)
        assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4)
    stereo = torch.randn(2, 9000)
    assert torch.equal(resample(stereo, *rates), torchaudio.functional.resample(stereo, *rates))


@pytest.mark.parametrize("snr", [0.0, 12.5, 30.0])
def test_noise_mixing_equals_torchaudios_add_noise(snr):
    clip, noise = speech_like(1.5), torch.randn(24000, generator=torch.Generator().manual_seed(3))
    expected = torchaudio.functional.add_noise(clip[None], noise[None], torch.tensor([snr]))[0]
    assert torch.allclose(mix_at_snr(clip, noise, snr), expected, atol=1e-5)
    assert mix_at_snr(clip, torch.zeros_like(clip), snr) is clip  # silent noise: no SNR to reach, clip untouched


def test_interleaving_cuts_a_speed_perturbed_clip_at_its_words():
    """Three tone bursts are the 'words'; after speed 0.9 the MTBI cuts (from the scaled word times) still hold each
    burst whole: every audio span keeps its energy, and the pauses between words stay silent."""
    t = torch.arange(3 * RATE) / RATE
    words = [("a", 0.3, 0.8), ("b", 1.3, 1.8), ("c", 2.3, 2.8)]
    wave = torch.zeros_like(t)
    for _, start, end in words:
        inside = (t >= start) & (t < end)
        wave[inside] = 0.5 * torch.sin(2 * math.pi * 300 * t[inside])
    chain = Augmentation([build_step({"name": "speed", "factors": [0.9]}, "aug", RATE)], RATE)
    out, _ = chain.apply(sample_of(wave, words), random.Random(0))
    slow = out.audio["flac"][0]
    for _, start, end in out.words:
        inside = slow[round(start * RATE) : round(end * RATE)]
        assert float(inside.pow(2).mean()) > 0.1  # the burst (0.125 mean power) is where the words say
    gaps = [(out.words[i][2] + 0.05, out.words[i + 1][1] - 0.05) for i in range(2)]
    assert all(float(slow[round(a * RATE) : round(b * RATE)].abs().max()) < 0.01 for a, b in gaps)
    parts, clips = interleave(out.words, slow, RATE, [Span(0, 1, False), Span(1, 2, True), Span(2, 3, False)])
    assert [p.get("text") for p in parts] == [None, "b", None]
    assert all(float(clip.pow(2).sum()) / RATE > 0.05 for clip in clips.values())  # each cut holds its burst


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_generated_noise_reaches_the_requested_snr(colour, snr):
    wave = speech_like(2.0)
    noise = AddNoise(snr_db=[snr, snr], colour=colour)
    noisy = noise([wave], RATE, random.Random(1))[0]
    assert abs(snr_db(wave, noisy) - snr) < 0.5


def test_pink_and_brown_noise_fall_off_with_frequency():
    generator = torch.Generator().manual_seed(0)
    slopes = {}
    for colour in ("white", "pink", "brown"):
        power = torch.fft.rfft(coloured_noise(10 * RATE, colour, generator)).abs().pow(2)
        slopes[colour] = float(10 * torch.log10(power[500:1000].mean() / power[16000:32000].mean()))  # 50 Hz vs 1.6 kHz
    assert abs(slopes["white"]) < 1 and 12 < slopes["pink"] < 18 and slopes["brown"] > 24  # 5 octaves: 15 / 30 dB


def noise_folder(root) -> str:
    """A MUSAN-style layout: noise/<collection>/*.wav and *.flac, at other rates than the data's."""
    rng = np.random.default_rng(0)
    for collection, rate, fmt in (("free-sound", 8000, "WAV"), ("sound-bible", 22050, "FLAC")):
        folder = root / "noise" / collection
        folder.mkdir(parents=True)
        for i in range(3):
            data = (0.1 * rng.standard_normal(int(rate * (0.5 + i)))).astype(np.float32)
            sf.write(folder / f"n{i}.{fmt.lower()}", data, rate, format=fmt, subtype="PCM_16")
    return str(root / "noise")


def test_noise_from_a_folder_and_from_shards_reaches_the_snr(tmp_path):
    wave = speech_like(2.0)
    shard = write_shard(tmp_path / "babble" / "b-000000.tar", [speech_sample(f"b{i}", 0.7) for i in range(3)])
    for source in (noise_folder(tmp_path), str(shard.parent)):
        noise = AddNoise(snr_db=[5.0, 15.0], source=source)
        for seed in range(4):
            noisy = noise([wave], RATE, random.Random(seed))[0]
            expected = random.Random(seed).uniform(5.0, 15.0)  # the first draw is the SNR
            assert noisy.numel() == wave.numel() and abs(snr_db(wave, noisy) - expected) < 0.5


def test_reverb_keeps_length_energy_and_timing(tmp_path):
    clip = torch.zeros(RATE)
    clip[4000] = 1.0  # an impulse: its reverberated copy must start where it was
    rir = torch.cat([torch.zeros(100), torch.ones(1), 0.3 * torch.exp(-torch.arange(3000) / 500.0)])
    out = reverberate(clip, rir)
    assert out.numel() == clip.numel() and int(out.abs().argmax()) == 4000
    assert float(out.pow(2).sum()) == pytest.approx(float(clip.pow(2).sum()), rel=1e-4)
    folder = tmp_path / "rirs" / "room1"
    folder.mkdir(parents=True)
    sf.write(folder / "r.wav", rir.numpy(), RATE, subtype="FLOAT")
    wave = speech_like(2.0)
    for reverb in (Reverb(rirs=str(tmp_path / "rirs")), Reverb()):
        wet = reverb([wave], RATE, random.Random(0))[0]
        assert wet.numel() == wave.numel() and not torch.allclose(wet, wave, atol=1e-3)
        assert float(wet.pow(2).sum()) == pytest.approx(float(wave.pow(2).sum()), rel=1e-4)


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_synthetic_rir_decays_60_db_over_its_rt60(rt60):
    rir = synthetic_rir(rt60, drr_db=0.0, rate=RATE, generator=torch.Generator().manual_seed(0))
    tail = rir[1:].pow(2)
    edc = 10 * torch.log10(torch.flip(torch.cumsum(torch.flip(tail, [0]), 0), [0]) / tail.sum())  # Schroeder
    t5, t25 = int((edc > -5).sum()), int((edc > -25).sum())
    measured = 3 * (t25 - t5) / RATE  # T20 extrapolated to 60 dB
    assert measured == pytest.approx(rt60, rel=0.1)
    assert float(tail.sum()) == pytest.approx(1.0, rel=1e-4)  # drr 0 dB: tail energy = direct energy


def test_gain_clipping_telephone_and_codecs_do_what_they_say():
    wave = speech_like(2.0)
    rms = float(wave.pow(2).mean().sqrt())
    louder = Gain(db=[6.0, 6.0])([wave], RATE, random.Random(0))[0]
    assert float(louder.pow(2).mean().sqrt()) / rms == pytest.approx(10 ** (6 / 20), rel=1e-4)
    clipped = Clipping(level=[0.5, 0.5])([wave], RATE, random.Random(0))[0]
    assert float(clipped.abs().max()) == pytest.approx(0.5 * float(wave.abs().max()), rel=1e-5)
    white = 0.1 * torch.randn(2 * RATE, generator=torch.Generator().manual_seed(0))
    narrow = TelephoneBand()([white], RATE, random.Random(0))[0]
    power = torch.fft.rfft(narrow).abs().pow(2)
    hz = torch.fft.rfftfreq(narrow.numel(), 1 / RATE)
    assert narrow.numel() == white.numel()
    assert float(power[hz > 4500].sum() / power.sum()) < 1e-3 and float(power[hz < 100].sum() / power.sum()) < 1e-3
    for codec, floor in (("ulaw", 30.0), ("alaw", 30.0), ("mp3", 5.0), ("vorbis", 5.0), ("gsm", 3.0)):
        out = Codec(codecs=[codec])([wave], RATE, random.Random(0))[0]
        assert out.numel() == wave.numel() and floor < snr_db(wave, out) < 60, codec


def test_augmentation_is_seeded_per_sample_key_and_occurrence():
    chain = Augmentation.from_config([{"name": "noise", "p": 0.5}, {"name": "gain", "p": 0.5}], "aug", RATE)
    waves = {key: speech_like(0.5, seed=i) for i, key in enumerate("abc")}

    def run(keys: str, seed: str = "0/0/asr") -> list[tuple[str, torch.Tensor, list[str]]]:
        samples = (sample_of(waves[key], key=key) for key in keys)
        return [(s.key, s.audio["flac"][0], s.augmented) for s in chain.stream(samples, seed)]

    full, again, resumed = run("abcabc"), run("abcabc"), run("ca")
    assert all(torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(full, again))  # two runs: the same
    assert torch.equal(resumed[0][1], full[2][1]) and torch.equal(resumed[1][1], full[0][1])  # first occurrences
    assert not torch.equal(full[0][1], full[3][1])  # a key met again draws anew
    other_epoch = run("abc", seed="0/1/asr")
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(full, other_epoch))
    counts = sum(len(x[2]) for x in run("abc" * 40))
    assert 100 < counts < 140  # two steps at p=0.5 over 120 samples: 120 expected


def test_a_sample_made_too_long_stays_unaugmented_and_is_counted():
    chain = Augmentation.from_config([{"name": "speed", "factors": [0.8]}], "aug", RATE, max_duration=2.2)
    wave = speech_like(2.0)
    out, applied = chain.apply(sample_of(wave), random.Random(0))
    assert applied == [UNDONE] and torch.equal(out.audio["flac"][0], wave) and out.duration == 2.0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "nosie"}, r"aug\[0\]\.name: unknown transform 'nosie' \(did you mean 'noise'\?\)"),
        ({"name": "noise", "snr": [1, 2]}, r"aug\[0\]\.snr: not a parameter of noise; its parameters are"),
        ({"name": "gain", "p": 1.5}, r"aug\[0\]\.p: the probability of gain must be in \[0, 1\]"),
        ({"name": "noise", "snr_db": [20, 10]}, r"aug\[0\]: noise: snr_db must be \[low, high\]"),
        ({"name": "noise", "source": "/no/such/folder"}, r"aug\[0\]: .*/no/such/folder.* Fix: give a folder"),
        ({"name": "speed", "factors": [0.0]}, r"aug\[0\]: speed: factors must be"),
        ({"name": "telephone", "band_rate": 16000}, r"band_rate must be below data.sample_rate 16000"),
        ({"name": "codec", "codecs": ["opus"]}, r"codecs must name some of"),
        ({"p": 0.5}, r"aug\[0\]: each entry needs a transform name"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(entry, message):
    with pytest.raises(ConfigError, match=message):
        Augmentation.from_config([entry], "aug", RATE)


def test_an_empty_noise_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"aug\[0\]: No shards match"):
        Augmentation.from_config([{"name": "noise", "source": str(tmp_path / "empty")}], "aug", RATE)


def test_encoded_flac_noise_excerpts_are_read_at_random_offsets(tmp_path):
    folder = tmp_path / "n"
    folder.mkdir()
    ramp = np.linspace(-0.5, 0.5, 4 * RATE).astype(np.float32)
    (folder / "ramp.flac").write_bytes(encode(ramp))
    noise = AddNoise(source=str(folder))
    starts = {round(float(noise.bank.excerpt(RATE, RATE, random.Random(seed))[0]), 2) for seed in range(5)}
    assert len(starts) == 5  # different seeds, different stretches of the file
    looped = noise.bank.excerpt(10 * RATE, RATE, random.Random(0))
    assert looped.numel() == 10 * RATE and torch.allclose(looped[: 4 * RATE], looped[4 * RATE : 8 * RATE])


def test_a_bank_holding_its_files_draws_what_reading_excerpts_draws(tmp_path, monkeypatch):
    """A folder that fits in `pool_seconds` is decoded once per file and held; one that does not is read an excerpt
    at a time. The draws are the same samples either way, and the held bank stops reading the disk."""
    folder = tmp_path / "n"
    folder.mkdir()
    generator = torch.Generator().manual_seed(1)
    for i, suffix in enumerate(("wav", "flac", "wav")):
        wave = 0.3 * torch.randn((2 + i) * RATE, 2, generator=generator)  # stereo: both downmix the same way
        sf.write(folder / f"n{i}.{suffix}", wave.numpy(), RATE, subtype="PCM_16")
    held, streamed = AudioBank(str(folder)), AudioBank(str(folder), pool_seconds=0.0)
    reads, read = [], sf.read
    monkeypatch.setattr(sf, "read", lambda *args, **kwargs: reads.append(args) or read(*args, **kwargs))
    for seed in range(12):
        length = (seed % 4 + 1) * RATE // 2
        expected = streamed.excerpt(length, RATE, random.Random(seed))
        assert torch.equal(held.excerpt(length, RATE, random.Random(seed)), expected)
        assert torch.equal(held.clip(RATE, random.Random(seed)), streamed.clip(RATE, random.Random(seed)))
    assert len(held._held) == 3 and held._held_seconds == 9.0 and not streamed._held
    before = len(reads)
    held.excerpt(RATE, RATE, random.Random(99))
    assert len(reads) == before  # held: no read at all
    streamed.excerpt(RATE, RATE, random.Random(99))
    assert len(reads) == before + 1
