"""`lit-sllm bench padding`: how much of each batch is real audio, for our duration bucketing, naive fixed-size
batching and lhotse's `DynamicBucketingSampler` (NeMo's sampler), on the same LibriSpeech-like durations and the same
max batch duration (rows x longest clip, in seconds).

Padding efficiency is real audio seconds over padded seconds (rows x longest clip) summed over an epoch; batches per
hour of audio is how many optimizer steps an hour of speech costs (fewer means fuller batches).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from lit_sllm.bench.common import Goal, Outcome, table
from lit_sllm.bench.synthetic import librispeech_durations
from lit_sllm.data.batching import BatchingSpec, bucket_batches, estimate_boundaries, fixed_batches

GOAL_EFFICIENCY = 0.97
DURATION_SCAN = 2000  # SpeechTextDataModule's default number of durations read to place bucket edges


@dataclass(frozen=True)
class PaddingSettings:
    """Sizes of the padding benchmark.

    Attributes:
        utterances: clips in the epoch (LibriSpeech train-clean-100 has 28,539).
        max_duration: padded seconds per batch, the same limit for every batcher.
        num_buckets: duration buckets for both bucketing samplers.
        seed: seeds the durations and the samplers.
    """

    utterances: int = 28539
    max_duration: float = 400.0
    num_buckets: int = 30
    seed: int = 0


QUICK = PaddingSettings(utterances=300, max_duration=120.0, num_buckets=8)


def ours(durations: list[float], settings: PaddingSettings) -> list[list[float]]:
    """Batches of `lit_sllm.data.batching.bucket_batches`, edges estimated as the DataModule does."""
    spec = BatchingSpec(max_duration=settings.max_duration, num_buckets=settings.num_buckets)
    boundaries = estimate_boundaries(durations[:DURATION_SCAN], settings.num_buckets)
    rng = random.Random(settings.seed)
    return list(bucket_batches(durations, spec, rng, lambda seconds: (seconds, 0), boundaries))


def fixed_size(durations: list[float], settings: PaddingSettings) -> list[list[float]]:
    """Naive batching: a fixed batch size small enough that a batch of the longest clips fits the limit."""
    batch_size = max(1, math.floor(settings.max_duration / max(durations)))
    return list(fixed_batches(durations, batch_size))


def lhotse_dynamic(durations: list[float], settings: PaddingSettings) -> list[list[float]]:
    """Batches of lhotse's `DynamicBucketingSampler` over cuts that carry only a duration (no audio)."""
    try:
        from lhotse import CutSet, MonoCut
        from lhotse.dataset import DynamicBucketingSampler
    except ImportError as err:
        raise ImportError(
            "The padding benchmark compares against lhotse, which is not installed: pip install 'lit-sllm[bench]'."
        ) from err
    cuts = CutSet.from_cuts(
        MonoCut(id=f"c{i}", start=0.0, duration=seconds, channel=0) for i, seconds in enumerate(durations)
    )
    with warnings.catch_warnings():  # it warns that an in-memory CutSet saves no memory, which does not matter here
        warnings.simplefilter("ignore", UserWarning)
        sampler = DynamicBucketingSampler(
            cuts, max_duration=settings.max_duration, num_buckets=settings.num_buckets, shuffle=True, seed=settings.seed
        )
        return [[cut.duration for cut in batch] for batch in sampler]


SAMPLERS: dict[str, Callable[[list[float], PaddingSettings], list[list[float]]]] = {
    "lit_sllm": ours,
    "fixed_size": fixed_size,
    "lhotse": lhotse_dynamic,
}


def batch_figures(batches: list[list[float]], seconds_to_plan: float) -> dict[str, float]:
    """Padding efficiency, batches per hour of audio, mean rows and largest padded size of an epoch's batches."""
    real = sum(sum(batch) for batch in batches)
    padded = [len(batch) * max(batch) for batch in batches]
    return {
        "padding_efficiency": real / sum(padded),
        "batches": len(batches),
        "batches_per_hour": len(batches) / (real / 3600),
        "mean_rows": sum(len(batch) for batch in batches) / len(batches),
        "largest_padded_seconds": max(padded),
        "clips": sum(len(batch) for batch in batches),
        "seconds_to_plan": seconds_to_plan,
    }


def run(quick: bool) -> Outcome:
    settings = QUICK if quick else PaddingSettings()
    durations = librispeech_durations(settings.utterances, settings.seed)
    figures: dict[str, Any] = {"audio_hours": sum(durations) / 3600}
    for name, sampler in SAMPLERS.items():
        start = time.perf_counter()
        batches = sampler(durations, settings)
        figures[name] = batch_figures(batches, time.perf_counter() - start)
    efficiency = {name: figures[name]["padding_efficiency"] for name in SAMPLERS}
    goal = Goal(
        target=f"padding efficiency >= {GOAL_EFFICIENCY} and not below lhotse",
        measured=", ".join(f"{name} {value:.3f}" for name, value in efficiency.items()),
        met=efficiency["lit_sllm"] >= GOAL_EFFICIENCY and efficiency["lit_sllm"] >= efficiency["lhotse"],
    )
    rows = [
        [name, f"{figures[name]['padding_efficiency']:.3f}", f"{figures[name]['batches_per_hour']:.2f}",
         f"{figures[name]['mean_rows']:.1f}", f"{figures[name]['seconds_to_plan']:.2f}"]
        for name in SAMPLERS
    ]  # fmt: skip
    columns = ["batcher", "padding efficiency", "batches per hour of audio", "mean rows", "s to plan the epoch"]
    title = (
        f"{settings.utterances} LibriSpeech-like clips ({figures['audio_hours']:.1f} h), at most "
        f"{settings.max_duration:.0f} padded seconds per batch, {settings.num_buckets} buckets"
    )
    return Outcome(asdict(settings), figures, [table(title, columns, rows)], goal)
