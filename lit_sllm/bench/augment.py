"""`lit-sllm bench augment`: what speech augmentation costs. First the CPU seconds each transform takes per hour of
audio, alone (p = 1) on LibriSpeech-like clips in one thread; then the training pipeline's throughput with a typical
augmentation list against none, on one DataLoader worker, the two loaders side by side in interleaved rounds.

The typical list is what LibriSpeech recipes use (icefall's and NeMo's): speed perturbation 0.9/1.0/1.1 on every
sample and noise from a MUSAN-style folder on half of them at 10-20 dB SNR, plus a gain change on half. The same list
with room impulse responses on a fifth of the samples is measured beside it. Clips are stored at 16 kHz, as
LibriSpeech's are (the pipeline then resamples nothing, so augmentation is all that differs between the loaders), and
at 24 kHz, as LibriTTS's are (the pipeline resamples every clip, as in `lit-sllm bench data`); the goal must hold at
both. Noise
and RIR files are synthetic (nothing is downloaded): 30 s noise files in 16-bit WAV, as MUSAN ships them (and a FLAC
copy, to show what compressed noise costs), and 0.3-0.9 s exponentially decaying RIRs in WAV.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from lit_sllm.bench.common import Goal, Outcome, interleaved, paired_ratio, spread, table
from lit_sllm.bench.data import DataSettings, DecodeCounter, Epoch, epoch_batches, epoch_runner, steady_rate
from lit_sllm.bench.models import build_tokenizer
from lit_sllm.bench.synthetic import librispeech_durations, speech_wave, write_speech_set
from lit_sllm.data.augment import build_step
from lit_sllm.data.augment_transforms import coloured_noise, synthetic_rir
from lit_sllm.data.batching import BatchingSpec
from lit_sllm.data.datamodule import SourceSpec, SpeechTextDataModule
from lit_sllm.models.features import LogMelFeatures
from lit_sllm.models.spec_augment import SpecAugment
from lit_sllm.threads import torch_threads

GOAL_RATIO = 0.8
VOCABULARY = 2000


@dataclass(frozen=True)
class AugmentSettings:
    """Sizes of the augmentation benchmark.

    Attributes:
        cost_clips: clips each transform is timed on (LibriSpeech-like durations).
        cost_rounds: interleaved rounds of the per-transform timing.
        utterances: clips in the throughput set.
        sample_rate: the encoder's rate (the rate the pipeline resamples to, and augments at).
        source_rates: rates the throughput set is stored at, one comparison each.
        max_duration: padded seconds per pipeline batch.
        num_buckets: duration buckets of the pipeline.
        rounds: interleaved rounds of the throughput comparison (one epoch of each loader per round).
        shard_size: samples per shard.
        seed: seeds the data.
    """

    cost_clips: int = 40
    cost_rounds: int = 3
    utterances: int = 200
    sample_rate: int = 16000
    source_rates: tuple[int, ...] = (16000, 24000)
    max_duration: float = 120.0
    num_buckets: int = 5
    rounds: int = 3
    shard_size: int = 50
    seed: int = 0


QUICK = AugmentSettings(cost_clips=3, cost_rounds=1, utterances=16, max_duration=40.0, num_buckets=2, rounds=1)


def write_banks(root: Path, rate: int, seed: int) -> dict[str, Path]:
    """Synthetic MUSAN-style noise folders (coloured noise, 30 s files, in WAV and in FLAC) and an RIR folder (WAV)."""
    generator, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    folders = {"noise": root / "noise", "noise_flac": root / "noise_flac", "rirs": root / "rirs"}
    for i, colour in enumerate(("white", "pink", "brown", "pink", "white")):
        wave = (0.1 * coloured_noise(30 * rate, colour, generator)).clamp(-1, 1).numpy()
        for key, fmt in (("noise", "WAV"), ("noise_flac", "FLAC")):
            folder = folders[key] / "free-sound"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"noise-{i}.{fmt.lower()}", wave, rate, format=fmt, subtype="PCM_16")
    (folders["rirs"] / "simulated").mkdir(parents=True)
    for i in range(5):
        rir = synthetic_rir(rng.uniform(0.3, 0.9), rng.uniform(0.0, 10.0), rate, generator)
        sf.write(folders["rirs"] / "simulated" / f"rir-{i}.wav", (rir / rir.abs().max()).numpy(), rate, subtype="FLOAT")
    return folders


def transform_configs(banks: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each transform as measured alone, by a label for the table."""
    return {
        "speed 0.9/1.1": {"name": "speed", "factors": [0.9, 1.1]},
        "noise, white": {"name": "noise", "colour": "white"},
        "noise, pink": {"name": "noise", "colour": "pink"},
        "noise, folder of WAV (as MUSAN)": {"name": "noise", "source": str(banks["noise"])},
        "noise, folder of FLAC": {"name": "noise", "source": str(banks["noise_flac"])},
        "reverb, synthetic RIR": {"name": "reverb"},
        "reverb, RIR folder": {"name": "reverb", "rirs": str(banks["rirs"])},
        "gain": {"name": "gain"},
        "clipping": {"name": "clipping"},
        "telephone band": {"name": "telephone"},
        "codec ulaw": {"name": "codec", "codecs": ["ulaw"]},
        "codec gsm": {"name": "codec", "codecs": ["gsm"]},
        "codec mp3": {"name": "codec", "codecs": ["mp3"]},
        "codec vorbis": {"name": "codec", "codecs": ["vorbis"]},
    }


def typical_lists(banks: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """The typical list (the verdict) and the same with reverberation on a fifth of the samples."""
    typical = [
        {"name": "speed", "p": 1.0, "factors": [0.9, 1.0, 1.1]},
        {"name": "noise", "p": 0.5, "snr_db": [10, 20], "source": str(banks["noise"])},
        {"name": "gain", "p": 0.5, "db": [-6, 6]},
    ]
    return {
        "typical": typical,
        "typical + reverb": [*typical, {"name": "reverb", "p": 0.2, "rirs": str(banks["rirs"])}],
    }


def transform_costs(settings: AugmentSettings, banks: dict[str, Path]) -> dict[str, float]:
    """CPU seconds per hour of audio of each transform (median of rounds), and of SpecAugment on the features."""
    rate = settings.sample_rate
    generator = torch.Generator().manual_seed(settings.seed)
    durations = librispeech_durations(settings.cost_clips, settings.seed)
    clips = [speech_wave(seconds, rate, generator) for seconds in durations]
    hours = sum(durations) / 3600
    steps = {label: build_step(config, label, rate) for label, config in transform_configs(banks).items()}

    def timed(label: str):
        def run() -> float:
            rng, start = random.Random(0), time.process_time()
            for clip in clips:
                steps[label].transform([clip], rate, rng)
            return time.process_time() - start

        return run

    features = LogMelFeatures(n_mels=80, sample_rate=rate)
    padded = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    feats, frames = features(padded, torch.tensor([c.numel() for c in clips]))
    masking = SpecAugment().train()

    def spec_augment() -> float:
        start = time.process_time()
        masking(feats, frames)
        return time.process_time() - start

    candidates = {label: timed(label) for label in steps} | {"SpecAugment (features, batched)": spec_augment}
    seconds = interleaved(candidates, settings.cost_rounds)
    return {label: statistics.median(values) / hours for label, values in seconds.items()}


def build_loaders(
    sets: dict[int, Path], tokenizer_dir: Path, settings: AugmentSettings, batches: int, lists: dict[str, list]
) -> dict[str, tuple[Any, DecodeCounter]]:
    """Per stored rate, a pipeline loader on 1 worker without augmentation (`<rate>/plain`) and one per augmentation
    list (`<rate>/<list>`), each with its decode counter."""
    batching = BatchingSpec(max_duration=settings.max_duration, num_buckets=settings.num_buckets)
    loaders = {}
    for rate, shards in sets.items():
        for name, chain in {"plain": None, **lists}.items():
            counter = DecodeCounter()
            module = SpeechTextDataModule(
                tokenizer=str(tokenizer_dir),
                train={"speech": SourceSpec(str(shards), 1.0, batching, counter, augment=chain)},
                sample_rate=settings.sample_rate,
                num_workers=1,
                batches_per_epoch=batches,
                seed=settings.seed,
            )
            loaders[f"{rate}/{name}"] = (module.train_dataloader(), counter)
    return loaders


def run(quick: bool) -> Outcome:
    settings = QUICK if quick else AugmentSettings()
    durations = librispeech_durations(settings.utterances, settings.seed)
    data_settings = DataSettings(max_duration=settings.max_duration, num_buckets=settings.num_buckets)
    batches = epoch_batches(durations, data_settings)
    with tempfile.TemporaryDirectory(prefix="lit_sllm_bench_augment_") as tmp, torch_threads(1):
        banks = write_banks(Path(tmp), settings.sample_rate, settings.seed)
        costs = transform_costs(settings, banks)
        sets = {
            rate: write_speech_set(Path(tmp) / f"set{rate}", durations, rate, VOCABULARY, settings.shard_size).shards
            for rate in settings.source_rates
        }
        tokenizer_dir = Path(tmp) / "tokenizer"
        build_tokenizer(VOCABULARY).save_pretrained(tokenizer_dir)
        loaders = build_loaders(sets, tokenizer_dir, settings, batches, typical_lists(banks))
        epochs: dict[str, list[Epoch]] = {name: [] for name in loaders}
        runners = {
            name: epoch_runner(loader, counter, epochs[name], settings.sample_rate)
            for name, (loader, counter) in loaders.items()
        }
        interleaved(runners, settings.rounds)
    lists = typical_lists({name: Path(f"<{name}>") for name in banks})
    return outcome(settings, batches, sum(durations) / 3600, costs, epochs, lists)


def ratios(epochs: dict[str, list[Epoch]], rate: int, name: str) -> tuple[float, float]:
    """(wall-clock, per-CPU-second) ratio of a list's loader to the plain one at a stored rate, paired by round."""
    one, plain = epochs[f"{rate}/{name}"], epochs[f"{rate}/plain"]
    wall = paired_ratio([steady_rate(e) for e in one], [steady_rate(e) for e in plain])
    return wall, paired_ratio([e.decoded / e.cpu_s for e in one], [e.decoded / e.cpu_s for e in plain])


def outcome(
    settings: AugmentSettings,
    batches: int,
    hours: float,
    costs: dict[str, float],
    epochs: dict[str, list[Epoch]],
    lists: dict[str, list[dict[str, Any]]],
) -> Outcome:
    """The per-transform table and the throughput comparisons; the verdict is the typical list's ratio of samples per
    CPU second (the work each sample costs, which waiting for a core on a shared machine does not inflate), at every
    stored rate."""
    compared = {f"{rate}/{name}": ratios(epochs, rate, name) for rate in settings.source_rates for name in lists}
    per_sample = {name: spread([1000 * e.cpu_s / e.decoded for e in one]) for name, one in epochs.items()}
    rates = {name: spread([steady_rate(e) for e in one]) for name, one in epochs.items()}
    figures = {
        "transform_cpu_s_per_audio_hour": costs,
        "audio_hours": hours,
        "samples_per_s": rates,
        "cpu_ms_per_decoded_sample": per_sample,
        "over_plain": {name: wall for name, (wall, _) in compared.items()},
        "over_plain_per_cpu_second": {name: cpu for name, (_, cpu) in compared.items()},
    }
    typical = {rate: compared[f"{rate}/typical"] for rate in settings.source_rates}
    goal = Goal(
        target=f"with the typical augmentation list the pipeline keeps >= {GOAL_RATIO}x its throughput on 1 worker",
        measured=", ".join(
            f"{rate // 1000} kHz clips {cpu:.2f}x per CPU second ({wall:.2f}x wall clock)"
            for rate, (wall, cpu) in typical.items()
        ),
        met=min(cpu for _, cpu in typical.values()) >= GOAL_RATIO,
    )
    cost_table = table(
        f"CPU seconds per hour of audio, each transform alone (p = 1), {settings.cost_clips} LibriSpeech-like clips "
        f"at {settings.sample_rate // 1000} kHz, one thread",
        ["transform", "CPU s per audio hour"],
        [[label, f"{value:.2f}"] for label, value in costs.items()],
    )
    rows = []
    for name in epochs:
        rate, _, kind = name.partition("/")
        wall, cpu = compared.get(name, (None, None))
        rows.append(
            [f"{int(rate) // 1000} kHz", kind, f"{rates[name]['median']:.1f}", f"{per_sample[name]['median']:.1f}"]
            + (["-", "-"] if wall is None else [f"{wall:.2f}x", f"{cpu:.2f}x"])
        )
    listed = "; ".join(f"{step['name']} p={step['p']}" for step in lists["typical"])
    throughput = table(
        f"Pipeline throughput on 1 worker, {settings.utterances} clips ({hours:.2f} h) resampled to "
        f"{settings.sample_rate // 1000} kHz; typical list: {listed}; medians of interleaved rounds",
        ["stored at", "augmentation", "samples/s", "CPU ms per sample", "ratio (wall clock)",
         "ratio per CPU second (the verdict)"],
        rows,
    )  # fmt: skip
    settings_dict = asdict(settings) | {"batches_per_epoch": batches, "lists": lists}
    return Outcome(settings_dict, figures, [cost_table, throughput], goal)
