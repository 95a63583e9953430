"""Pseudo-speech: a sentence's token embeddings, made to vary the way a speech adapter's output varies.

A real frozen LLM reads a connector's output although it is off the embedding manifold and comes at its own rate;
the toy LLM learns to do the same by reading, in place of each spoken sentence, its token embeddings repeated 1-4
times per word, mixed with neighbours, rescaled and noised. The sentence is spliced in as an audio clip with the
suite's own `splice_audio`, so pre-training and evaluation take exactly the path the speech LLM takes.

A plan (which token, mixed with which neighbour by how much, gain and noise, per output frame) is drawn in the data
worker; `plan_frames` turns plans into frames with the live embedding table, so gradients reach it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lit_sllm.data.prompts import ChatFormatter, EncodedDialog


@dataclass(frozen=True)
class PseudoSpeech:
    """How pseudo-speech varies; each value is drawn per sentence from its range.

    Attributes:
        exact_prob: chance a sentence is given as its exact token embeddings.
        repeats: fewest and most frames per token (drawn per token around a rate drawn per sentence).
        mix: largest weight of a neighbouring token's embedding in a frame.
        gain: smallest and largest scale of the sentence's frames.
        noise: largest Gaussian noise std, relative to the embedding table's RMS.
        partial_prob: chance that only alternating word runs are perturbed (the rest exact), as in interleaving.
    """

    exact_prob: float = 0.2
    repeats: tuple[int, int] = (1, 4)
    mix: float = 0.5
    gain: tuple[float, float] = (0.5, 2.0)
    noise: float = 0.3
    partial_prob: float = 0.2


@dataclass
class FramePlan:
    """Per output frame of one sentence: token, neighbour, neighbour weight, gain and noise std (relative)."""

    token: list[int] = field(default_factory=list)
    neighbour: list[int] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    gain: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)

    def add(self, token: int, neighbour: int, weight: float, gain: float, noise: float) -> None:
        self.token.append(token)
        self.neighbour.append(neighbour)
        self.weight.append(weight)
        self.gain.append(gain)
        self.noise.append(noise)

    def __len__(self) -> int:
        return len(self.token)


def fixed_plan(
    tokens: Sequence[int], repeat: int = 1, mix: float = 0.0, gain: float = 1.0, noise: float = 0.0
) -> FramePlan:
    """The same perturbation on every token (the robustness table's variants)."""
    plan = FramePlan()
    for index, token in enumerate(tokens):
        neighbour = tokens[min(index + 1, len(tokens) - 1)]
        for _ in range(repeat):
            plan.add(token, neighbour, mix, gain, noise)
    return plan


def random_plan(tokens: Sequence[int], rng: random.Random, spec: PseudoSpeech) -> FramePlan:
    """A plan drawn from `spec`: a per-sentence rate, gain and noise, per-frame neighbour weights."""
    if rng.random() < spec.exact_prob:
        return fixed_plan(tokens)
    rate = rng.uniform(spec.repeats[0], spec.repeats[1])
    gain = rng.uniform(*spec.gain)
    noise = rng.uniform(0.0, spec.noise)
    partial = rng.random() < spec.partial_prob
    perturb_run, run_left = True, rng.randint(1, 3)
    plan = FramePlan()
    for index, token in enumerate(tokens):
        if partial and run_left == 0:
            perturb_run, run_left = not perturb_run, rng.randint(1, 3)
        run_left -= 1
        if partial and not perturb_run:
            plan.add(token, token, 0.0, 1.0, 0.0)
            continue
        count = min(spec.repeats[1], max(spec.repeats[0], round(rate + rng.uniform(-0.5, 0.5))))
        before, after = tokens[max(index - 1, 0)], tokens[min(index + 1, len(tokens) - 1)]
        for copy in range(count):
            neighbour = before if copy < count / 2 else after  # early frames blend into the word before
            plan.add(token, neighbour, rng.uniform(0.0, spec.mix), gain * rng.uniform(0.9, 1.1), noise)
    return plan


def plan_frames(plans: Sequence[FramePlan], embedding: nn.Embedding, generator: torch.Generator | None = None):
    """Frames of each plan from the (live) embedding table: (N, T, H) zero-padded, and (N,) lengths."""
    weight = embedding.weight  # (V, H)
    lengths = torch.tensor([len(plan) for plan in plans], dtype=torch.long)
    width = int(lengths.max()) if len(plans) else 0

    def padded(values: str, dtype: torch.dtype) -> Tensor:
        rows = [getattr(plan, values) + [0] * (width - len(plan)) for plan in plans]
        return torch.tensor(rows, dtype=dtype, device=weight.device)  # (N, T)

    token, neighbour = padded("token", torch.long), padded("neighbour", torch.long)
    mix, gain, noise = (padded(name, weight.dtype)[..., None] for name in ("weight", "gain", "noise"))
    frames = (1 - mix) * embedding(token) + mix * embedding(neighbour)  # (N, T, H)
    rms = weight.detach().pow(2).mean().sqrt()
    jitter = torch.randn(frames.shape, generator=generator, dtype=frames.dtype).to(frames.device)
    return frames * gain + noise * rms * jitter, lengths


def sentence_parts_as_audio(turns: list[dict], prompts: frozenset[str]) -> tuple[list[dict], list[str]]:
    """The turns with every user text part that is not a prompt (the sentences) replaced by an audio part;
    returns them and the replaced texts in order."""
    texts: list[str] = []
    out = []
    for turn in turns:
        parts = []
        for part in turn["parts"]:
            if turn["role"] == "user" and "text" in part and part["text"] not in prompts:
                parts.append({"audio": f"sentence{len(texts)}"})
                texts.append(part["text"])
            else:
                parts.append(part)
        out.append({"role": turn["role"], "parts": parts})
    return out, texts


def encode_with_sentences(
    formatter: ChatFormatter, turns: list[dict], prompts: frozenset[str], add_generation_prompt: bool = False
) -> tuple[EncodedDialog, list[list[int]]]:
    """Chat-encodes `turns` with one placeholder per sentence; returns it and each sentence's token ids."""
    spoken, texts = sentence_parts_as_audio(turns, prompts)
    encoded = formatter.encode(spoken, add_generation_prompt=add_generation_prompt)
    return encoded, [formatter.tokenize(text) for text in texts]
