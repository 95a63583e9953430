"""`lit-sllm bench data`: throughput of the streaming pipeline (`SpeechTextDataModule` over WebDataset shards)
against a plain PyTorch map-style Dataset that reads the same FLAC files from a folder and against lhotse (a
`CutSet` over the same files with `DynamicBucketingSampler`, the loader a NeMo user would bring), with 0, 1 and 2
workers, and where the pipeline's time goes.

All three loaders do the same useful work per sample: read and decode the FLAC, resample it from the source rate to
16 kHz, encode the conversation with the chat template, and pad batches with `collate`. The plain loader shuffles
with a sampler and uses a fixed batch size equal to the pipeline's mean rows per batch; lhotse buckets with the
pipeline's `max_duration` and number of buckets (`lit_sllm.bench.lhotse_data`).

Rates are steady-state: samples decoded per second once every worker has delivered its first batch, counted on
both loaders by a pass-through transform. What an epoch costs on top is reported beside them: the wait for the
first batch (workers starting; the pipeline filling its shuffle buffer and bucket pools) and the samples the
pipeline decoded into its bucket pools but had not delivered when its epoch of `batches_per_epoch` batches ended.
The comparison with lhotse is by audio seconds delivered per CPU second of the whole epoch, start-up and undelivered
samples included.
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from lit_sllm.bench.common import Goal, Outcome, interleaved, paired_ratio, spread, table
from lit_sllm.bench.lhotse_data import folder_cuts, lhotse_loader
from lit_sllm.bench.models import build_tokenizer
from lit_sllm.bench.stages import LOADER_STAGES, stage_seconds
from lit_sllm.bench.synthetic import SpeechSet, librispeech_durations, write_speech_set
from lit_sllm.data.audio import read_audio, resample
from lit_sllm.data.batching import BatchingSpec, bucket_batches, estimate_boundaries
from lit_sllm.data.collate import EncodedSample, SampleEncoder, collate
from lit_sllm.data.datamodule import SourceSpec, SpeechTextDataModule
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.data.schema import Sample
from lit_sllm.threads import torch_threads

VOCABULARY = 2000  # words of the synthetic transcripts and the tokenizer


@dataclass(frozen=True)
class DataSettings:
    """Sizes of the data benchmark.

    Attributes:
        utterances: clips in the set (LibriSpeech-like durations).
        source_rate: sample rate of the stored FLAC (24 kHz, as LibriTTS); both loaders resample to `sample_rate`.
        sample_rate: the encoder's rate.
        max_duration: padded seconds per pipeline batch.
        num_buckets: duration buckets of the pipeline.
        workers: DataLoader worker counts to measure.
        torch_threads: intra-op threads of the main process (DataLoader workers always use one).
        rounds: interleaved rounds (one epoch of every loader per round).
        shard_size: samples per shard.
        seed: seeds the data.
    """

    utterances: int = 200
    source_rate: int = 24000
    sample_rate: int = 16000
    max_duration: float = 120.0
    num_buckets: int = 5
    workers: tuple[int, ...] = (0, 1, 2)
    torch_threads: int = 1
    rounds: int = 3
    shard_size: int = 50
    seed: int = 0


QUICK = DataSettings(utterances=16, max_duration=40.0, num_buckets=2, rounds=1, shard_size=4)


class FolderDataset(Dataset):
    """The plain baseline: `<key>.flac` + `<key>.json` files in a folder, read with soundfile, one sample per index."""

    def __init__(self, folder: Path, encoder: SampleEncoder) -> None:
        self.paths = sorted(folder.glob("*.flac"))
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> EncodedSample:
        path = self.paths[index]
        meta = json.loads(path.with_suffix(".json").read_text())
        wave, rate = read_audio(path)
        wave = resample(wave, rate, self.encoder.sample_rate)  # (S,)
        sample = Sample(path.stem, meta["task"], meta["turns"], {"flac": (wave, self.encoder.sample_rate)})
        return self.encoder(sample, random.Random(index))


def epoch_batches(durations: list[float], settings: DataSettings) -> int:
    """Batches the pipeline's bucketing makes of one pass over the set: its epoch length here."""
    spec = BatchingSpec(max_duration=settings.max_duration, num_buckets=settings.num_buckets)
    boundaries = estimate_boundaries(durations, settings.num_buckets)
    return sum(1 for _ in bucket_batches(durations, spec, random.Random(0), lambda s: (s, 0), boundaries))


class DecodeCounter:
    """A sample transform that changes nothing and counts the samples it is given: every sample a loader decodes
    passes it once. One shared-memory slot per process (main, then each DataLoader worker), so workers count too."""

    def __init__(self, max_workers: int = 8) -> None:
        self.counts = torch.zeros(max_workers + 1, dtype=torch.long).share_memory_()

    def __call__(self, sample: Sample, rng: random.Random) -> Sample:
        info = get_worker_info()
        self.counts[0 if info is None else info.id + 1] += 1
        return sample

    @property
    def total(self) -> int:
        return int(self.counts.sum())


@dataclass
class Epoch:
    """One epoch of a loader.

    The steady-state window starts once every worker has delivered a batch (after the first `max(1, workers)`
    batches): a loader's start-up (starting workers, filling the pipeline's shuffle buffer and bucket pools) is
    reported apart from its rate.

    Attributes:
        first_batch_s: seconds until the first batch.
        window_s: seconds of the steady-state window.
        window_decoded: samples decoded in the window (the loader's steady work rate, counted by `DecodeCounter`).
        decoded: samples decoded in the whole epoch.
        delivered: samples delivered in batches in the whole epoch (bucketed samples left in pools at its end are
            decoded but never delivered).
        delivered_audio_s: seconds of audio (unpadded, at the encoder's rate) in the delivered batches.
        cpu_s: CPU seconds of the whole epoch, this process and its finished workers together: the work done, which
            other jobs on the machine do not inflate.
    """

    first_batch_s: float
    window_s: float
    window_decoded: int
    decoded: int
    delivered: int
    delivered_audio_s: float
    cpu_s: float


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and by its children that have ended (DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def epoch_runner(
    loader: DataLoader, counter: DecodeCounter, epochs: list[Epoch], sample_rate: int
) -> Callable[[], float]:
    """A callable that reads one epoch of `loader`, appends its `Epoch` to `epochs` and returns the window seconds."""
    warm = max(1, loader.num_workers)

    def run() -> float:
        start, cpu_before, decoded_before = time.perf_counter(), cpu_seconds(), counter.total
        first = window_start = start
        window_from, delivered, audio_samples = decoded_before, 0, 0
        for index, batch in enumerate(loader):
            now = time.perf_counter()
            first = now if index == 0 else first
            if index == warm - 1:
                window_start, window_from = now, counter.total
            delivered += batch.size
            audio_samples += int(batch.audio_lengths.sum())
        end, decoded = time.perf_counter(), counter.total  # the loader has joined its workers by now
        epoch = Epoch(first - start, end - window_start, decoded - window_from, decoded - decoded_before, delivered,
                      audio_samples / sample_rate, cpu_seconds() - cpu_before)  # fmt: skip
        epochs.append(epoch)
        return epoch.window_s

    return run


def build_loaders(
    data: SpeechSet, tokenizer_dir: Path, settings: DataSettings, batches: int
) -> dict[str, tuple[DataLoader, DecodeCounter]]:
    """`pipeline/<w>`, `plain/<w>` and `lhotse/<w>` loaders, each with its decode counter, for every worker count w."""
    formatter = ChatFormatter(build_tokenizer(VOCABULARY))
    pad_id = formatter.tokenizer.pad_token_id
    plain_collate = partial(collate, source="plain", pad_id=pad_id)
    cuts = folder_cuts(data.folder, data.folder.parent / "cuts.jsonl")
    batching = BatchingSpec(max_duration=settings.max_duration, num_buckets=settings.num_buckets)
    loaders = {}
    for workers in settings.workers:
        counter = DecodeCounter()
        module = SpeechTextDataModule(
            tokenizer=str(tokenizer_dir),
            train={"speech": SourceSpec(str(data.shards), 1.0, batching, counter)},
            sample_rate=settings.sample_rate,
            num_workers=workers,
            batches_per_epoch=batches,
            seed=settings.seed,
        )
        loaders[f"pipeline/{workers}"] = (module.train_dataloader(), counter)
        counter = DecodeCounter()
        plain = DataLoader(
            FolderDataset(data.folder, SampleEncoder(formatter, settings.sample_rate, transform=counter)),
            batch_size=max(1, round(settings.utterances / batches)),
            shuffle=True,
            num_workers=workers,
            collate_fn=plain_collate,
            prefetch_factor=2 if workers else None,
        )
        loaders[f"plain/{workers}"] = (plain, counter)
        counter = DecodeCounter()
        encoder = SampleEncoder(formatter, settings.sample_rate, transform=counter)
        lhotse = lhotse_loader(
            cuts, encoder, pad_id, settings.max_duration, settings.num_buckets, workers, settings.seed
        )
        loaders[f"lhotse/{workers}"] = (lhotse, counter)
    return loaders


def run(quick: bool) -> Outcome:
    settings = QUICK if quick else DataSettings()
    durations = librispeech_durations(settings.utterances, settings.seed)
    batches = epoch_batches(durations, settings)
    rows = max(1, round(settings.utterances / batches))
    with tempfile.TemporaryDirectory(prefix="lit_sllm_bench_data_") as tmp, torch_threads(settings.torch_threads):
        data = write_speech_set(
            Path(tmp) / "set", durations, settings.source_rate, VOCABULARY, settings.shard_size, folder_copy=True
        )
        tokenizer_dir = Path(tmp) / "tokenizer"
        build_tokenizer(VOCABULARY).save_pretrained(tokenizer_dir)
        loaders = build_loaders(data, tokenizer_dir, settings, batches)
        epochs: dict[str, list[Epoch]] = {name: [] for name in loaders}
        runners = {
            name: epoch_runner(loader, counter, epochs[name], settings.sample_rate)
            for name, (loader, counter) in loaders.items()
        }
        interleaved(runners, settings.rounds)
        stages = stage_seconds(data.shards, tokenizer_dir, settings.sample_rate, rows)
    settings_dict = asdict(settings) | {"batches_per_epoch": batches, "plain_batch_size": rows}
    return outcome(settings, settings_dict, data.seconds / 3600, epochs, stages)


def steady_rate(epoch: Epoch) -> float:
    """Samples decoded per second in the steady-state window."""
    return epoch.window_decoded / epoch.window_s


def loader_figures(epochs: list[Epoch], seconds_per_sample: float) -> dict[str, Any]:
    return {
        "samples_per_s": spread([steady_rate(e) for e in epochs]),
        "audio_s_per_s": spread([steady_rate(e) * seconds_per_sample for e in epochs]),
        "first_batch_s": spread([e.first_batch_s for e in epochs]),
        "cpu_ms_per_decoded_sample": spread([1000 * e.cpu_s / e.decoded for e in epochs]),
        "decoded_per_epoch": [e.decoded for e in epochs],
        "delivered_per_epoch": [e.delivered for e in epochs],
        "delivered_audio_s_per_epoch": [e.delivered_audio_s for e in epochs],
        "delivered_audio_s_per_cpu_s": spread([delivered_per_cpu(e) for e in epochs]),
    }


def delivered_per_cpu(epoch: Epoch) -> float:
    """Audio seconds delivered per CPU second of the whole epoch."""
    return epoch.delivered_audio_s / epoch.cpu_s


def outcome(
    settings: DataSettings, settings_dict: dict, hours: float, epochs: dict[str, list[Epoch]], stages: dict[str, float]
) -> Outcome:
    """Steady-state rates per loader, and per worker count the pipeline/plain ratios (paired by round) of steady
    samples/s and of samples per CPU second. The verdict uses samples per CPU second (the work each sample costs,
    which waiting for a core on a shared machine does not inflate); the wall-clock ratio is shown beside it. Beside
    them, the pipeline/lhotse ratio (paired by round) of audio seconds delivered per CPU second."""
    ratios, cpu_ratios, over_lhotse, decoded_over_lhotse = {}, {}, {}, {}
    for w in settings.workers:
        pipe, plain = epochs[f"pipeline/{w}"], epochs[f"plain/{w}"]
        ratios[str(w)] = paired_ratio([steady_rate(e) for e in pipe], [steady_rate(e) for e in plain])
        cpu_ratios[str(w)] = paired_ratio([e.decoded / e.cpu_s for e in pipe], [e.decoded / e.cpu_s for e in plain])
        lhotse = [delivered_per_cpu(e) for e in epochs[f"lhotse/{w}"]]
        over_lhotse[str(w)] = paired_ratio([delivered_per_cpu(e) for e in pipe], lhotse)
        decoded_lhotse = [e.decoded / e.cpu_s for e in epochs[f"lhotse/{w}"]]
        decoded_over_lhotse[str(w)] = paired_ratio([e.decoded / e.cpu_s for e in pipe], decoded_lhotse)
    loaders = {name: loader_figures(one, hours * 3600 / settings.utterances) for name, one in epochs.items()}
    per_hour = {stage: value / hours for stage, value in stages.items()}
    figures = {
        "audio_hours": hours,
        "loaders": loaders,
        "pipeline_over_plain": ratios,
        "pipeline_over_plain_per_cpu_second": cpu_ratios,
        "pipeline_over_lhotse_delivered_audio_per_cpu_second": over_lhotse,
        "pipeline_over_lhotse_per_cpu_second": decoded_over_lhotse,
        "stage_s_per_audio_hour": per_hour,
    }
    goal = Goal(
        target="streaming pipeline at least as fast as the plain folder loader at 0, 1 and 2 workers",
        measured=", ".join(
            f"{w} workers {cpu_ratios[w]:.2f}x per CPU second ({r:.2f}x wall clock)" for w, r in ratios.items()
        ),
        met=min(cpu_ratios.values()) >= 1.0,
    )
    tables = [
        throughput_table(loaders, ratios, cpu_ratios, hours, settings),
        lhotse_table(loaders, over_lhotse, decoded_over_lhotse),
    ]
    tables.append(stage_table(per_hour))
    return Outcome(settings_dict, figures, tables, goal)


def throughput_table(
    loaders: dict[str, dict],
    ratios: dict[str, float],
    cpu_ratios: dict[str, float],
    hours: float,
    settings: DataSettings,
) -> dict:
    rows = []
    for workers, ratio in ratios.items():
        pipe, plain = loaders[f"pipeline/{workers}"], loaders[f"plain/{workers}"]
        unused = statistics.median(d - n for d, n in zip(pipe["decoded_per_epoch"], pipe["delivered_per_epoch"]))
        rows.append(
            [workers]
            + [f"{one['samples_per_s']['median']:.1f}" for one in (pipe, plain)]
            + [f"{one['audio_s_per_s']['median']:.0f}" for one in (pipe, plain)]
            + [f"{ratio:.2f}x", f"{cpu_ratios[workers]:.2f}x"]
            + [f"{one['first_batch_s']['median']:.1f}" for one in (pipe, plain)]
            + [f"{unused:.0f}"]
        )
    columns = ["workers", "pipeline samples/s", "plain samples/s", "pipeline audio s/s", "plain audio s/s"]
    columns += ["ratio (wall clock)", "ratio per CPU second (the verdict)", "pipeline first batch (s)"]
    columns += ["plain first batch (s)"]
    columns += ["pipeline samples decoded, not delivered"]
    title = (
        f"Steady-state throughput, {settings.utterances} LibriSpeech-like clips ({hours:.2f} h) of "
        f"{settings.source_rate // 1000} kHz FLAC resampled to {settings.sample_rate // 1000} kHz; one epoch per "
        "loader per round, medians of rounds"
    )
    return table(title, columns, rows)


def lhotse_table(loaders: dict[str, dict], over_lhotse: dict[str, float], decoded: dict[str, float]) -> dict:
    rows = []
    for workers, ratio in over_lhotse.items():
        names = [f"{loader}/{workers}" for loader in ("pipeline", "plain", "lhotse")]
        rows.append(
            [workers]
            + [f"{loaders[name]['delivered_audio_s_per_cpu_s']['median']:.0f}" for name in names]
            + [f"{ratio:.2f}x", f"{decoded[workers]:.2f}x", f"{loaders[names[2]]['first_batch_s']['median']:.1f}"]
        )
    columns = ["workers", "pipeline audio s per CPU s", "plain audio s per CPU s", "lhotse audio s per CPU s"]
    columns += ["pipeline / lhotse", "pipeline / lhotse, samples decoded per CPU s", "lhotse first batch (s)"]
    title = (
        "Audio seconds delivered per CPU second of the whole epoch (start-up and undelivered samples included), "
        "against lhotse (CutSet over the same FLAC files, DynamicBucketingSampler with the same max_duration and "
        "buckets, cut.resample); medians of rounds, ratio paired by round"
    )
    return table(title, columns, rows)


def stage_table(per_hour: dict[str, float]) -> dict:
    loader_total = sum(per_hour[stage] for stage in LOADER_STAGES)
    rows = [[stage, f"{per_hour[stage]:.1f}", f"{per_hour[stage] / loader_total:.0%}"] for stage in LOADER_STAGES]
    rows.append(["features (in the model, on the accelerator)", f"{per_hour['features']:.1f}", "-"])
    columns = ["stage (one process)", "CPU s per audio hour", "share of the loader's work"]
    return table("Where the pipeline's time goes", columns, rows)
