"""`SpeechTextDataModule`: named, weighted train sources streamed endlessly; named eval sets read exactly once.

Everything from shard reading to the padded `Batch` runs inside the DataLoader workers; the loaders only move
finished batches. Skip counts ride on each batch in `batch.extras["skipped"]` ({reason: count since the previous
batch of that worker}), so the LightningModule can log them.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, IterableDataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lit_sllm.config_errors import ConfigError, load_pretrained
from lit_sllm.data.batch import Batch
from lit_sllm.data.batching import BatchingSpec, batches, estimate_boundaries, fixed_batches, mix
from lit_sllm.data.collate import EncodedSample, SampleEncoder, SampleTransform, collate
from lit_sllm.data.pipeline import (
    DataTally,
    ReadConfig,
    ShardInfo,
    Slot,
    current_slot,
    finite_samples,
    infinite_samples,
    peek_durations,
    resolve_shards,
)
from lit_sllm.data.prompts import DEFAULT_AUDIO_TOKEN, ChatFormatter
from lit_sllm.data.schema import Sample

log = logging.getLogger(__name__)
TRAIN_ON = ("assistant", "last")


@dataclass
class SourceSpec:
    """One named training source.

    Attributes:
        shards: a directory, index.json, glob, brace pattern, `pipe:` URL, or a list of them.
        weight: relative chance that a training step draws its batch from this source.
        batching: how the source is batched (duration bucketing for speech, fixed batch_size for text).
        transform: optional `(sample, rng) -> sample` hook run before encoding, given by class_path.
        train_on: "assistant" trains on every assistant turn, "last" on the final one only.
    """

    shards: str | list[str]
    weight: float = 1.0
    batching: BatchingSpec = field(default_factory=lambda: BatchingSpec(batch_size=8))
    transform: SampleTransform | None = None
    train_on: str = "assistant"


@dataclass
class EvalSetSpec:
    """One named evaluation set, read once per pass in a stable order.

    Attributes:
        shards: a directory, index.json, glob, brace pattern, `pipe:` URL, or a list of them.
        batching: how the set is batched.
        transform: optional `(sample, rng) -> sample` hook run before encoding (seeded, so repeatable).
        generate: encode prompts only, with the final answer as reference (for generation scoring).
    """

    shards: str | list[str]
    batching: BatchingSpec = field(default_factory=lambda: BatchingSpec(batch_size=8))
    transform: SampleTransform | None = None
    generate: bool = False


@dataclass
class SourcePlan:
    """A source or set resolved for reading: its shards, read config, encoder, batching and bucket edges."""

    name: str
    shards: list[ShardInfo]
    read: ReadConfig
    encoder: SampleEncoder
    batching: BatchingSpec
    boundaries: list[float]
    pad_id: int

    def batches(
        self, samples: Iterator[Sample], rng: random.Random, tally: DataTally, per_sample_seed: str | None = None
    ) -> Iterator[Batch]:
        """Encodes, batches and collates a sample stream; samples over the batch limits are counted and skipped.

        With `per_sample_seed`, each sample's transform draws from its own generator seeded by it and the sample
        key, so evaluation does not depend on how samples are spread over ranks and workers.
        """

        def rng_for(sample: Sample) -> random.Random:
            return rng if per_sample_seed is None else random.Random(f"{per_sample_seed}/{sample.key}")

        encoded = (self.encoder(sample, rng_for(sample)) for sample in samples)

        def oversize(item: EncodedSample) -> None:
            tally.skip(
                "over_batch_limit", f"{self.name}: sample {item.key} alone exceeds batching limits {item.measure()}"
            )

        for items in batches(encoded, self.batching, rng, EncodedSample.measure, self.boundaries, oversize):
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
    goes on where it stopped.
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
        samples = finite_samples(self.plan.shards, self.plan.read, slot, tally)
        held: Batch | None = None
        for batch in self.plan.batches(samples, rng, tally, per_sample_seed=f"{self.seed}/{self.plan.name}"):
            if held is not None:
                yield _stamp(held, tally)
            held = batch
        if held is not None:
            yield _stamp(held, tally)
        elif tally.total:
            log.warning("Eval set %s (reader %s) gave no batch; skipped %s", self.plan.name, slot, dict(tally.total))


class _TrainLoader(DataLoader):
    """The training loader: tells its data module when an epoch's iteration starts (to seed the stream), and is
    stateful in Lightning's sense, its state being the data module's stream position, so Lightning knows a
    mid-epoch resume continues the data exactly (no "dataloader is not resumable" warning)."""

    datamodule: SpeechTextDataModule | None = None

    def __iter__(self) -> Any:
        if self.datamodule is not None:
            self.datamodule._begin_epoch()
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return self.datamodule.state_dict() if self.datamodule is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.datamodule is not None and state_dict:
            self.datamodule.load_state_dict(state_dict)


def _identity(batch: Batch) -> Batch:
    return batch


class SpeechTextDataModule(L.LightningDataModule):
    """Named training sources mixed by weight, named val/test/predict sets, streamed from WebDataset shards.

    Args:
        tokenizer: path of the LLM's tokenizer (the CLI links it from the model config).
        train: training sources by name; each step draws one source by weight and takes one of its batches.
        val: validation sets by name; one loader each, in this order (see `val_set_names`).
        test: test sets by name; one loader each, in this order.
        predict: prediction sets by name; always encoded as prompts with references.
        sample_rate: rate (Hz) all audio is resampled to; must equal the speech encoder's.
        audio_token: placeholder string for one audio clip (must match the model's).
        max_duration: longest sample kept, in seconds of audio; a source's `batching.max_duration` lowers it.
        on_too_long: "drop" or "clip" samples longer than `max_duration` (both are counted).
        num_workers: DataLoader worker processes per loader.
        prefetch_factor: batches each worker prepares ahead (with workers only).
        pin_memory: pin batches in page-locked memory for faster host-to-GPU copies.
        seed: seeds shard draws, shuffling, bucketing and transforms.
        batches_per_epoch: training batches per rank per epoch (the training stream is endless).
        shuffle_buffer: raw samples per source held for shuffling in training.
        duration_scan: samples whose metadata durations are read to estimate bucket boundaries.
    """

    def __init__(
        self,
        tokenizer: str,
        train: dict[str, SourceSpec] | None = None,
        val: dict[str, EvalSetSpec] | None = None,
        test: dict[str, EvalSetSpec] | None = None,
        predict: dict[str, EvalSetSpec] | None = None,
        sample_rate: int = 16000,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        max_duration: float | None = 30.0,
        on_too_long: str = "drop",
        num_workers: int = 2,
        prefetch_factor: int = 2,
        pin_memory: bool = False,
        seed: int = 0,
        batches_per_epoch: int = 1000,
        shuffle_buffer: int = 256,
        duration_scan: int = 2000,
    ) -> None:
        super().__init__()
        self.tokenizer_path, self.audio_token = tokenizer, audio_token
        self.train_specs, self.val_specs = dict(train or {}), dict(val or {})
        self.test_specs, self.predict_specs = dict(test or {}), dict(predict or {})
        self.sample_rate, self.seed = sample_rate, seed
        self.read = ReadConfig(sample_rate, max_duration, on_too_long)
        self.num_workers, self.prefetch_factor, self.pin_memory = num_workers, prefetch_factor, pin_memory
        self.batches_per_epoch, self.shuffle_buffer, self.duration_scan = (
            batches_per_epoch,
            shuffle_buffer,
            duration_scan,
        )
        self._check_config()
        self._formatter: ChatFormatter | None = None
        self._train_stream: TrainStream | None = None
        self._epoch, self._consumed, self._started = 0, 0, False

    def _check_config(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"data.sample_rate must be a positive rate in Hz, got {self.sample_rate}.")
        if self.batches_per_epoch <= 0:
            raise ConfigError(f"data.batches_per_epoch must be > 0, got {self.batches_per_epoch}.")
        for name, spec in self.train_specs.items():
            if spec.train_on not in TRAIN_ON:
                raise ConfigError(f"data.train.{name}.train_on must be one of {TRAIN_ON}, got {spec.train_on!r}.")
        weights = {name: spec.weight for name, spec in self.train_specs.items()}
        if self.train_specs and (any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0):
            raise ConfigError(
                f"data.train weights {weights} must be >= 0 and sum to > 0; set data.train.<name>.weight, "
                "e.g. 0.85 for speech and 0.15 for text."
            )

    # --- names and shared pieces ------------------------------------------------------------------------------------

    @property
    def val_set_names(self) -> list[str]:
        """Names of the val sets, in the order of `val_dataloader()` (dataloader_idx -> name)."""
        return list(self.val_specs)

    @property
    def test_set_names(self) -> list[str]:
        return list(self.test_specs)

    @property
    def predict_set_names(self) -> list[str]:
        return list(self.predict_specs)

    @property
    def formatter(self) -> ChatFormatter:
        """The chat formatter on the LLM tokenizer, loaded on first use."""
        if self._formatter is None:
            self._formatter = ChatFormatter(load_tokenizer(self.tokenizer_path), self.audio_token)
        return self._formatter

    def _rank_world(self) -> tuple[int | None, int | None]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (None, None)

    def _plan(self, key: str, name: str, spec: SourceSpec | EvalSetSpec, generate: bool) -> SourcePlan:
        try:
            shards = resolve_shards(spec.shards)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"data.{key}.{name}.shards: {err}") from err
        limit = min(x for x in (self.read.max_duration, spec.batching.max_duration, float("inf")) if x is not None)
        read = ReadConfig(self.sample_rate, None if limit == float("inf") else limit, self.read.on_too_long)
        train_on = getattr(spec, "train_on", "assistant")
        encoder = SampleEncoder(self.formatter, self.sample_rate, generate, spec.transform, train_on)
        tokenizer = self.formatter.tokenizer
        pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        return SourcePlan(name, shards, read, encoder, spec.batching, self._boundaries(name, spec, shards), pad_id)

    def _boundaries(self, name: str, spec: SourceSpec | EvalSetSpec, shards: list[ShardInfo]) -> list[float]:
        batching = spec.batching
        if not batching.bucketing or batching.boundaries is not None:
            return sorted(batching.boundaries or [])
        durations = peek_durations(shards, self.duration_scan)
        if not durations:
            log.warning("%s: no sample durations in the metadata; bucketing with a single bucket.", name)
        return estimate_boundaries(durations, batching.num_buckets)

    def _loader(self, dataset: IterableDataset, loader_class: type[DataLoader] = DataLoader) -> DataLoader:
        workers = self.num_workers
        return loader_class(
            dataset,
            batch_size=None,
            collate_fn=_identity,
            num_workers=workers,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            pin_memory=self.pin_memory,
        )

    def _eval_loaders(self, key: str, specs: dict[str, EvalSetSpec], generate: bool = False) -> list[DataLoader]:
        rank, world = self._rank_world()
        plans = [self._plan(key, name, spec, generate or spec.generate) for name, spec in specs.items()]
        return [self._loader(EvalStream(plan, self.seed, rank, world)) for plan in plans]

    # --- loaders -----------------------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        """One loader over all train sources: each batch comes from one source, drawn by weight."""
        if not self.train_specs:
            raise ValueError("No training data: add named sources under data.train (shards, weight, batching).")
        plans = {name: self._plan("train", name, spec, False) for name, spec in self.train_specs.items()}
        weights = {name: spec.weight for name, spec in self.train_specs.items()}
        rank, world = self._rank_world()
        self._train_stream = TrainStream(
            plans, weights, self.batches_per_epoch, self.seed, self.shuffle_buffer, rank, world
        )
        loader = self._loader(self._train_stream, _TrainLoader)
        loader.datamodule = self
        return loader

    def val_dataloader(self) -> list[DataLoader]:
        """One finite loader per val set, in `val_set_names` order."""
        return self._eval_loaders("val", self.val_specs)

    def test_dataloader(self) -> list[DataLoader]:
        """One finite loader per test set, in `test_set_names` order."""
        return self._eval_loaders("test", self.test_specs)

    def predict_dataloader(self) -> list[DataLoader]:
        """One finite loader per predict set, prompts only, in `predict_set_names` order."""
        return self._eval_loaders("predict", self.predict_specs, generate=True)

    # --- resuming ----------------------------------------------------------------------------------------------------

    def _begin_epoch(self) -> None:
        """Positions the training stream at (epoch, batches already consumed in it) before its workers start."""
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else self._epoch + int(self._started)
        consumed = self._consumed if epoch == self._epoch else 0
        self._epoch, self._consumed, self._started = epoch, consumed, True
        self._train_stream.epoch, self._train_stream.skip = epoch, consumed

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Counts training batches as the trainer takes them, for `state_dict`."""
        if self.trainer is not None and self.trainer.training:
            self._consumed += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Where the training stream stands: a resumed run re-seeds from it instead of restarting its data."""
        return {"seed": self.seed, "epoch": self._epoch, "batches": self._consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the stream position; the next training epoch that matches it resumes after its consumed batches."""
        if state_dict.get("seed", self.seed) != self.seed:
            log.warning("Resuming with data.seed %s (the checkpoint used %s).", self.seed, state_dict["seed"])
        self._epoch, self._consumed, self._started = int(state_dict["epoch"]), int(state_dict["batches"]), False


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The LLM tokenizer at `path`, with an error naming `data.tokenizer` when it cannot be loaded."""
    return load_pretrained(
        "data.tokenizer (linked from model.init_args.llm)",
        "tokenizer",
        path,
        lambda: AutoTokenizer.from_pretrained(path),
    )


def text_eval_batches(
    spec: str | Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    max_batches: int,
    audio_token: str = DEFAULT_AUDIO_TOKEN,
) -> tuple[list[Batch], list[Batch]]:
    """A fixed text eval set as (teacher-forced batches, prompt-only batches over the same samples).

    Reads the first `batch_size * max_batches` usable samples of the shards in order; skips are logged.
    """
    formatter = ChatFormatter(tokenizer, audio_token)
    read, tally = ReadConfig(), DataTally()
    samples = list(
        itertools.islice(finite_samples(resolve_shards(spec), read, Slot(), tally), batch_size * max_batches)
    )
    if tally.total:
        log.warning("Text eval set %s: skipped %s", spec, dict(tally.total))
    name = Path(spec if isinstance(spec, str) else spec[0]).stem
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    out = []
    for generate in (False, True):
        encoder, rng = SampleEncoder(formatter, read.sample_rate, generate), random.Random(0)
        encoded = [encoder(sample, rng) for sample in samples]
        out.append([collate(items, name, pad_id) for items in fixed_batches(encoded, batch_size)])
    return out[0], out[1]
