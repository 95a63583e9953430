"""What the training-step benchmarks share: their settings, the data stream, step timing under Lightning and the
bare PyTorch loop Lightning is compared with.

A step is timed from the end of one optimizer step to the end of the next, so it includes fetching the batch,
forward, backward, clipping, the optimizer, the scheduler and (under Lightning) every hook and `self.log` call. The
first `warmup` steps are left out.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from lit_sllm.bench.common import best_round, flatten, paired_ratio
from lit_sllm.bench.models import ModelSize
from lit_sllm.data.batch import Batch
from lit_sllm.data.batching import BatchingSpec
from lit_sllm.data.collate import SampleTransform
from lit_sllm.data.datamodule import SourceSpec, SpeechTextDataModule
from lit_sllm.modules.base import SpeechLLMModule
from lit_sllm.modules.optim import build_optimizer, build_scheduler

GRADIENT_CLIP = 1.0  # VoiceTextBlender's setting, used by both loops
CPU_SIZE = ModelSize(
    llm_hidden=256, llm_layers=4, llm_heads=4, llm_kv_heads=2, llm_intermediate=1024, vocab_size=8192,
    encoder_dim=256, encoder_layers=2, encoder_heads=4, encoder_ffn=1024,
)  # fmt: skip
TINY_SIZE = ModelSize(
    llm_hidden=32, llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_intermediate=64, vocab_size=512,
    encoder_dim=32, encoder_layers=1, encoder_heads=2, encoder_ffn=64, n_mels=16,
)  # fmt: skip


@dataclass(frozen=True)
class TrainBenchSettings:
    """Sizes of a training-step benchmark.

    Attributes:
        size: the model (the default is big enough that a one-thread CPU step takes most of a second, so that per-step
            Python costs are measured against real compute).
        utterances: clips in the shard set, lengths uniform in `clip_seconds`.
        clip_seconds: shortest and longest clip (s).
        max_duration: padded seconds of audio per batch.
        num_buckets: duration buckets.
        warmup: steps left out of the timing.
        steps: timed steps per run.
        rounds: interleaved rounds (more rounds, fewer steps each: a better chance of a quiet round per candidate).
        workers: DataLoader workers of the streaming DataModule.
        torch_threads: intra-op threads of the training process; 1 leaves the second core of a 2-core machine to
            the data worker, as a GPU run leaves the CPU to its workers.
        sample_rate: rate of the stored audio and of the encoder (no resampling).
        seed: seeds data and weights.
    """

    size: ModelSize = CPU_SIZE
    utterances: int = 64
    clip_seconds: tuple[float, float] = (1.5, 5.0)
    max_duration: float = 12.0
    num_buckets: int = 4
    warmup: int = 2
    steps: int = 8
    rounds: int = 5
    workers: int = 1
    torch_threads: int = 1
    sample_rate: int = 16000
    seed: int = 0


def stream_factory(
    llm_dir: Path, shards: Path, settings: TrainBenchSettings, workers: int, transform: SampleTransform | None = None
) -> Callable[[], SpeechTextDataModule]:
    """Builds a fresh `SpeechTextDataModule` per call, so every run starts the same seeded stream of
    `warmup + steps` batches (the same with 0 workers as with 1)."""
    batching = BatchingSpec(max_duration=settings.max_duration, num_buckets=settings.num_buckets)

    def build() -> SpeechTextDataModule:
        return SpeechTextDataModule(
            tokenizer=str(llm_dir),
            train={"speech": SourceSpec(str(shards), 1.0, batching, transform)},
            sample_rate=settings.sample_rate,
            num_workers=workers,
            batches_per_epoch=settings.warmup + settings.steps,
            seed=settings.seed,
        )

    return build


class StepClock:
    """Collects the wall-clock time, this process's CPU time and the sample keys at the end of every step.

    Wall-clock time is what a run pays; CPU time leaves out the time the process waited for a core, so it stays
    meaningful on a machine shared with other jobs (but it also leaves out waiting for data from workers).
    """

    def __init__(self, warmup: int, synchronize: bool = False) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the first step has no start tick), got {warmup}.")
        self.warmup, self.synchronize = warmup, synchronize
        self.ticks: list[tuple[float, float]] = []  # (wall, process CPU) seconds
        self.keys: list[list[str]] = []

    def tick(self, batch: Batch) -> None:
        if self.synchronize:
            torch.cuda.synchronize()
        self.ticks.append((time.perf_counter(), time.process_time()))
        self.keys.append(list(batch.keys))

    def step_times(self, cpu: bool = False) -> list[float]:
        """Wall-clock (or CPU) seconds of each step after the first `warmup` steps."""
        if len(self.ticks) <= self.warmup:
            raise RuntimeError(f"Only {len(self.ticks)} steps ran; at least {self.warmup + 1} are needed to time one.")
        ticks = [tick[int(cpu)] for tick in self.ticks]
        return [ticks[i] - ticks[i - 1] for i in range(self.warmup, len(ticks))]


def compare_steps(clocks: dict[str, list[StepClock]], baseline: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Step times of every candidate against `baseline`, per clock ("wall" and "cpu").

    Returns:
        name -> clock -> {"round_medians": median step seconds of each round, "best": the smallest of them,
        "ratio": best / the baseline's best, "paired_median_ratio": median over (round, step) of the step's time
        over the baseline's time for the same step (the same batch)}.
    """
    compared: dict[str, dict[str, dict[str, Any]]] = {}
    for name, runs in clocks.items():
        compared[name] = {}
        for clock, cpu in (("wall", False), ("cpu", True)):
            rounds = [run.step_times(cpu) for run in runs]
            base = [run.step_times(cpu) for run in clocks[baseline]]
            compared[name][clock] = {
                "round_medians": [statistics.median(one) for one in rounds],
                "best": best_round(rounds),
                "ratio": best_round(rounds) / best_round(base),
                "paired_median_ratio": paired_ratio(flatten(rounds), flatten(base)),
            }
    return compared


class StepClockCallback(L.Callback):
    """Ticks a `StepClock` at the end of every training batch."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, *args):
        self.clock.tick(batch)


class BatchList(L.LightningDataModule):
    """Serves a fixed list of batches, in order, from the main process."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        super().__init__()
        self.batches = list(batches)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, collate_fn=_identity)


def _identity(batch: Batch) -> Batch:
    return batch


def bench_trainer(root: Path, steps: int, clock: StepClock, accelerator: str = "cpu", **kwargs: Any) -> L.Trainer:
    """A Trainer as a run would use it (CSV logging, gradient clipping), minus checkpoints and the progress bar."""
    return L.Trainer(
        default_root_dir=root,
        accelerator=accelerator,
        devices=1,
        max_steps=steps,
        logger=L.pytorch.loggers.CSVLogger(root),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=GRADIENT_CLIP,
        callbacks=[StepClockCallback(clock)],
        **kwargs,
    )


def lightning_run(
    module: SpeechLLMModule, data: Callable[[], L.LightningDataModule], root: Path, steps: int, warmup: int
) -> Callable[[], StepClock]:
    """A callable that fits `module` on a fresh `data()` for `steps` steps and returns the run's clock."""

    def run() -> StepClock:
        clock = StepClock(warmup)
        bench_trainer(root, steps, clock).fit(module, data())
        return clock

    return run


def bare_run(module: SpeechLLMModule, batches: Sequence[Batch], warmup: int) -> Callable[[], StepClock]:
    """A callable that runs the plain PyTorch loop over `batches` (the module's model, loss, clipping, optimizer and
    schedule, and nothing else) and returns its clock."""

    def run() -> StepClock:
        model, clock = module.model, StepClock(warmup)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(model.named_parameters(), module.optim_spec, on_cuda=False)
        scheduler = build_scheduler(optimizer, module.schedule_spec, module.optim_spec.lr, len(batches))
        model.train()
        for batch in batches:
            inputs = model.prepare_inputs(batch)
            hidden = model.hidden_states(inputs.inputs_embeds, inputs.attention_mask)  # (B, L', H)
            module.compute_loss(batch, inputs, hidden)["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, GRADIENT_CLIP)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            clock.tick(batch)
        return clock

    return run


# Lightning warnings that short benchmark runs trigger by design.
EXPECTED_WARNINGS = (
    ".*smaller than the logging interval.*",
    ".*you defined a `validation_step` but have no `val_dataloader`.*",
    ".*`IterableDataset` has `__len__` defined.*",
)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silences Lightning's start-up notices (devices, parameter tables) and the warnings in `EXPECTED_WARNINGS`
    while benchmarks run Trainers."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lit_sllm.modules")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
