"""Two-dimensional buckets (duration, then text tokens): edges from the data, per-bucket row caps, padding."""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter

import pytest
from data_helpers import make_tokenizer, speech_sample, write_shard

from lit_sllm.data import SourceSpec, SpeechTextDataModule
from lit_sllm.data.batching import BatchingSpec, BucketGrid, bucket_batches, estimate_boundaries
from lit_sllm.data.buckets2d import estimate_grid, padding_edges


def lengths(count: int, seed: int = 0) -> list[tuple[float, int]]:
    """(seconds, tokens): durations 1-20 s, answers 5-200 tokens whatever the duration (MTBI-like)."""
    rng = random.Random(seed)
    return [(round(rng.uniform(1, 20), 2), int(rng.lognormvariate(3.5, 0.7)) + 5) for _ in range(count)]


def efficiency(batches: list[list[tuple[float, int]]], axis: int) -> float:
    real = sum(item[axis] for batch in batches for item in batch)
    return real / sum(len(batch) * max(item[axis] for item in batch) for batch in batches)


def test_grid_places_items_and_checks_its_shape():
    grid = BucketGrid([5.0, 10.0], [[20], [20, 40], []], [[8, 4], [6, 3, 2], [2]])
    assert grid.size == 6 and grid.cells() == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert [grid.index(*m) for m in ((1.0, 5), (1.0, 20), (7.0, 39), (7.0, 40), (12.0, 999))] == [0, 1, 3, 4, 5]
    assert [grid.cap(i) for i in range(6)] == [8, 4, 6, 3, 2, 2]
    with pytest.raises(ValueError, match="token_boundaries needs 3 rows"):
        BucketGrid([5.0, 10.0], [[20], [20]])
    with pytest.raises(ValueError, match=r"bucket_batch_sizes must have one row per duration bucket .*\[2, 3, 1\]"):
        BucketGrid([5.0, 10.0], [[20], [20, 40], []], [[8], [6, 3, 2], [2]])
    with pytest.raises(ValueError, match="set batching.boundaries too"):
        BatchingSpec(max_duration=10.0, bucket_batch_sizes=[[4]])


def padding(values: list[int], edges: list[int]) -> int:
    buckets: dict[int, list[int]] = {}
    for value in values:
        buckets.setdefault(bisect.bisect_right(edges, value), []).append(value)
    return sum(len(b) * max(b) - sum(b) for b in buckets.values())


def test_token_edges_are_the_least_padding_split():
    rng = random.Random(0)
    values = [int(rng.lognormvariate(3.0, 0.8)) + 1 for _ in range(40)]
    found = padding_edges(values, 3)
    cuts = sorted(set(values))[1:]
    optimum = min(padding(values, list(pair)) for pair in itertools.combinations(cuts, 2))
    assert len(found) == 2 and padding(values, found) == optimum
    many = [t for _, t in lengths(4000)]
    assert padding(many, padding_edges(many, 6)) < 0.7 * padding(many, estimate_boundaries(many, 6))
    grid = estimate_grid(lengths(4000), num_buckets=4, token_buckets=3)
    assert grid.size == 12 and all(edges == grid.tokens[0] for edges in grid.tokens)


def test_two_dimensional_buckets_pad_text_far_less_and_audio_no_more():
    measures = lengths(6000, seed=1)
    spec_1d = BatchingSpec(max_duration=200.0, num_buckets=10)
    spec_2d = BatchingSpec(max_duration=200.0, num_buckets=10, token_buckets=10)
    one = estimate_grid(measures, 10, 1)
    two = estimate_grid(measures, 10, 10, durations=one.durations)
    flat = list(bucket_batches(measures, spec_1d, random.Random(0), lambda m: m, one))
    split = list(bucket_batches(measures, spec_2d, random.Random(0), lambda m: m, two))
    assert Counter(m for b in split for m in b) == Counter(measures)  # every item exactly once
    assert efficiency(split, 1) > 0.85 > efficiency(flat, 1) + 0.3
    assert efficiency(split, 0) >= efficiency(flat, 0) - 0.01


def test_bucket_caps_and_token_limits_hold_together():
    measures = lengths(3000, seed=2)
    grid = estimate_grid(measures, 3, 2)
    grid = BucketGrid(grid.durations, grid.tokens, [[5, 3], [4, 2], [3, 1]])
    spec = BatchingSpec(max_duration=60.0, max_tokens=600, token_boundaries=grid.tokens, boundaries=grid.durations)
    for batch in bucket_batches(measures, spec, random.Random(0), lambda m: m, grid):
        cell = grid.index(*batch[0])
        assert {grid.index(*m) for m in batch} == {cell} and len(batch) <= grid.cap(cell)
        assert len(batch) * max(m[0] for m in batch) <= 60.0 and len(batch) * max(m[1] for m in batch) <= 600


def test_the_data_module_buckets_by_tokens_from_a_metadata_scan(tmp_path):
    tokenizer = tmp_path / "tokenizer"
    make_tokenizer(tokenizer)
    rng = random.Random(0)
    words = "the red cat is on the box a blue dog say hello world one two three four five".split()
    samples = [
        speech_sample(f"s{i}", round(rng.uniform(0.3, 1.0), 2), transcript=" ".join(rng.choices(words, k=k)))
        for i, k in enumerate(rng.choices([2, 3, 12, 14], k=60))
    ]
    write_shard(tmp_path / "set" / "s-000000.tar", samples)
    batching = BatchingSpec(max_duration=4.0, num_buckets=2, token_buckets=2)
    source = SourceSpec(str(tmp_path / "set"), batching=batching)
    dm = SpeechTextDataModule(tokenizer=str(tokenizer), train={"s": source}, num_workers=0, batches_per_epoch=20)
    loader = dm.train_dataloader()
    grid = loader.dataset.plans["s"].grid
    assert grid.size == 4 and all(len(edges) == 1 for edges in grid.tokens)
    for batch in loader:
        tokens = batch.attention_mask.sum(dim=1).tolist()
        seconds = (batch.audio_lengths / 16000).tolist()
        assert len({grid.index(s, t) for s, t in zip(seconds, tokens)}) == 1  # one bucket per batch
