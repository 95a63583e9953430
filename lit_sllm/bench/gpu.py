"""`lit-sllm bench gpu`: joint SFT in bf16 on one CUDA GPU: tokens/s, MFU and peak memory, and the largest speech
batch that fits in memory. Skipped cleanly (nothing written) without a CUDA GPU.

The model is `JointSFT` on a random-init ~1.1B-parameter Llama-shaped LLM (TinyLlama's shapes, frozen, bf16 weights,
LoRA r=32 on every projection) with a Whisper-small-shaped encoder (trained) and a frame-stack MLP adapter, under
`Trainer(precision="bf16-mixed")`. Batches are LibriSpeech-like ASR clips bucketed by `bucket_batches` to a max
duration and collated by the real `collate`; they are built in memory (no shards), so the GPU is what is measured.
The memory search probes single training steps (forward, backward, optimizer) on batches of 15 s clips.
"""

from __future__ import annotations

import gc
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lit_sllm.bench.common import BenchmarkSkipped, Goal, Outcome, table
from lit_sllm.bench.flops import StepShape, step_flops, step_shape
from lit_sllm.bench.models import ModelSize, build_module, num_words, write_model_folders
from lit_sllm.bench.synthetic import librispeech_durations, speech_meta
from lit_sllm.bench.training import TINY_SIZE, BatchList, StepClock, bench_trainer, quiet_lightning
from lit_sllm.data.batch import Batch
from lit_sllm.data.batching import BatchingSpec, bucket_batches, estimate_boundaries
from lit_sllm.data.collate import EncodedSample, SampleEncoder, collate
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.data.schema import Sample
from lit_sllm.models.freezing import parameter_counts
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.modules.optim import build_optimizer

GOAL_MFU = 0.40
GPU_SIZE = ModelSize(
    llm_hidden=2048, llm_layers=22, llm_heads=32, llm_kv_heads=4, llm_intermediate=5632, vocab_size=32000,
    encoder_dim=768, encoder_layers=12, encoder_heads=12, encoder_ffn=3072, lora_rank=32,
)  # fmt: skip
ACCELERATORS = {"cuda": "gpu", "cpu": "cpu"}  # torch device -> Lightning accelerator
# Dense bf16 peak FLOP/s by device name; the first entry whose key is in the name applies.
PEAK_BF16 = (
    ("GH200", 989.4e12),
    ("H200", 989.4e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362e12),
)


@dataclass(frozen=True)
class GPUSettings:
    """Sizes of the GPU benchmark.

    Attributes:
        size: the model.
        utterances: LibriSpeech-like clips the throughput batches are made of.
        max_duration: padded seconds of audio per throughput batch.
        num_buckets: duration buckets.
        warmup: steps left out of the timing.
        steps: timed steps.
        probe_clip: clip length (s) of the memory-search batches.
        search_start: first batch duration (s) the search tries.
        search_limit: largest batch duration (s) the search tries.
        search_tolerance: the search stops when its bracket is narrower than this fraction.
        seed: seeds data and weights.
    """

    size: ModelSize = GPU_SIZE
    utterances: int = 2000
    max_duration: float = 600.0
    num_buckets: int = 30
    warmup: int = 5
    steps: int = 25
    probe_clip: float = 15.0
    search_start: float = 240.0
    search_limit: float = 7680.0
    search_tolerance: float = 0.05
    seed: int = 0


QUICK = GPUSettings(size=TINY_SIZE, utterances=12, max_duration=25.0, num_buckets=1, warmup=1, steps=2,
                    probe_clip=5.0, search_start=5.0, search_limit=20.0, search_tolerance=0.25)  # fmt: skip


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a known GPU, else None."""
    return next((flops for key, flops in PEAK_BF16 if key in device_name), None)


def largest_fitting(fits: Callable[[float], bool], start: float, limit: float, tolerance: float) -> float | None:
    """The largest size in (0, limit] for which `fits` holds, assuming it holds below a threshold and fails above.

    Doubles up from `start` (or halves down, at most 10 times) until the threshold is bracketed, then bisects until
    the bracket is narrower than `tolerance` x its lower end. Returns None when even `start / 1024` fails.
    """
    low, high = (start, None) if fits(start) else (None, start)
    for _ in range(10):
        if low is not None:
            break
        candidate = high / 2
        low, high = (candidate, high) if fits(candidate) else (None, candidate)
    if low is None:
        return None
    while high is None and low < limit:
        candidate = min(limit, low * 2)
        low, high = (candidate, None) if fits(candidate) else (low, candidate)
    while high is not None and high - low > tolerance * low:
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def synthetic_samples(encoder: SampleEncoder, durations: list[float], vocabulary: int, seed: int) -> list:
    """Encoded ASR samples with noise audio of the given durations (speed does not depend on the content)."""
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    rate = encoder.sample_rate
    samples = []
    for index, seconds in enumerate(durations):
        meta = speech_meta(f"utt{index}", seconds, rng, vocabulary)
        wave = 0.1 * torch.randn(round(seconds * rate), generator=generator)  # (S,)
        sample = Sample(meta["key"], meta["task"], meta["turns"], {"flac": (wave, rate)}, meta["transcript"])
        samples.append(encoder(sample, rng))
    return samples


def throughput_batches(encoder: SampleEncoder, settings: GPUSettings, pad_id: int) -> list[Batch]:
    """`warmup + steps` bucketed batches of LibriSpeech-like clips, collated as the DataModule would."""
    durations = librispeech_durations(settings.utterances, settings.seed)
    samples = synthetic_samples(encoder, durations, num_words(settings.size), settings.seed)
    spec = BatchingSpec(max_duration=settings.max_duration, num_buckets=settings.num_buckets)
    boundaries = estimate_boundaries(durations, settings.num_buckets)
    groups = bucket_batches(samples, spec, random.Random(settings.seed), EncodedSample.measure, boundaries)
    batches = [collate(items, "asr", pad_id) for items in groups]
    needed = settings.warmup + settings.steps
    if len(batches) < needed:
        raise ValueError(f"{settings.utterances} utterances make {len(batches)} batches; {needed} are needed.")
    return batches[:needed]


def probe_batch(sample: EncodedSample, duration: float, pad_id: int) -> Batch:
    """floor(duration / clip length) copies of one clip (at least one): a full batch of a single bucket."""
    return collate([sample] * max(1, math.floor(duration / sample.duration)), "probe", pad_id)


def memory_probe(module: JointSFT, sample: EncodedSample, pad_id: int, device: str) -> Callable[[float], bool]:
    """A predicate: does one bf16-mixed training step (forward, backward, AdamW) on a batch of this many seconds fit?"""
    model = module.model
    optimizer = build_optimizer(model.named_parameters(), module.optim_spec, on_cuda=device == "cuda")

    def fits(duration: float) -> bool:
        try:
            batch = probe_batch(sample, duration, pad_id).to(device)
            with torch.autocast(device, dtype=torch.bfloat16):
                inputs = model.prepare_inputs(batch)
                loss = module.compute_loss(
                    batch, inputs, model.hidden_states(inputs.inputs_embeds, inputs.attention_mask)
                )["loss"]
            loss.backward()
            optimizer.step()
            loss.item()  # waits for the step to finish
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            batch = inputs = loss = None
            optimizer.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()

    return fits


def run(quick: bool) -> Outcome:
    if not torch.cuda.is_available():
        raise BenchmarkSkipped("no CUDA GPU is available; run `lit-sllm bench gpu` on a machine with one.")
    return measure(QUICK if quick else GPUSettings(), "cuda")


def measure(settings: GPUSettings, device: str) -> Outcome:
    """The memory search, then the timed Lightning run, on `device` ("cuda"; "cpu" only to test the code path)."""
    with tempfile.TemporaryDirectory(prefix="lit_sllm_bench_gpu_") as tmp, quiet_lightning():
        root = Path(tmp)
        llm_dir, encoder_dir = write_model_folders(root / "models", settings.size)
        torch.manual_seed(settings.seed)
        with torch.device(device):  # random init right on the GPU
            module = build_module(JointSFT, llm_dir, encoder_dir, settings.size, llm_dtype="bfloat16")
        module.to(device)
        encoder = SampleEncoder(ChatFormatter(module.model.tokenizer), module.model.sample_rate)
        pad_id = module.model.tokenizer.pad_token_id
        probe_sample = synthetic_samples(encoder, [settings.probe_clip], num_words(settings.size), settings.seed)[0]
        fits = memory_probe(module, probe_sample, pad_id, device)
        largest = largest_fitting(fits, settings.search_start, settings.search_limit, settings.search_tolerance)
        del fits  # frees the probe's optimizer state
        gc.collect()
        torch.cuda.empty_cache()
        batches = throughput_batches(encoder, settings, pad_id)
        clock = StepClock(settings.warmup, synchronize=True)
        torch.cuda.reset_peak_memory_stats()
        trainer = bench_trainer(root, len(batches), clock, accelerator=ACCELERATORS[device], precision="bf16-mixed")
        trainer.fit(module, BatchList(batches))
        peak_memory = torch.cuda.max_memory_allocated()
        shapes = [step_shape(module.model, batch.to(device)) for batch in batches[settings.warmup :]]
        flops = [step_flops(module.model, shape) for shape in shapes]
    return outcome(settings, module, clock, shapes, flops, peak_memory, largest)


def outcome(
    settings: GPUSettings,
    module: JointSFT,
    clock: StepClock,
    shapes: list[StepShape],
    flops: list[int],
    peak_memory: int,
    largest: float | None,
) -> Outcome:
    """Tokens/s, audio s/s, MFU against the device's dense bf16 peak, peak memory and the largest batch that fits."""
    device = torch.cuda.get_device_name(0)
    step = sum(clock.step_times()) / len(clock.step_times())
    seconds = step * len(shapes)
    peak = peak_flops(device)
    mfu = sum(flops) / seconds / peak if peak else None
    tokens = sum(int(shape.llm_tokens.sum()) for shape in shapes)
    audio = sum(int(shape.encoder_frames.sum()) for shape in shapes) / 50  # Whisper: 50 encoder frames per second
    counts = {name: {"trainable": t, "total": n} for name, (t, n) in parameter_counts(module.model).items()}
    figures = {
        "device": device,
        "peak_bf16_flops": peak,
        "step_seconds": step,
        "llm_tokens_per_s": tokens / seconds,
        "audio_s_per_s": audio / seconds,
        "model_flops_per_step": sum(flops) / len(flops),
        "mfu": mfu,
        "peak_memory_gib": peak_memory / 2**30,
        "largest_batch_seconds": largest,
        "parameters": counts,
    }
    goal = Goal(
        target=f"MFU >= {GOAL_MFU:.0%} (joint SFT, bf16, ~1.1B LLM + Whisper-small encoder)",
        measured="unknown peak FLOP/s for " + device if mfu is None else f"MFU {mfu:.1%} on {device}",
        met=mfu is not None and mfu >= GOAL_MFU,
    )
    rows = [
        ["step time", f"{step * 1000:.0f} ms ({settings.max_duration:.0f} s of audio per batch, padded)"],
        ["LLM tokens/s (audio frames + text, no padding)", f"{tokens / seconds:,.0f}"],
        ["audio seconds/s", f"{audio / seconds:,.0f}"],
        ["MFU (dense bf16 peak)", "-" if mfu is None else f"{mfu:.1%}"],
        ["peak memory", f"{peak_memory / 2**30:.1f} GiB"],
        [
            "largest batch that fits",
            "-" if largest is None else f"{largest:.0f} s of audio ({settings.probe_clip:.0f} s clips)",
        ],
    ]
    total = sum(n for _, n in parameter_counts(module.model).values())
    title = f"JointSFT on {device}, {total / 1e9:.2f}B parameters"
    return Outcome(asdict(settings), figures, [table(title, ["measure", "value"], rows)], goal)
