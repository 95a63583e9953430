"""`lit-sllm bench memory`: peak memory and time of one training step with the labelled-only chunked loss against
the full-logits loss, on a Gemma-shaped LLM (256k vocabulary, few narrow layers) where the logits dominate.

The step is `JointSFT`'s (LoRA trains, the LLM is frozen): prepare_inputs, the LLM body, the loss, backward, on
text batches whose answers are the last `answer_tokens` of each row. Memory: each candidate in a fresh Python
process, so nothing one left behind counts for the other; on CUDA the allocator's peak
(`torch.cuda.max_memory_allocated`), on CPU the resident-set high-water mark (Linux `VmHWM`, reset just before the
step, with glibc told to hand large blocks back at once, so freed memory is not held over). The step's own peak is
the high-water mark minus what the process held just before it (model and batch); the whole process's peak is kept
too. Time: one module in this process, its `loss_logits` switched, the candidates interleaved round by round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import GemmaConfig

from lit_sllm.bench.common import BenchmarkSkipped, Goal, Outcome, best_round, interleaved, table
from lit_sllm.bench.models import SPECIALS, ModelSize, build_module, build_tokenizer, encoder_config, num_words
from lit_sllm.bench.training import TINY_SIZE
from lit_sllm.data.batch import IGNORE_INDEX, Batch
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.threads import torch_threads

GOAL_MEMORY, GOAL_TIME = 0.5, 1.05
MODES = ("full", "labelled")
GEMMA_SIZE = ModelSize(
    llm_hidden=256, llm_layers=2, llm_heads=4, llm_kv_heads=1, llm_intermediate=1024, vocab_size=256_000,
    encoder_dim=64, encoder_layers=1, encoder_heads=2, encoder_ffn=128,
)  # fmt: skip


@dataclass(frozen=True)
class MemorySettings:
    """Sizes of the memory benchmark.

    Attributes:
        size: the model (Gemma-shaped: its 256k vocabulary makes the logits most of a step's memory).
        rows: rows per batch.
        tokens: tokens per row.
        answer_tokens: labelled tokens at the end of each row (the rest is prompt).
        chunk_size: `loss_chunk_size` of the labelled-only loss.
        steps: timed steps per round.
        rounds: interleaved timing rounds.
        torch_threads: intra-op threads.
        seed: seeds data and weights.
    """

    size: ModelSize = GEMMA_SIZE
    rows: int = 2
    tokens: int = 512
    answer_tokens: int = 128
    chunk_size: int = 1024
    steps: int = 2
    rounds: int = 3
    torch_threads: int = 1
    seed: int = 0


QUICK = MemorySettings(size=replace(TINY_SIZE, vocab_size=4096), tokens=48, answer_tokens=12, chunk_size=8, rounds=1)


def gemma_config(size: ModelSize) -> GemmaConfig:
    """A Gemma LLM of `size` (tied input and output embeddings, as Gemma's)."""
    return GemmaConfig(
        vocab_size=size.vocab_size, hidden_size=size.llm_hidden, intermediate_size=size.llm_intermediate,
        num_hidden_layers=size.llm_layers, num_attention_heads=size.llm_heads, num_key_value_heads=size.llm_kv_heads,
        head_dim=size.llm_hidden // size.llm_heads, max_position_embeddings=4096, pad_token_id=0, bos_token_id=2,
        eos_token_id=3,
    )  # fmt: skip


def text_batch(settings: MemorySettings) -> Batch:
    """Random-token rows, all real, labelled on their last `answer_tokens`."""
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (settings.rows, settings.tokens)
    ids = torch.randint(len(SPECIALS) + 1, settings.size.vocab_size, shape, generator=generator)  # (B, L)
    labels = torch.full(shape, IGNORE_INDEX)
    labels[:, -settings.answer_tokens :] = ids[:, -settings.answer_tokens :]
    keys = [f"row{i}" for i in range(settings.rows)]
    return Batch(
        ids, torch.ones(shape, dtype=torch.long), labels, source="memory", keys=keys, tasks=["text"] * len(keys)
    )


def build(folder: Path, settings: MemorySettings, mode: str) -> JointSFT:
    torch.manual_seed(settings.seed)
    module = build_module(JointSFT, folder / "llm", folder / "encoder", settings.size, loss_logits=mode,
                          loss_chunk_size=settings.chunk_size)  # fmt: skip
    return module.train()


def train_step(module: JointSFT, batch: Batch) -> float:
    """One forward and backward pass; returns the loss."""
    module.model.zero_grad(set_to_none=True)
    inputs = module.model.prepare_inputs(batch)
    hidden = module.model.hidden_states(inputs.inputs_embeds, inputs.attention_mask)  # (B, L', H)
    loss = module.compute_loss(batch, inputs, hidden)["loss"]
    loss.backward()
    return float(loss.detach())


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def measure_step_memory(folder: Path, settings: MemorySettings, mode: str, device: str) -> dict[str, float]:
    """Bytes held before the step, the step's peak, and the loss; run in a fresh process (`_child`). A step on a
    4-token batch comes first, so the code and thread pools a first step loads are not counted."""
    module, batch = build(folder, settings, mode).to(device), text_batch(settings).to(device)
    train_step(module, text_batch(replace(settings, rows=1, tokens=4, answer_tokens=2)).to(device))  # loads the code
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss = train_step(module, batch)
        torch.cuda.synchronize()
        return {"before": before, "peak": torch.cuda.max_memory_allocated(), "loss": loss}
    before = _status_kib("VmRSS:") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    loss = train_step(module, batch)
    return {"before": before, "peak": _status_kib("VmHWM:") * 1024, "loss": loss}


def memory_in_fresh_process(folder: Path, settings: MemorySettings, mode: str, device: str) -> dict[str, float]:
    if device == "cpu" and not os.access("/proc/self/clear_refs", os.W_OK):
        raise BenchmarkSkipped("the CPU memory measurement needs Linux's /proc/self/clear_refs and VmHWM")
    job = json.dumps({"folder": str(folder), "settings": asdict(settings), "mode": mode, "device": device})
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": str(settings.torch_threads)}
    done = subprocess.run([sys.executable, "-m", __name__, job], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"The {mode} memory measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_steps(module: JointSFT, batch: Batch, mode: str, steps: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each of `steps` steps with `loss_logits` set to `mode`, after one untimed step."""
    module.loss_logits = mode
    train_step(module, batch)
    times = []
    for _ in range(steps):
        wall, cpu = time.perf_counter(), time.process_time()
        train_step(module, batch)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def run(quick: bool) -> Outcome:
    settings = QUICK if quick else MemorySettings()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="lit_sllm_bench_memory_") as tmp, torch_threads(settings.torch_threads):
        folder = Path(tmp)
        build_tokenizer(num_words(settings.size)).save_pretrained(folder / "llm")
        gemma_config(settings.size).save_pretrained(folder / "llm")
        encoder_config(settings.size).save_pretrained(folder / "encoder")
        memory = {mode: memory_in_fresh_process(folder, settings, mode, device) for mode in MODES}
        module, batch = build(folder, settings, "labelled").to(device), text_batch(settings).to(device)
        candidates = {mode: lambda mode=mode: timed_steps(module, batch, mode, settings.steps) for mode in MODES}
        clocks = interleaved(candidates, settings.rounds)
    return outcome(settings, device, memory, clocks)


def outcome(settings: MemorySettings, device: str, memory: dict, clocks: dict[str, list]) -> Outcome:
    """Ratios of the labelled-only candidate to the full-logits one: memory (the step's own peak: the verdict; and
    the whole process's), time by CPU seconds (the verdict on a shared machine) and wall clock."""
    full, labelled = memory["full"], memory["labelled"]
    if abs(full["loss"] - labelled["loss"]) > 1e-4 * max(1.0, abs(full["loss"])):
        raise RuntimeError(f"The two losses differ ({full['loss']} vs {labelled['loss']}): the candidates disagree.")
    for one in memory.values():
        one["step"] = one["peak"] - one["before"]
    best = {mode: {clock: best_round([[step[i] for step in one] for one in clocks[mode]])
                   for i, clock in enumerate(("wall", "cpu"))} for mode in MODES}  # fmt: skip
    ratios = {
        "step_memory": labelled["step"] / full["step"],
        "process_memory": labelled["peak"] / full["peak"],
        "cpu": best["labelled"]["cpu"] / best["full"]["cpu"],
        "wall": best["labelled"]["wall"] / best["full"]["wall"],
    }
    figures = {"device": device, "memory_bytes": memory, "step_seconds": best, "rounds": clocks, "ratios": ratios}
    goal = Goal(
        target=f"labelled-only loss: peak step memory <= {GOAL_MEMORY}x and step time <= {GOAL_TIME}x the full-logits "
        "loss (Gemma-shaped LLM, 256k vocabulary)",
        measured=f"memory {ratios['step_memory']:.2f}x (whole process {ratios['process_memory']:.2f}x), time "
        f"{ratios['cpu']:.2f}x CPU time (wall clock {ratios['wall']:.2f}x)",
        met=ratios["step_memory"] <= GOAL_MEMORY and ratios["cpu"] <= GOAL_TIME,
    )
    mib = 2**20
    rows = [
        [mode, f"{memory[mode]['step'] / mib:.0f}", f"{memory[mode]['peak'] / mib:.0f}"]
        + [f"{best[mode]['cpu'] * 1000:.0f}", f"{best[mode]['wall'] * 1000:.0f}", f"{memory[mode]['loss']:.4f}"]
        for mode in MODES
    ]
    columns = ["loss_logits", "step peak MiB (above model and batch)", "process peak MiB", "CPU ms per step"]
    columns += ["wall ms per step", "loss"]
    size = settings.size
    title = (
        f"JointSFT forward + backward on {device}, Gemma-shaped LLM (vocabulary {size.vocab_size}, hidden "
        f"{size.llm_hidden} x {size.llm_layers} layers, LoRA), {settings.rows} rows x {settings.tokens} tokens, "
        f"{settings.answer_tokens} labelled per row, chunks of {settings.chunk_size}; time: best of {settings.rounds} "
        f"interleaved rounds of {settings.steps} steps"
    )
    return Outcome(asdict(settings), figures, [table(title, columns, rows)], goal)


def _child(job: dict[str, Any]) -> None:
    settings = dict(job["settings"])
    settings = MemorySettings(**{**settings, "size": ModelSize(**settings["size"])})
    with torch_threads(settings.torch_threads):
        print(json.dumps(measure_step_memory(Path(job["folder"]), settings, job["mode"], job["device"])))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
