"""`SpeechTextDataModule`: named, weighted train sources streamed endlessly; named eval sets read exactly once.

Everything from shard reading to the padded `Batch` runs inside the DataLoader workers (`lit_sllm.data.streams`);
the loaders only move finished batches. Skip counts ride on each batch in `batch.extras["skipped"]` ({reason: count
since the previous batch of that worker}), so the LightningModule can log them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.augment import Augmentation
from lit_sllm.data.batch import Batch
from lit_sllm.data.batching import BatchingSpec
from lit_sllm.data.buckets2d import source_grid
from lit_sllm.data.collate import SampleEncoder, SampleTransform
from lit_sllm.data.pipeline import ReadConfig, resolve_shards
from lit_sllm.data.prompts import DEFAULT_AUDIO_TOKEN, ChatFormatter
from lit_sllm.data.streams import EvalStream, SampleExpansion, SourcePlan, TrainStream
from lit_sllm.data.tokenizer import load_formatter

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
        augment: waveform augmentation, a list of `{name, p, ...parameters}` run before `transform` (see
            `lit_sllm.data.augment`): speed, noise, reverb, gain, clipping, telephone, codec.
    """

    shards: str | list[str]
    weight: float = 1.0
    batching: BatchingSpec = field(default_factory=lambda: BatchingSpec(batch_size=8))
    transform: SampleTransform | None = None
    train_on: Literal["assistant", "last"] = "assistant"
    augment: list[dict[str, Any]] | None = None


@dataclass
class EvalSetSpec:
    """One named evaluation set, read once per pass in a stable order.

    Attributes:
        shards: a directory, index.json, glob, brace pattern, `pipe:` URL, or a list of them.
        batching: how the set is batched.
        transform: optional `(sample, rng) -> sample` hook run before encoding (seeded, so repeatable).
        generate: encode prompts only, with the final answer as reference; otherwise each sample is encoded for
            the loss and carries its prompt view too (`Batch.prompt`), so a set is both scored and generated from.
        augment: must stay unset: evaluation is never augmented; a set given a list is refused at start, so that a
            config meant to augment what it scores does not silently score clean audio.
        max_samples: read only the set's first `max_samples` records (split over ranks and workers like the rest).
        expand: `(sample, rng) -> samples` by class_path, turning each sample into several prompts (e.g.
            `lit_sllm.data.generalization.GeneralizationRequests`); expanded samples are encoded as prompts.
    """

    shards: str | list[str]
    batching: BatchingSpec = field(default_factory=lambda: BatchingSpec(batch_size=8))
    transform: SampleTransform | None = None
    generate: bool = False
    augment: list[dict[str, Any]] | None = None
    max_samples: int | None = None
    expand: SampleExpansion | None = None


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
        eval: sets that callbacks and commands read by name through `eval_dataloader` (text-forgetting sets, the
            generalisation benchmark); the validation and test loops do not run them.
        sample_rate: rate (Hz) all audio is resampled to; must equal the speech encoder's.
        audio_token: placeholder string for one audio clip (must match the model's).
        chat_template: the LLM's chat template setting, a file or the text (the CLI links it from the model).
        chat_template_kwargs: the template's extra variables (the CLI links them from the model).
        max_duration: longest sample kept, in seconds of audio; a source's `batching.max_duration` lowers it.
        on_too_long: "drop" or "clip" samples longer than `max_duration` (both are counted).
        num_workers: DataLoader worker processes per loader.
        prefetch_factor: batches each worker prepares ahead (with workers only).
        pin_memory: pin batches in page-locked memory for faster host-to-GPU copies.
        seed: seeds shard draws, shuffling, bucketing and transforms.
        batches_per_epoch: training batches per rank per epoch (the training stream is endless).
        shuffle_buffer: raw samples per source held for shuffling in training.
        duration_scan: samples whose metadata are read to estimate bucket edges (durations; with two-dimensional
            buckets, also token counts, by encoding the conversation).
    """

    def __init__(
        self,
        tokenizer: str,
        train: dict[str, SourceSpec] | None = None,
        val: dict[str, EvalSetSpec] | None = None,
        test: dict[str, EvalSetSpec] | None = None,
        predict: dict[str, EvalSetSpec] | None = None,
        eval: dict[str, EvalSetSpec] | None = None,
        sample_rate: int = 16000,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        chat_template: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        max_duration: float | None = 30.0,
        on_too_long: Literal["drop", "clip"] = "drop",
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
        self.chat_template, self.chat_template_kwargs = chat_template, chat_template_kwargs
        self.train_specs, self.val_specs = dict(train or {}), dict(val or {})
        self.test_specs, self.predict_specs = dict(test or {}), dict(predict or {})
        self.eval_specs = dict(eval or {})
        self.sample_rate, self.seed = sample_rate, seed
        self.read = ReadConfig(sample_rate, max_duration, on_too_long)
        self.num_workers, self.prefetch_factor, self.pin_memory = num_workers, prefetch_factor, pin_memory
        self.batches_per_epoch, self.shuffle_buffer, self.duration_scan = (
            batches_per_epoch,
            shuffle_buffer,
            duration_scan,
        )
        self._check_config()
        self._augment = self._augmentations()
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
        for key, specs in self._eval_groups().items():
            for name, spec in specs.items():
                if spec.max_samples is not None and spec.max_samples <= 0:
                    raise ConfigError(
                        f"data.{key}.{name}.max_samples must be > 0 (null reads all), got {spec.max_samples}."
                    )
                if spec.augment:
                    raise ConfigError(
                        f"data.{key}.{name}.augment: evaluation sets are never augmented; remove it, or augment the "
                        "training source instead (data.train.<name>.augment)."
                    )
        weights = {name: spec.weight for name, spec in self.train_specs.items()}
        if self.train_specs and (any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0):
            raise ConfigError(
                f"data.train weights {weights} must be >= 0 and sum to > 0; set data.train.<name>.weight, "
                "e.g. 0.85 for speech and 0.15 for text."
            )

    def _augmentations(self) -> dict[str, Augmentation]:
        """Each augmented train source's chain, validated now so that a bad entry stops the run before it starts."""
        chains = {}
        for name, spec in self.train_specs.items():
            if spec.augment:
                key, limit = f"data.train.{name}.augment", self._read_limit(spec)
                chains[name] = Augmentation.from_config(spec.augment, key, self.sample_rate, limit)
        return chains

    def _eval_groups(self) -> dict[str, dict[str, EvalSetSpec]]:
        return {"val": self.val_specs, "test": self.test_specs, "predict": self.predict_specs, "eval": self.eval_specs}

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

    def require_eval_set(self, name: str, key: str) -> None:
        """Raises a ConfigError naming `key` (the callback setting that asked for it) when `data.eval` has no `name`."""
        if name not in self.eval_specs:
            raise ConfigError(
                f"{key} names eval set '{name}' but data.eval has {sorted(self.eval_specs) or 'none'}; add "
                f"data.eval.{name} (shards, batching, ...) or name one of those."
            )

    @property
    def formatter(self) -> ChatFormatter:
        """The chat formatter on the LLM tokenizer, loaded on first use."""
        if self._formatter is None:
            self._formatter = load_formatter(
                self.tokenizer_path, self.audio_token, self.chat_template, self.chat_template_kwargs
            )
        return self._formatter

    def _rank_world(self) -> tuple[int | None, int | None]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (None, None)

    def _plan(self, key: str, name: str, spec: SourceSpec | EvalSetSpec, generate: bool = False) -> SourcePlan:
        try:
            shards = resolve_shards(spec.shards)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"data.{key}.{name}.shards: {err}") from err
        read = ReadConfig(self.sample_rate, self._read_limit(spec), self.read.on_too_long)
        train_on = getattr(spec, "train_on", "assistant")
        expand = getattr(spec, "expand", None)
        generate = generate or getattr(spec, "generate", False) or expand is not None
        prompt_view = key != "train"
        encoder = SampleEncoder(self.formatter, self.sample_rate, generate, spec.transform, train_on, prompt_view)
        tokenizer = self.formatter.tokenizer
        pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        grid = source_grid(f"data.{key}.{name}", spec.batching, shards, encoder, self.duration_scan)
        augment = self._augment.get(name) if key == "train" else None
        limit = getattr(spec, "max_samples", None)
        return SourcePlan(name, shards, read, encoder, spec.batching, grid, pad_id, augment, limit, expand)

    def source_plan(self, name: str) -> SourcePlan:
        """The resolved plan of train source `name` (shards, encoder, buckets), exactly as its stream would use it."""
        return self._plan("train", name, self.train_specs[name])

    def _read_limit(self, spec: SourceSpec | EvalSetSpec) -> float | None:
        """The longest sample a source keeps, in seconds: data.max_duration lowered by its batching.max_duration."""
        limits = [x for x in (self.read.max_duration, spec.batching.max_duration) if x is not None]
        return min(limits) if limits else None

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
        plans = [self._plan(key, name, spec, generate) for name, spec in specs.items()]
        return [self._loader(EvalStream(plan, self.seed, rank, world)) for plan in plans]

    # --- loaders -----------------------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        """One loader over all train sources: each batch comes from one source, drawn by weight."""
        if not self.train_specs:
            raise ValueError("No training data: add named sources under data.train (shards, weight, batching).")
        plans = {name: self._plan("train", name, spec) for name, spec in self.train_specs.items()}
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

    def eval_dataloader(self, name: str) -> DataLoader:
        """The loader of `data.eval.<name>`: this rank's share of the set (every sample once over ranks and workers)."""
        self.require_eval_set(name, f"eval_dataloader({name!r})")
        return self._eval_loaders("eval", {name: self.eval_specs[name]})[0]

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
