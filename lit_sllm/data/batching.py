"""Grouping samples into batches: duration bucketing for speech, fixed sizes for text, weighted source mixing.

Bucketing keeps clips of similar length together so that little of a batch is padding. A batch's cost is its
padded size: rows x longest item, in seconds of audio (`max_duration`) and in tokens (`max_tokens`).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
Measure = Callable[[T], tuple[float, int]]  # item -> (seconds of audio, tokens)
MAX_ROWS = 1024  # row cap when no limit binds (text-only items under a duration limit: set batch_size too)


@dataclass
class BatchingSpec:
    """How one source is batched.

    Attributes:
        batch_size: samples per batch. Alone it gives fixed-size batches (text-only sources); with `max_duration`
            or `max_tokens` it caps the rows of a bucketed batch.
        max_duration: padded seconds of audio per batch (rows x longest sample); turns duration bucketing on.
        max_tokens: padded tokens per batch (rows x longest token sequence); turns bucketing on.
        num_buckets: duration buckets when `boundaries` are estimated from the data.
        boundaries: bucket edges in seconds, ascending; estimated from sample durations when null.
        bucket_buffer: batches' worth of samples a bucket collects before it releases one, drawn at random; more
            gives more varied batches at the cost of memory.
    """

    batch_size: int | None = None
    max_duration: float | None = None
    max_tokens: int | None = None
    num_buckets: int = 30
    boundaries: list[float] | None = None
    bucket_buffer: int = 2

    def __post_init__(self) -> None:
        if self.batch_size is None and self.max_duration is None and self.max_tokens is None:
            raise ValueError(
                "A batching spec needs batch_size (fixed-size batches) or max_duration/max_tokens (bucketing); "
                "set e.g. `batching: {max_duration: 120}` for speech or `batching: {batch_size: 8}` for text."
            )
        for name in ("batch_size", "max_duration", "max_tokens", "num_buckets", "bucket_buffer"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"batching.{name} must be > 0, got {value}.")

    @property
    def bucketing(self) -> bool:
        return self.max_duration is not None or self.max_tokens is not None

    def fits(self, rows: int, longest_seconds: float, longest_tokens: int) -> bool:
        """Whether a batch of `rows` padded to the given longest item stays within every limit."""
        return (
            rows <= (self.batch_size or MAX_ROWS)
            and (self.max_duration is None or rows * longest_seconds <= self.max_duration + 1e-9)
            and (self.max_tokens is None or rows * longest_tokens <= self.max_tokens)
        )


def estimate_boundaries(durations: Sequence[float], num_buckets: int) -> list[float]:
    """Bucket edges at the duration quantiles, so that each bucket gets about the same number of samples."""
    if not durations:
        return []
    ordered = sorted(durations)
    edges = {ordered[min(len(ordered) - 1, math.ceil(i * len(ordered) / num_buckets))] for i in range(1, num_buckets)}
    return sorted(edges)


def fixed_batches(items: Iterable[T], batch_size: int) -> Iterator[list[T]]:
    """Consecutive batches of `batch_size` items; the last may be smaller."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _take_batch(pool: list[tuple[T, float, int]], spec: BatchingSpec, rng: random.Random) -> list[T]:
    """Removes and returns a random batch that fits from `pool` (it always takes at least one item)."""
    rng.shuffle(pool)
    taken, rest, longest_s, longest_t = [], [], 0.0, 0
    for entry in pool:
        seconds, tokens = max(longest_s, entry[1]), max(longest_t, entry[2])
        if not taken or spec.fits(len(taken) + 1, seconds, tokens):
            taken.append(entry)
            longest_s, longest_t = seconds, tokens
        else:
            rest.append(entry)
    pool[:] = rest
    return [entry[0] for entry in taken]


def _capacity(pool: list[tuple[T, float, int]], spec: BatchingSpec) -> int:
    """Rows a batch of the pool's longest items could hold (at least 1)."""
    longest_s, longest_t = max(e[1] for e in pool), max(e[2] for e in pool)
    limits = [spec.batch_size or MAX_ROWS]
    if spec.max_duration is not None and longest_s > 0:
        limits.append(math.floor((spec.max_duration + 1e-9) / longest_s))
    if spec.max_tokens is not None and longest_t > 0:
        limits.append(spec.max_tokens // longest_t)
    return max(1, min(limits))


def bucket_batches(
    items: Iterable[T],
    spec: BatchingSpec,
    rng: random.Random,
    measure: Measure,
    boundaries: Sequence[float] = (),
    on_oversize: Callable[[T], None] | None = None,
) -> Iterator[list[T]]:
    """Duration-bucketed batches, none over the spec's limits; every item that fits alone comes out exactly once.

    Args:
        items: the stream (finite or endless).
        spec: limits and buffer size.
        rng: draws which items of a bucket form a batch.
        measure: item -> (seconds of audio, tokens).
        boundaries: bucket edges in seconds, ascending (see `estimate_boundaries`).
        on_oversize: called with each item too big for a batch of its own; it is not batched.
    """
    pools: list[list[tuple[T, float, int]]] = [[] for _ in range(len(boundaries) + 1)]
    for item in items:
        seconds, tokens = measure(item)
        if not spec.fits(1, seconds, tokens):
            if on_oversize is not None:
                on_oversize(item)
            continue
        pool = pools[bisect.bisect_right(boundaries, seconds)]
        pool.append((item, seconds, tokens))
        if len(pool) >= spec.bucket_buffer * _capacity(pool, spec):
            yield _take_batch(pool, spec, rng)
    for pool in pools:
        while pool:
            yield _take_batch(pool, spec, rng)


def batches(
    items: Iterable[T],
    spec: BatchingSpec,
    rng: random.Random,
    measure: Measure,
    boundaries: Sequence[float] = (),
    on_oversize: Callable[[T], None] | None = None,
) -> Iterator[list[T]]:
    """Bucketed batches when the spec sets `max_duration` or `max_tokens`, fixed-size ones otherwise."""
    if spec.bucketing:
        return bucket_batches(items, spec, rng, measure, boundaries, on_oversize)
    return fixed_batches(items, spec.batch_size)


def mix(streams: dict[str, Iterator[T]], weights: dict[str, float], rng: random.Random) -> Iterator[tuple[str, T]]:
    """Endless (source name, batch) pairs, each step drawing the source with probability proportional to its weight.

    Raises:
        ValueError: when the weights do not sum to more than zero or name unknown sources.
    """
    names = list(streams)
    if set(weights) != set(names) or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"Mixing weights {weights} must be >= 0, sum to > 0 and name exactly the sources {names}.")
    chances = [weights[name] for name in names]
    while True:
        name = rng.choices(names, weights=chances)[0]
        yield name, next(streams[name])


def padding_ratio(lengths: Sequence[int]) -> float:
    """Real frames over padded frames (rows x longest) of a batch: 1.0 means no padding."""
    return sum(lengths) / (len(lengths) * max(lengths)) if lengths and max(lengths) > 0 else 1.0
