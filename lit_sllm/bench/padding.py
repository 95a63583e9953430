"""`lit-sllm bench padding`: how much of each batch is real audio and real text, for our duration bucketing, our
two-dimensional (duration x text tokens) bucketing, naive fixed-size batching and lhotse's `DynamicBucketingSampler`
(NeMo's sampler), on the same LibriSpeech-like durations with MTBI-like answer lengths and the same max batch
duration (rows x longest clip, in seconds).

Padding efficiency is real over padded (rows x longest item) summed over an epoch, for audio seconds and for text
tokens; batches per hour of audio is how many optimizer steps an hour of speech costs (fewer means fuller batches).
Bucketing holds samples in its bucket pools until a batch is released; the peak it held is reported, because in the
pipeline those are decoded clips in a worker's memory. lhotse 1.33 buckets by one measure only (NeMo builds its 2-D
buckets on top of lhotse's constraint classes), so it is shown with duration buckets.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from lit_sllm.bench.common import Goal, Outcome, table
from lit_sllm.bench.synthetic import librispeech_durations, mtbi_token_lengths
from lit_sllm.data.batching import BatchingSpec, bucket_batches, fixed_batches
from lit_sllm.data.buckets2d import estimate_grid

GOAL_EFFICIENCY = 0.97
GOAL_TOKEN_EFFICIENCY = 0.9
GOAL_AUDIO_LOSS = 0.01
DURATION_SCAN = 2000  # SpeechTextDataModule's default number of samples read to place bucket edges
Item = tuple[float, int]  # (seconds, text tokens)


@dataclass(frozen=True)
class PaddingSettings:
    """Sizes of the padding benchmark.

    Attributes:
        utterances: clips in the epoch (LibriSpeech train-clean-100 has 28,539).
        max_duration: padded seconds per batch, the same limit for every batcher.
        max_tokens: padded text tokens per batch, for our two bucketers (lhotse and fixed size have no such limit).
        num_buckets: duration buckets for every bucketing sampler.
        token_buckets: text-token buckets within each duration bucket, for the 2-D bucketer.
        bucket_buffer_2d: the 2-D bucketer's `bucket_buffer`: 1, since ten times as many buckets would otherwise hold
            ten times as many samples (1-D keeps the default 2; 1 gives 2-D the same efficiencies here).
        seed: seeds the lengths and the samplers.
    """

    utterances: int = 28539
    max_duration: float = 400.0
    max_tokens: int = 6000
    num_buckets: int = 30
    token_buckets: int = 10
    bucket_buffer_2d: int = 1
    seed: int = 0


QUICK = PaddingSettings(utterances=300, max_duration=120.0, max_tokens=2000, num_buckets=8, token_buckets=3)


class HeldCounter:
    """Counts items taken from a stream, so that items taken minus items batched is what a sampler holds."""

    def __init__(self, items: Iterable[Item]) -> None:
        self.items, self.taken = items, 0

    def __iter__(self) -> Iterator[Item]:
        for item in self.items:
            self.taken += 1
            yield item


def bucketed(
    items: list[Item], settings: PaddingSettings, token_buckets: int, bucket_buffer: int
) -> tuple[list[list[Item]], int]:
    """Batches of `bucket_batches` with edges estimated as the DataModule does, and the peak items held."""
    spec = BatchingSpec(max_duration=settings.max_duration, max_tokens=settings.max_tokens, bucket_buffer=bucket_buffer)
    grid = estimate_grid(items[:DURATION_SCAN], settings.num_buckets, token_buckets)
    stream, batches, delivered, held = HeldCounter(items), [], 0, 0
    for batch in bucket_batches(stream, spec, random.Random(settings.seed), lambda item: item, grid):
        batches.append(batch)
        delivered += len(batch)
        held = max(held, stream.taken - delivered + len(batch))
    return batches, held


def ours(items: list[Item], settings: PaddingSettings) -> tuple[list[list[Item]], int]:
    """Duration buckets (one dimension)."""
    return bucketed(items, settings, 1, BatchingSpec.bucket_buffer)


def ours_2d(items: list[Item], settings: PaddingSettings) -> tuple[list[list[Item]], int]:
    """Duration x text-token buckets."""
    return bucketed(items, settings, settings.token_buckets, settings.bucket_buffer_2d)


def fixed_size(items: list[Item], settings: PaddingSettings) -> tuple[list[list[Item]], int]:
    """Naive batching: a fixed batch size small enough that a batch of the longest clips fits the limit."""
    batch_size = max(1, math.floor(settings.max_duration / max(seconds for seconds, _ in items)))
    return list(fixed_batches(items, batch_size)), batch_size


def lhotse_dynamic(items: list[Item], settings: PaddingSettings) -> tuple[list[list[Item]], int | None]:
    """Batches of lhotse's `DynamicBucketingSampler` over cuts that carry only a duration (no audio); its buffer holds
    cut descriptions only (audio is loaded after sampling), so no held count is reported."""
    try:
        from lhotse import CutSet, MonoCut
        from lhotse.dataset import DynamicBucketingSampler
    except ImportError as err:
        raise ImportError(
            "The padding benchmark compares against lhotse, which is not installed: pip install 'lit-sllm[bench]'."
        ) from err
    cuts = CutSet.from_cuts(
        MonoCut(id=f"c{i}", start=0.0, duration=seconds, channel=0) for i, (seconds, _) in enumerate(items)
    )
    with warnings.catch_warnings():  # it warns that an in-memory CutSet saves no memory, which does not matter here
        warnings.simplefilter("ignore", UserWarning)
        sampler = DynamicBucketingSampler(
            cuts, max_duration=settings.max_duration, num_buckets=settings.num_buckets, shuffle=True, seed=settings.seed
        )
        return [[items[int(cut.id[1:])] for cut in batch] for batch in sampler], None


SAMPLERS: dict[str, Callable[[list[Item], PaddingSettings], tuple[list[list[Item]], int | None]]] = {
    "lit_sllm": ours,
    "lit_sllm 2-D": ours_2d,
    "fixed_size": fixed_size,
    "lhotse": lhotse_dynamic,
}


def batch_figures(batches: list[list[Item]], held: int | None, seconds_to_plan: float) -> dict[str, Any]:
    """Audio and token padding efficiency, batches per hour of audio, rows, largest padded sizes, peak held."""
    real = sum(seconds for batch in batches for seconds, _ in batch)
    padded = [len(batch) * max(seconds for seconds, _ in batch) for batch in batches]
    tokens = sum(count for batch in batches for _, count in batch)
    padded_tokens = [len(batch) * max(count for _, count in batch) for batch in batches]
    return {
        "padding_efficiency": real / sum(padded),
        "token_padding_efficiency": tokens / sum(padded_tokens),
        "batches": len(batches),
        "batches_per_hour": len(batches) / (real / 3600),
        "mean_rows": sum(len(batch) for batch in batches) / len(batches),
        "largest_padded_seconds": max(padded),
        "largest_padded_tokens": max(padded_tokens),
        "clips": sum(len(batch) for batch in batches),
        "peak_held": held,
        "seconds_to_plan": seconds_to_plan,
    }


def verdict(figures: dict[str, Any]) -> Goal:
    audio = {name: figures[name]["padding_efficiency"] for name in SAMPLERS}
    tokens_2d, audio_loss = (
        figures["lit_sllm 2-D"]["token_padding_efficiency"],
        audio["lit_sllm"] - audio["lit_sllm 2-D"],
    )
    return Goal(
        target=(
            f"audio padding efficiency >= {GOAL_EFFICIENCY} and not below lhotse; 2-D token padding efficiency >= "
            f"{GOAL_TOKEN_EFFICIENCY} losing <= {GOAL_AUDIO_LOSS} of audio efficiency against 1-D"
        ),
        measured=", ".join(f"{name} {value:.3f}" for name, value in audio.items())
        + f"; tokens 1-D {figures['lit_sllm']['token_padding_efficiency']:.3f}, 2-D {tokens_2d:.3f}"
        + f" (audio {round(-audio_loss, 4) + 0.0:+.4f} against 1-D)",
        met=audio["lit_sllm"] >= GOAL_EFFICIENCY
        and audio["lit_sllm"] >= audio["lhotse"]
        and tokens_2d >= GOAL_TOKEN_EFFICIENCY
        and audio_loss <= GOAL_AUDIO_LOSS,
    )


def run(quick: bool) -> Outcome:
    settings = QUICK if quick else PaddingSettings()
    durations = librispeech_durations(settings.utterances, settings.seed)
    items = list(zip(durations, mtbi_token_lengths(settings.utterances, settings.seed)))
    figures: dict[str, Any] = {"audio_hours": sum(durations) / 3600}
    for name, sampler in SAMPLERS.items():
        start = time.perf_counter()
        batches, held = sampler(items, settings)
        figures[name] = batch_figures(batches, held, time.perf_counter() - start)
    rows = [
        [name, f"{one['padding_efficiency']:.3f}", f"{one['token_padding_efficiency']:.3f}",
         f"{one['batches_per_hour']:.2f}", f"{one['mean_rows']:.1f}", f"{one['largest_padded_tokens']:,}",
         "-" if one["peak_held"] is None else f"{one['peak_held']:,}", f"{one['seconds_to_plan']:.2f}"]
        for name, one in ((name, figures[name]) for name in SAMPLERS)
    ]  # fmt: skip
    columns = ["batcher", "audio padding efficiency", "token padding efficiency", "batches per hour of audio"]
    columns += ["mean rows", "largest padded tokens", "peak samples held", "s to plan the epoch"]
    title = (
        f"{settings.utterances} LibriSpeech-like clips ({figures['audio_hours']:.1f} h) with MTBI-like answers, at "
        f"most {settings.max_duration:.0f} padded seconds per batch (and {settings.max_tokens:,} padded tokens for "
        f"lit_sllm), {settings.num_buckets} duration buckets (x {settings.token_buckets} token buckets and "
        f"bucket_buffer {settings.bucket_buffer_2d} for 2-D)"
    )
    return Outcome(asdict(settings), figures, [table(title, columns, rows)], verdict(figures))
