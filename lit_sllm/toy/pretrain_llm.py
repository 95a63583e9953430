"""Pre-trains the toy LLM: a tiny Llama that learns the toy text tasks from chat-formatted samples.

Samples are encoded with the suite's own `ChatFormatter`, so the LLM learns exactly the format the recipes feed it
later, with loss on assistant tokens only. Every sentence in a user turn is read as pseudo-speech
(`lit_sllm.toy.pseudo_speech`: its token embeddings repeated, mixed, rescaled and noised, spliced in as an audio
clip), and a share of samples asks the LLM to copy the sentence, so that, like a real LLM, it reads off-manifold
inputs at a speech adapter's rate and can repeat what it reads. A plain PyTorch loop is enough for a build tool; the
run is deterministic for a seed on a fixed number of CPU threads. The result is saved with `save_pretrained` and
loads with `from_pretrained(path)` like any hub model.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from lit_sllm.data.batch import IGNORE_INDEX
from lit_sllm.data.prompts import ChatFormatter, EncodedDialog
from lit_sllm.models.splice import splice_audio
from lit_sllm.threads import torch_threads
from lit_sllm.toy.evaluate_llm import evaluate_llm
from lit_sllm.toy.pseudo_speech import (
    FramePlan,
    PseudoSpeech,
    encode_with_sentences,
    fixed_plan,
    plan_frames,
    random_plan,
)
from lit_sllm.toy.tasks import all_prompts, training_samples
from lit_sllm.toy.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

POOL_BATCHES = 16  # batches drawn at once and sorted by length


@dataclass
class ToyLLMConfig:
    """Size and schedule of the toy LLM.

    Attributes:
        hidden_size: width of the residual stream.
        num_layers: decoder layers.
        num_heads: attention heads (and key/value heads).
        intermediate_size: width of the SwiGLU feed-forward layer.
        max_positions: longest sequence in tokens.
        steps: optimiser steps.
        batch_size: samples per step.
        lr: peak learning rate (AdamW), reached after `warmup_steps`, then cosine decay to `lr / 10`.
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay.
        chat_fraction: share of multi-turn chats among the training samples.
        pair_fraction: share of two-question tasks among the one-exchange task samples.
        copy_fraction: share of samples that ask for the sentence itself (`lit_sllm.toy.tasks.copy_sample`).
        pseudo_speech: how sentences vary as pseudo-speech; None reads them as exact token embeddings.
        threads: CPU threads of the model (`torch.set_num_threads`) while training; fixed so runs repeat exactly.
            One thread plus one data worker uses two cores well; two model threads were 13x slower than one on a
            two-core machine that other jobs shared (their threads wait on each other).
        data_worker: encode samples in a worker process, in parallel with training (else in the main process).
        log_every: steps between loss log lines.
    """

    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 256
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    chat_fraction: float = 0.25
    pair_fraction: float = 0.35
    copy_fraction: float = 0.15
    pseudo_speech: PseudoSpeech | None = field(default_factory=PseudoSpeech)
    threads: int = 1
    data_worker: bool = True
    log_every: int = 100


def build_model(tokenizer: PreTrainedTokenizerBase, config: ToyLLMConfig, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama sized by `config`, with the tokenizer's special ids in its configs."""
    torch.manual_seed(seed)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(llama)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


@dataclass
class PlannedSample:
    """One training sample: chat tokens with a placeholder per sentence, and each sentence's frame plan."""

    encoded: EncodedDialog
    plans: list[FramePlan]

    @property
    def length(self) -> int:
        return len(self.encoded.input_ids) - len(self.plans) + sum(len(plan) for plan in self.plans)


def pad_planned(samples: list[PlannedSample], pad_id: int) -> dict[str, Any]:
    """Right-padded input_ids, attention_mask and labels, each (B, L), and the sentences' plans in order."""
    encoded = [sample.encoded for sample in samples]
    width = max(len(e.input_ids) for e in encoded)
    return {
        "input_ids": torch.tensor([e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in encoded]),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in encoded]),
        "labels": torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e.labels)) for e in encoded]),
        "plans": [plan for sample in samples for plan in sample.plans],
    }


def plan_sample(formatter: ChatFormatter, sample: dict, rng: random.Random, config: ToyLLMConfig) -> PlannedSample:
    """A sample encoded with its sentences as pseudo-speech drawn from `config.pseudo_speech`."""
    encoded, sentences = encode_with_sentences(formatter, sample["turns"], _PROMPTS)
    spec = config.pseudo_speech
    plans = [random_plan(tokens, rng, spec) if spec else fixed_plan(tokens) for tokens in sentences]
    return PlannedSample(encoded, plans)


_PROMPTS = all_prompts()


def training_batches(formatter: ChatFormatter, config: ToyLLMConfig, seed: int) -> Iterator[dict[str, Any]]:
    """Endless batches of samples of similar length (little padding), in a seeded random order."""
    samples = training_samples(seed, config.chat_fraction, config.pair_fraction, config.copy_fraction)
    rng = random.Random(f"toy-batches/{seed}")
    size = config.batch_size
    while True:
        pool = [
            plan_sample(formatter, sample, rng, config) for sample in itertools.islice(samples, size * POOL_BATCHES)
        ]
        too_long = [p.length for p in pool if p.length > config.max_positions]
        if too_long:
            raise ValueError(f"Toy samples of {too_long} positions exceed max_positions={config.max_positions}.")
        pool.sort(key=lambda p: p.length)
        batches = [pool[start : start + size] for start in range(0, len(pool), size)]
        rng.shuffle(batches)
        for batch in batches:
            yield pad_planned(batch, formatter.tokenizer.pad_token_id)


def pseudo_speech_loss(model: LlamaForCausalLM, batch: dict[str, Any], audio_id: int, generator: torch.Generator):
    """The LM loss of one batch with its sentences spliced in as pseudo-speech frames."""
    embedding = model.get_input_embeddings()
    ids = batch["input_ids"]
    token_embeds = embedding(ids.masked_fill(ids == audio_id, 0))  # (B, L, H)
    frames, lengths = plan_frames(batch["plans"], embedding, generator)  # (N, T, H), (N,)
    spliced = splice_audio(token_embeds, ids, batch["attention_mask"], batch["labels"], frames, lengths, audio_id)
    return model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, labels=spliced.labels).loss


class _BatchStream(torch.utils.data.IterableDataset):
    """`training_batches` for a DataLoader, so a worker process encodes samples while the model trains."""

    def __init__(self, formatter: ChatFormatter, config: ToyLLMConfig, seed: int) -> None:
        self.formatter, self.config, self.seed = formatter, config, seed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return training_batches(self.formatter, self.config, self.seed)


def _lr_factor(step: int, config: ToyLLMConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


def pretrain(model: LlamaForCausalLM, formatter: ChatFormatter, config: ToyLLMConfig, seed: int) -> list[float]:
    """Trains `model` in place on toy text samples on `config.threads` CPU threads; returns every step's loss."""
    with torch_threads(config.threads):
        return _train(model, formatter, config, seed)


def _train(model: LlamaForCausalLM, formatter: ChatFormatter, config: ToyLLMConfig, seed: int) -> list[float]:
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    model.train()
    losses = []
    # One worker keeps the batch order exactly as `training_batches` makes it.
    batches = torch.utils.data.DataLoader(
        _BatchStream(formatter, config, seed), batch_size=None, num_workers=int(config.data_worker)
    )
    generator = torch.Generator().manual_seed(seed)
    audio_id = formatter.audio_token_id
    for step, batch in enumerate(itertools.islice(batches, config.steps)):
        loss = pseudo_speech_loss(model, batch, audio_id, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % config.log_every == 0:
            log.info("toy LLM step %d/%d: loss %.4f", step + 1, config.steps, losses[-1])
    model.eval()
    return losses


def train_llm(out_dir: str | Path, seed: int = 0, config: ToyLLMConfig | None = None) -> dict[str, Any]:
    """Trains the tokenizer and the LLM and saves both into `out_dir`; returns the training figures."""
    config = config or ToyLLMConfig()
    tokenizer = build_tokenizer(out_dir, seed)
    formatter = ChatFormatter(tokenizer)
    model = build_model(tokenizer, config, seed)
    start = time.perf_counter()
    losses = pretrain(model, formatter, config, seed)
    seconds = time.perf_counter() - start
    model.save_pretrained(str(out_dir))
    tail = losses[-min(50, len(losses)) :]
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "train_seconds": round(seconds, 1),
        "steps": config.steps,
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),
        "config": asdict(config),
    }


def build_llm(out_dir: str | Path, seed: int = 0, config: ToyLLMConfig | None = None, eval_per_task: int = 100) -> dict:
    """Builds the toy LLM into `out_dir` (tokenizer + weights) and measures it.

    Returns:
        Training figures (parameters, train_seconds, losses, config), `size_mb` of the saved folder, `eval_seconds`
        and `accuracy` per evaluation group and task (see `lit_sllm.toy.evaluate_llm`).
    """
    config = config or ToyLLMConfig()
    figures = train_llm(out_dir, seed, config)
    start = time.perf_counter()
    with torch_threads(config.threads):
        figures["accuracy"] = evaluate_llm(out_dir, per_task=eval_per_task, seed=seed)
    figures["eval_seconds"] = round(time.perf_counter() - start, 1)
    figures["size_mb"] = round(sum(f.stat().st_size for f in Path(out_dir).iterdir() if f.is_file()) / 2**20, 2)
    for group, scores in figures["accuracy"].items():
        log.info("toy LLM %s accuracy: %.3f %s", group, scores["mean"], scores["tasks"])
    return figures
