"""`lit-sllm bench step`: the training-step time of `JointSFT` + `SpeechTextDataModule` under a Lightning Trainer
against a bare PyTorch loop on the same model and the same batches.

Three candidates, interleaved round by round:
- `bare`: a plain loop (prepare_inputs, forward, loss, backward, clip, AdamW, schedule) over the batches, held in
  memory: the floor.
- `lightning`: `Trainer.fit(JointSFT, SpeechTextDataModule)`, the DataModule streaming and decoding the shards in a
  worker process: what a run pays.
- `lightning_prebuilt`: the Trainer on the same batches held in memory: the Trainer's and module's share alone.

All three see exactly the same batches in the same order (checked), so the compute is identical.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from lit_sllm.bench.common import (
    Goal,
    Outcome,
    flatten,
    interleaved,
    paired_ratio,
    spread,
    table,
    torch_threads,
)
from lit_sllm.bench.models import build_module, num_words, write_model_folders
from lit_sllm.bench.synthetic import uniform_durations, write_speech_set
from lit_sllm.bench.training import (
    TINY_SIZE,
    BatchList,
    StepClock,
    TrainBenchSettings,
    bare_run,
    lightning_run,
    quiet_lightning,
    stream_factory,
)
from lit_sllm.data.batch import Batch
from lit_sllm.models.freezing import parameter_counts
from lit_sllm.modules.joint_sft import JointSFT

GOAL_OVERHEAD = 0.05
QUICK = TrainBenchSettings(size=TINY_SIZE, utterances=12, clip_seconds=(0.5, 1.0), max_duration=2.0, num_buckets=2,
                           warmup=1, steps=2, rounds=1)  # fmt: skip


def run(quick: bool) -> Outcome:
    settings = QUICK if quick else TrainBenchSettings()
    with (
        tempfile.TemporaryDirectory(prefix="lit_sllm_bench_step_") as tmp,
        quiet_lightning(),
        torch_threads(settings.torch_threads),
    ):
        root = Path(tmp)
        llm_dir, encoder_dir = write_model_folders(root / "models", settings.size)
        durations = uniform_durations(settings.utterances, *settings.clip_seconds, seed=settings.seed)
        data = write_speech_set(root / "set", durations, settings.sample_rate, num_words(settings.size))
        streamed = stream_factory(llm_dir, data.shards, settings, settings.workers)
        batches = list(stream_factory(llm_dir, data.shards, settings, 0)().train_dataloader())
        torch.manual_seed(settings.seed)
        module = build_module(JointSFT, llm_dir, encoder_dir, settings.size)
        steps, warmup = len(batches), settings.warmup
        candidates = {
            "bare": bare_run(module, batches, warmup),
            "lightning": lightning_run(module, streamed, root, steps, warmup),
            "lightning_prebuilt": lightning_run(module, lambda: BatchList(batches), root, steps, warmup),
        }
        clocks = interleaved(candidates, settings.rounds)
    check_same_batches(clocks, batches)
    return outcome(settings, module, batches, clocks)


def check_same_batches(clocks: dict[str, list[StepClock]], batches: list[Batch]) -> None:
    """Raises when any run saw other batches than the prebuilt ones: the comparison would not be like for like."""
    expected = [list(batch.keys) for batch in batches]
    for name, runs in clocks.items():
        for clock in runs:
            if clock.keys != expected:
                raise RuntimeError(
                    f"Benchmark candidate '{name}' trained on other batches than the prebuilt ones (first keys "
                    f"{clock.keys[:1]} vs {expected[:1]}); the DataModule stream is not reproducible here."
                )


def outcome(
    settings: TrainBenchSettings, module: JointSFT, batches: list[Batch], clocks: dict[str, list[StepClock]]
) -> Outcome:
    """Overheads as the median over (round, step) of a step's time over the bare loop's time for the same step."""
    wall = {name: flatten([clock.step_times() for clock in runs]) for name, runs in clocks.items()}
    cpu = {name: flatten([clock.step_times(cpu=True) for clock in runs]) for name, runs in clocks.items()}
    others = [name for name in clocks if name != "bare"]
    overhead = {name: paired_ratio(wall[name], wall["bare"]) - 1 for name in others}
    cpu_overhead = {name: paired_ratio(cpu[name], cpu["bare"]) - 1 for name in others}
    counts = parameter_counts(module.model)
    timed = batches[settings.warmup :]
    figures = {
        "step_seconds": {name: spread(values) for name, values in wall.items()},
        "step_cpu_seconds": {name: spread(values) for name, values in cpu.items()},
        "overhead_vs_bare": overhead,
        "cpu_overhead_vs_bare": cpu_overhead,
        "parameters": {name: {"trainable": t, "total": n} for name, (t, n) in counts.items()},
        "mean_rows": sum(b.size for b in timed) / len(timed),
        "mean_audio_seconds": sum(b.extras["audio_seconds"] for b in timed) / len(timed),
    }
    goal = Goal(
        target=f"Lightning module + DataModule step within {GOAL_OVERHEAD:.0%} of a bare PyTorch loop",
        measured=f"{overhead['lightning']:+.1%} wall clock, {cpu_overhead['lightning']:+.1%} CPU time",
        met=overhead["lightning"] <= GOAL_OVERHEAD,
    )
    rows = [
        [name, f"{spread(wall[name])['median'] * 1000:.0f}", f"{spread(cpu[name])['median'] * 1000:.0f}"]
        + (["-", "-"] if name == "bare" else [f"{overhead[name]:+.1%}", f"{cpu_overhead[name]:+.1%}"])
        for name in clocks
    ]
    columns = ["loop", "ms per step", "CPU ms per step", "overhead (wall clock)", "overhead (CPU time)"]
    size, total = settings.size, sum(n for _, n in counts.values())
    title = (
        f"JointSFT, {total / 1e6:.1f}M parameters (LLM hidden {size.llm_hidden} x {size.llm_layers} layers, encoder "
        f"{size.encoder_dim} x {size.encoder_layers}), {figures['mean_audio_seconds']:.1f} s of audio per batch; "
        "medians over paired steps"
    )
    return Outcome(asdict(settings), figures, [table(title, columns, rows)], goal)
