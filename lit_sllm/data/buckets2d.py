"""Where a source's buckets come from: its explicit edges, or edges estimated from a scan of its shards' metadata,
in one dimension (duration) or two (duration, then text tokens within each duration bucket).

Duration edges need only the `duration` field. Token counts need the encoded conversation, which the source's
transform may change (MTBI draws a task and its answer each time), so the scanned samples are encoded through the
source's own encoder with silence of the stated duration standing in for their audio: nothing is decoded.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence

import numpy as np
import torch

from lit_sllm.data.batching import BatchingSpec, BucketGrid, estimate_boundaries
from lit_sllm.data.collate import SampleEncoder
from lit_sllm.data.pipeline import DataTally, ShardInfo, peek_durations, read_shard
from lit_sllm.data.schema import Sample, SchemaError, audio_part_names, parse_meta

log = logging.getLogger(__name__)


def padding_edges(values: Sequence[int], count: int, candidates: int = 256) -> list[int]:
    """Integer edges that split `values` into `count` buckets with the least padding, the sum over buckets of
    (bucket's largest value - value), by dynamic programming over at most `candidates` cut points.

    Equal-count quantiles (`estimate_boundaries`, lhotse's bins) pad a long tail badly: the last bucket spans from
    its quantile to the largest value. No kept library places edges for padding, hence this function.
    """
    ordered = sorted(int(v) for v in values)
    if count <= 1 or not ordered:
        return []
    cuts = sorted(set(ordered))
    if len(cuts) > candidates:
        cuts = sorted({ordered[i * (len(ordered) - 1) // (candidates - 1)] for i in range(candidates)})
    groups = np.searchsorted(cuts, ordered)  # group g holds the values in (cuts[g-1], cuts[g]]
    tops = np.asarray(cuts, dtype=np.float64)
    counts = np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=len(cuts)))])
    sums = np.concatenate([[0], np.cumsum(np.bincount(groups, weights=ordered, minlength=len(cuts)))])
    n, buckets = len(cuts), min(count, len(cuts))
    best = np.full((buckets + 1, n + 1), np.inf)
    start = np.zeros((buckets + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for b in range(1, buckets + 1):
        for j in range(b, n + 1):
            i = np.arange(b - 1, j)  # the bucket holds groups i..j-1, padded to tops[j-1]
            cost = best[b - 1, i] + (counts[j] - counts[i]) * tops[j - 1] - (sums[j] - sums[i])
            k = int(np.argmin(cost))
            best[b, j], start[b, j] = cost[k], i[k]
    edges, j = [], n
    for b in range(buckets, 0, -1):
        j = int(start[b, j])
        if j > 0:
            edges.append(cuts[j - 1] + 1)
    return sorted(edges)


def estimate_grid(
    measures: Sequence[tuple[float, int]], num_buckets: int, token_buckets: int, durations: list[float] | None = None
) -> BucketGrid:
    """Duration edges at the duration quantiles (unless given), and token edges placed for the least text padding
    (`padding_edges`) over all measured samples, the same in every duration bucket.

    One set of token edges, fitted on every sample, suits both kinds of source: answers that do not depend on the
    audio's length (MTBI) get well-estimated edges, and transcripts that do (ASR) leave the cells they never reach
    empty, which costs nothing.
    """
    if durations is None:
        durations = estimate_boundaries([seconds for seconds, _ in measures], num_buckets)
    if token_buckets <= 1:
        return BucketGrid(durations)
    edges = padding_edges([tokens for _, tokens in measures], token_buckets)
    return BucketGrid(durations, [list(edges) for _ in range(len(durations) + 1)])


class Silence:
    """Views of one zero buffer, grown as needed: filling a fresh tensor per scanned sample would cost more than
    encoding its conversation."""

    def __init__(self) -> None:
        self.buffer = torch.zeros(0)

    def __call__(self, length: int) -> torch.Tensor:
        if length > self.buffer.numel():
            self.buffer = torch.zeros(max(length, 2 * self.buffer.numel()))
        return self.buffer[:length]  # (length,)


def silent_sample(key: str, meta: dict, rate: int, silence: Silence, source: str = "") -> Sample:
    """The sample that validated metadata describe, with silence of its stated duration in place of its audio.

    Raises:
        ValueError: when the metadata give no duration.
    """
    if meta.get("duration") is None:
        raise ValueError(f"sample {key} has no duration in its metadata")
    names = list(dict.fromkeys(audio_part_names(meta)))
    clip = silence(round(meta["duration"] * rate / max(1, len(names))))
    return Sample(
        key, meta["task"], meta["turns"], {name: (clip, rate) for name in names}, meta["transcript"],
        meta["words"], meta["duration"], meta["responses"], source, meta["prompts"],
    )  # fmt: skip


def scan_measures(
    shards: Sequence[ShardInfo], encoder: SampleEncoder, limit: int, seed: int = 0
) -> list[tuple[float, int]]:
    """(seconds, tokens) of up to `limit` samples from the first shards, from metadata alone.

    Samples without a `duration`, with bad metadata, or that the source's transform refuses are left out (they are
    skipped and counted in training as well); how many is logged.
    """
    rng, measures, left_out, silence = random.Random(seed), [], 0, Silence()
    raws = (raw for shard in shards for raw in read_shard(shard.url, DataTally(warn_limit=0)))
    for raw in raws:
        try:
            meta = parse_meta(json.loads(raw.get("json", b"")), shard=raw["__url__"], key=raw["__key__"])
            sample = silent_sample(raw["__key__"], meta, encoder.sample_rate, silence, raw["__url__"])
            measures.append(encoder(sample, rng).measure())
        except (SchemaError, ValueError, KeyError, UnicodeDecodeError) as err:
            left_out += 1
            log.debug("Token scan left out %s: %s", raw["__key__"], err)
        if len(measures) >= limit:
            break
    if left_out:
        log.info("Token scan of %s: %d samples measured, %d left out.", shards[0].url, len(measures), left_out)
    return measures


def source_grid(
    name: str, spec: BatchingSpec, shards: Sequence[ShardInfo], encoder: SampleEncoder, scan: int
) -> BucketGrid:
    """The buckets of one source: its explicit edges where given, the rest estimated from `scan` samples."""
    if not spec.bucketing:
        return BucketGrid([])
    two_d = spec.token_buckets > 1 or spec.token_boundaries is not None
    if spec.boundaries is not None and (not two_d or spec.token_boundaries is not None):
        return spec.grid()
    if not two_d:
        durations = peek_durations(shards, scan)
        if not durations:
            log.warning("%s: no sample durations in the metadata; bucketing with a single bucket.", name)
        return BucketGrid(estimate_boundaries(durations, spec.num_buckets))
    measures = scan_measures(shards, encoder, scan)
    if not measures:
        log.warning("%s: no sample could be measured from the metadata; bucketing with a single bucket.", name)
    given = sorted(spec.boundaries) if spec.boundaries is not None else None
    return estimate_grid(measures, spec.num_buckets, spec.token_buckets, given)
