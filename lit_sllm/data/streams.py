"""The streams behind the loaders: a source's plan (shards, read config, encoder, batching), the endless mixed
training stream and the read-once eval stream.

Everything from shard reading to the padded `Batch` runs here, inside the DataLoader workers. Skip counts ride on
each batch in `batch.extras["skipped"]` ({reason: count since the previous batch of that worker}).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch.utils.data import IterableDataset

from lit_sllm.data.augment import Augmentation
from lit_sllm.data.batch import Batch
from lit_sllm.data.batching import BatchingSpec, BucketGrid, bucket_batches, fixed_batches, mix
from lit_sllm.data.collate import EncodedSample, SampleEncoder, collate
from lit_sllm.data.pipeline import DataTally, ReadConfig, ShardInfo, current_slot, finite_samples, infinite_samples
from lit_sllm.data.schema import Sample

log = logging.getLogger(__name__)
# `(sample, rng) -> samples`: an eval set's expansion of each sample into several (e.g. benchmark questions).
SampleExpansion = Callable[[Sample, random.Random], list[Sample]]


@dataclass
class SourcePlan:
    """A source or set resolved for reading: its shards, read config, encoder, batching, buckets and, for a
    training source, its augmentation; for an eval set, its sample limit and expansion."""

    name: str
    shards: list[ShardInfo]
    read: ReadConfig
    encoder: SampleEncoder
    batching: BatchingSpec
    grid: BucketGrid
    pad_id: int
    augment: Augmentation | None = None
    max_samples: int | None = None
    expand: SampleExpansion | None = None

    def batches(
        self, samples: Iterator[Sample], rng: random.Random, tally: DataTally, per_sample_seed: str | None = None
    ) -> Iterator[Batch]:
        """Encodes, batches and collates a sample stream; samples over the batch limits are counted and skipped.

        With `per_sample_seed`, each sample's transform draws from its own generator seeded by it and the sample
        key, so evaluation does not depend on how samples are spread over ranks and workers.
        """

        def rng_for(sample: Sample) -> random.Random:
            return rng if per_sample_seed is None else random.Random(f"{per_sample_seed}/{sample.key}")

        if self.expand is not None:
            samples = (item for sample in samples for item in self.expand(sample, rng_for(sample)))
        encoded = (self.encoder(sample, rng_for(sample)) for sample in samples)

        def oversize(item: EncodedSample) -> None:
            tally.skip(
                "over_batch_limit", f"{self.name}: sample {item.key} alone exceeds batching limits {item.measure()}"
            )

        if self.batching.bucketing:  # by duration (and tokens) under the limits, else a fixed number of rows
            grouped = bucket_batches(encoded, self.batching, rng, EncodedSample.measure, self.grid, oversize)
        else:
            grouped = fixed_batches(encoded, self.batching.batch_size)
        for items in grouped:
            yield collate(items, self.name, self.pad_id)


def _stamp(batch: Batch, tally: DataTally) -> Batch:
    skipped, clipped = tally.take()
    batch.extras["skipped"] = skipped
    batch.extras["clipped"] = clipped
    return batch


def _share(batches: int, workers: int, worker: int) -> int:
    """How many of `batches` handed out round-robin over `workers` fall to `worker`."""
    return batches // workers + int(worker < batches % workers)


class TrainStream(IterableDataset):
    """Endless mixed training batches; one epoch is `batches_per_epoch` batches per rank, split over workers.

    Each (epoch, rank, worker) seeds its own random stream, so ranks differ and never run dry. A resumed epoch
    (`skip` batches already trained on) continues the very sequence an uninterrupted run would have read: each worker
    rebuilds its stream from the epoch's start and passes over the batches already consumed (data work only, at most
    one epoch's worth), and worker j takes the part of worker (skip + j) mod W, so the DataLoader's round-robin order
    goes on where it stopped. Augmentation is seeded per sample instead (see `lit_sllm.data.augment`).
    """

    def __init__(
        self,
        plans: dict[str, SourcePlan],
        weights: dict[str, float],
        batches_per_epoch: int,
        seed: int,
        shuffle_buffer: int,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.plans, self.weights = plans, weights
        self.batches_per_epoch, self.seed, self.shuffle_buffer = batches_per_epoch, seed, shuffle_buffer
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        slot = current_slot(self.rank, self.world_size)
        workers, skip = slot.num_workers, min(self.skip, self.batches_per_epoch)
        part = (skip + slot.worker) % workers  # the worker whose batches this one continues
        done, share = _share(skip, workers, part), _share(self.batches_per_epoch, workers, part)
        if done:
            log.info("Resuming epoch %d: reader %s passes over the %d batches trained on", self.epoch, slot, done)
        base = f"{self.seed}/{self.epoch}/0/{slot.rank}/{part}"
        tally = DataTally()
        streams = {}
        for name, plan in self.plans.items():
            rng = random.Random(f"{base}/{name}")
            samples = infinite_samples(plan.shards, plan.read, rng, tally, self.shuffle_buffer)
            if plan.augment is not None:
                samples = plan.augment.stream(samples, f"{self.seed}/{self.epoch}/{name}")
            streams[name] = plan.batches(samples, rng, tally)
        mixed = itertools.islice(mix(streams, self.weights, random.Random(f"{base}/mix")), share)
        for index, (_, batch) in enumerate(mixed):
            if index < done:
                tally.take()  # the interrupted run counted (and logged) these skips already
                continue
            yield _stamp(batch, tally)


class EvalStream(IterableDataset):
    """One eval set, every sample exactly once across ranks and workers, in a stable order.

    The last batch of each worker is held back until its stream ends so that it carries every skip counted.
    """

    def __init__(self, plan: SourcePlan, seed: int, rank: int | None = None, world_size: int | None = None) -> None:
        self.plan, self.seed, self.rank, self.world_size = plan, seed, rank, world_size

    def __iter__(self) -> Iterator[Batch]:
        slot = current_slot(self.rank, self.world_size)
        tally = DataTally()
        rng = random.Random(f"{self.seed}/{self.plan.name}/{slot.index}")
        samples = finite_samples(self.plan.shards, self.plan.read, slot, tally, self.plan.max_samples)
        held: Batch | None = None
        for batch in self.plan.batches(samples, rng, tally, per_sample_seed=f"{self.seed}/{self.plan.name}"):
            if held is not None:
                yield _stamp(held, tally)
            held = batch
        if held is not None:
            yield _stamp(held, tally)
        elif tally.total:
            log.warning("Eval set %s (reader %s) gave no batch; skipped %s", self.plan.name, slot, dict(tally.total))
