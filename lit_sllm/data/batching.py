"""Grouping samples into batches: duration (or duration x token) bucketing for speech, fixed sizes for text, and
weighted source mixing.

Bucketing keeps clips of similar length together so that little of a batch is padding. A batch's cost is its
padded size: rows x longest item, in seconds of audio (`max_duration`) and in tokens (`max_tokens`). Two-dimensional
buckets split each duration bucket by text tokens as well, so that answers of very different lengths (MTBI's teacher
responses) do not pad each other; a bucket may also carry its own row cap (`bucket_batch_sizes`).
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
        max_tokens: padded text tokens per batch (rows x longest token sequence); turns bucketing on.
        num_buckets: duration buckets when `boundaries` are estimated from the data.
        boundaries: bucket edges in seconds, ascending; estimated from sample durations when null.
        bucket_buffer: batches' worth of samples a bucket collects before it releases one, drawn at random; more
            gives more varied batches at the cost of memory.
        token_buckets: text-token buckets within each duration bucket; above 1, samples are bucketed in two
            dimensions, (duration, tokens), so that batches pad little audio and little text. Each bucket's pool
            holds samples, so memory grows with the number of buckets: lower `bucket_buffer` or `num_buckets` if
            it matters.
        token_boundaries: per duration bucket (one row more than `boundaries`), its token edges, ascending;
            estimated from the data when null (needs `boundaries`).
        bucket_batch_sizes: per duration bucket, the most rows of each of its token buckets, as found by
            `lit-sllm data tune-batches`; caps rows on top of the other limits, and alone turns bucketing on
            (needs `boundaries`, and `token_boundaries` when `token_buckets` > 1).
    """

    batch_size: int | None = None
    max_duration: float | None = None
    max_tokens: int | None = None
    num_buckets: int = 30
    boundaries: list[float] | None = None
    bucket_buffer: int = 2
    token_buckets: int = 1
    token_boundaries: list[list[int]] | None = None
    bucket_batch_sizes: list[list[int]] | None = None

    def __post_init__(self) -> None:
        if self.batch_size is None and not self.bucketing:
            raise ValueError(
                "A batching spec needs batch_size (fixed-size batches) or max_duration/max_tokens (bucketing); "
                "set e.g. `batching: {max_duration: 120}` for speech or `batching: {batch_size: 8}` for text."
            )
        for name in ("batch_size", "max_duration", "max_tokens", "num_buckets", "bucket_buffer", "token_buckets"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"batching.{name} must be > 0, got {value}.")
        if self.token_boundaries is not None or self.bucket_batch_sizes is not None:
            self.grid()  # checks the shapes

    @property
    def bucketing(self) -> bool:
        return self.max_duration is not None or self.max_tokens is not None or self.bucket_batch_sizes is not None

    def grid(self) -> BucketGrid:
        """The buckets the spec fixes by itself (its explicit edges and sizes).

        Raises:
            ValueError: when token edges or batch sizes are given without the edges they refer to, or their shapes
                do not match.
        """
        if self.boundaries is None:
            raise ValueError(
                "batching.token_boundaries and batching.bucket_batch_sizes refer to duration buckets: set "
                "batching.boundaries too (lit-sllm data tune-batches writes all three)."
            )
        if self.token_buckets > 1 and self.token_boundaries is None and self.bucket_batch_sizes is not None:
            raise ValueError("batching.bucket_batch_sizes with token_buckets > 1 needs batching.token_boundaries.")
        return BucketGrid(sorted(self.boundaries), self.token_boundaries, self.bucket_batch_sizes)

    def fits(self, rows: int, longest_seconds: float, longest_tokens: int, max_rows: int | None = None) -> bool:
        """Whether a batch of `rows` padded to the given longest item stays within every limit (and `max_rows`)."""
        return (
            rows <= min(self.batch_size or MAX_ROWS, max_rows or MAX_ROWS)
            and (self.max_duration is None or rows * longest_seconds <= self.max_duration + 1e-9)
            and (self.max_tokens is None or rows * longest_tokens <= self.max_tokens)
        )


@dataclass
class BucketGrid:
    """Buckets in one dimension (duration) or two (duration, then text tokens within each duration bucket).

    Attributes:
        durations: duration edges in seconds, ascending: len + 1 duration buckets.
        tokens: per duration bucket, its token edges, ascending; None for duration buckets only.
        batch_sizes: per duration bucket, the most rows of each of its token buckets; None for no such cap.
    """

    durations: list[float]
    tokens: list[list[int]] | None = None
    batch_sizes: list[list[int]] | None = None

    def __post_init__(self) -> None:
        rows = len(self.durations) + 1
        self._widths = [len(edges) + 1 for edges in self.tokens] if self.tokens is not None else [1] * rows
        if len(self._widths) != rows:
            raise ValueError(
                f"batching.token_boundaries needs {rows} rows (one per duration bucket), got {len(self._widths)}."
            )
        if self.batch_sizes is not None and [len(row) for row in self.batch_sizes] != self._widths:
            raise ValueError(
                f"batching.bucket_batch_sizes must have one row per duration bucket with one size per token bucket "
                f"({self._widths} sizes), got {[len(row) for row in self.batch_sizes]}."
            )
        self._caps = [size for row in self.batch_sizes for size in row] if self.batch_sizes is not None else None
        if self._caps is not None and min(self._caps) < 1:
            raise ValueError("batching.bucket_batch_sizes must all be >= 1.")
        self._offsets = [sum(self._widths[:i]) for i in range(rows)]
        self.size = sum(self._widths)

    def index(self, seconds: float, tokens: int) -> int:
        """The bucket of an item; edges belong to the bucket above them."""
        row = bisect.bisect_right(self.durations, seconds)
        column = bisect.bisect_right(self.tokens[row], tokens) if self.tokens is not None else 0
        return self._offsets[row] + column

    def cap(self, index: int) -> int | None:
        """The row cap of a bucket (None: only the spec's limits apply)."""
        return None if self._caps is None else self._caps[index]

    def cells(self) -> list[tuple[int, int]]:
        """(duration bucket, token bucket) of every bucket, in index order."""
        return [(row, column) for row, width in enumerate(self._widths) for column in range(width)]


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


def _take_batch(pool: list[tuple[T, float, int]], spec: BatchingSpec, rng: random.Random, cap: int | None) -> list[T]:
    """Removes and returns a random batch that fits from `pool` (it always takes at least one item)."""
    rng.shuffle(pool)
    taken, rest, longest_s, longest_t = [], [], 0.0, 0
    for entry in pool:
        seconds, tokens = max(longest_s, entry[1]), max(longest_t, entry[2])
        if not taken or spec.fits(len(taken) + 1, seconds, tokens, cap):
            taken.append(entry)
            longest_s, longest_t = seconds, tokens
        else:
            rest.append(entry)
    pool[:] = rest
    return [entry[0] for entry in taken]


def _capacity(pool: list[tuple[T, float, int]], spec: BatchingSpec, cap: int | None) -> int:
    """Rows a batch of the pool's longest items could hold (at least 1)."""
    longest_s, longest_t = max(e[1] for e in pool), max(e[2] for e in pool)
    limits = [spec.batch_size or MAX_ROWS, cap or MAX_ROWS]
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
    boundaries: Sequence[float] | BucketGrid = (),
    on_oversize: Callable[[T], None] | None = None,
) -> Iterator[list[T]]:
    """Bucketed batches, none over the spec's limits; every item that fits alone comes out exactly once.

    Args:
        items: the stream (finite or endless).
        spec: limits and buffer size.
        rng: draws which items of a bucket form a batch.
        measure: item -> (seconds of audio, tokens).
        boundaries: duration edges in seconds, ascending (see `estimate_boundaries`), or a `BucketGrid` of one or
            two dimensions with optional per-bucket row caps.
        on_oversize: called with each item too big for a batch of its own; it is not batched.
    """
    grid = boundaries if isinstance(boundaries, BucketGrid) else BucketGrid(sorted(boundaries))
    pools: list[list[tuple[T, float, int]]] = [[] for _ in range(grid.size)]
    for item in items:
        seconds, tokens = measure(item)
        if not spec.fits(1, seconds, tokens):
            if on_oversize is not None:
                on_oversize(item)
            continue
        index = grid.index(seconds, tokens)
        pool, cap = pools[index], grid.cap(index)
        pool.append((item, seconds, tokens))
        if len(pool) >= spec.bucket_buffer * _capacity(pool, spec, cap):
            yield _take_batch(pool, spec, rng, cap)
    for index, pool in enumerate(pools):
        while pool:
            yield _take_batch(pool, spec, rng, grid.cap(index))


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
