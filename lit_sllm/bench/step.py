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

from lit_sllm.bench.common import Goal, Outcome, interleaved, table
from lit_sllm.bench.models import build_module, num_words, write_model_folders
from lit_sllm.bench.synthetic import uniform_durations, write_speech_set
from lit_sllm.bench.training import (
    TINY_SIZE,
    BatchList,
    StepClock,
    TrainBenchSettings,
    bare_run,
    compare_steps,
    lightning_run,
    quiet_lightning,
    stream_factory,
)
from lit_sllm.data.batch import Batch
from lit_sllm.models.freezing import parameter_counts
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.threads import torch_threads

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
    """Overheads from each loop's least-disturbed round against the bare loop's, by CPU time and wall clock.

    The verdict uses CPU time: with one compute thread a step's wall time equals its CPU time on a machine of its
    own, while on a shared one the wall clock also counts waiting for a core. A DataModule that made the loop wait
    for data would show as wall time above CPU time in its row, beyond the bare loop's gap.
    """
    compared = compare_steps(clocks, "bare")
    overhead = {name: {clock: one[clock]["ratio"] - 1 for clock in one} for name, one in compared.items()}
    counts = parameter_counts(module.model)
    timed = batches[settings.warmup :]
    figures = {
        "steps": compared,
        "overhead_vs_bare": overhead,
        "parameters": {name: {"trainable": t, "total": n} for name, (t, n) in counts.items()},
        "mean_rows": sum(b.size for b in timed) / len(timed),
        "mean_audio_seconds": sum(b.extras["audio_seconds"] for b in timed) / len(timed),
    }
    lightning = overhead["lightning"]
    goal = Goal(
        target=f"Lightning module + DataModule step within {GOAL_OVERHEAD:.0%} of a bare PyTorch loop",
        measured=f"{lightning['cpu']:+.1%} CPU time per step (wall clock {lightning['wall']:+.1%})",
        met=lightning["cpu"] <= GOAL_OVERHEAD,
    )
    rows = [
        [name, f"{compared[name]['wall']['best'] * 1000:.0f}", f"{compared[name]['cpu']['best'] * 1000:.0f}"]
        + (["-", "-"] if name == "bare" else [f"{overhead[name]['wall']:+.1%}", f"{overhead[name]['cpu']:+.1%}"])
        for name in clocks
    ]
    columns = ["loop", "ms per step", "CPU ms per step", "overhead (wall clock)", "overhead (CPU time; the verdict)"]
    size, total = settings.size, sum(n for _, n in counts.values())
    title = (
        f"JointSFT, {total / 1e6:.1f}M parameters (LLM hidden {size.llm_hidden} x {size.llm_layers} layers, encoder "
        f"{size.encoder_dim} x {size.encoder_layers}), {figures['mean_audio_seconds']:.1f} s of audio per batch; "
        f"median step of each loop's least-disturbed round of {settings.rounds}"
    )
    return Outcome(asdict(settings), figures, [table(title, columns, rows)], goal)
