"""The toy speech encoder: a tiny Whisper pre-trained with CTC over characters on toy speech.

It is saved as a complete `WhisperModel` (a one-layer decoder rides along) so it loads with `from_pretrained(path)`
exactly like a hub Whisper, and it is trained through `HFSpeechEncoder`, so the suite later computes exactly the
features it learnt from. Training audio goes through the same 8-bit FLAC bytes the shards store. The CTC head and
its characters are saved beside the model (`ctc_head.safetensors`, `ctc_vocab.json`) for greedy transcription.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import WhisperConfig, WhisperModel

from lit_sllm.data.audio import read_audio, resample
from lit_sllm.data.pipeline import DataTally, ReadConfig, Slot, finite_samples, resolve_shards
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.toy.language import generate_sentences, sentence_stream
from lit_sllm.toy.speech import ToySpeech

log = logging.getLogger(__name__)

BLANK = "<blank>"
CHARACTERS = (BLANK, " ", *"abcdefghijklmnopqrstuvwxyz'")  # index 0 is the CTC blank
HEAD_FILE, VOCAB_FILE = "ctc_head.safetensors", "ctc_vocab.json"
POOL_BATCHES = 8  # batches drawn at once and sorted by length


@dataclass
class ToyEncoderConfig:
    """Size and schedule of the toy encoder.

    Attributes:
        d_model: width of the encoder (and of its frames).
        layers: encoder layers.
        heads: attention heads.
        ffn_dim: feed-forward width.
        max_seconds: longest input; sets `max_source_positions` (50 frames per second after the convolutions).
        steps: optimiser steps.
        batch_size: utterances per step.
        lr: peak learning rate (AdamW), reached after `warmup_steps`, then cosine decay to `lr / 20`.
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay.
        threads: CPU threads (`torch.set_num_threads`); fixed so runs repeat exactly.
        eval_every: steps between WER measurements on held-out "val" speech (logged).
        eval_utterances: held-out utterances the WER is measured on.
        target_wer: training stops early once the held-out WER is at most this.
    """

    d_model: int = 144
    layers: int = 4
    heads: int = 4
    ffn_dim: int = 576
    max_seconds: float = 8.0
    steps: int = 700
    batch_size: int = 24
    lr: float = 2e-3
    warmup_steps: int = 60
    weight_decay: float = 0.01
    threads: int = 2
    eval_every: int = 100
    eval_utterances: int = 64
    target_wer: float = 0.02


def whisper_config(config: ToyEncoderConfig) -> WhisperConfig:
    """A Whisper config with the toy encoder's sizes and a minimal one-layer decoder over a 32-token vocabulary."""
    return WhisperConfig(
        vocab_size=32,
        num_mel_bins=80,
        d_model=config.d_model,
        encoder_layers=config.layers,
        encoder_attention_heads=config.heads,
        encoder_ffn_dim=config.ffn_dim,
        decoder_layers=1,
        decoder_attention_heads=config.heads,
        decoder_ffn_dim=config.d_model,
        max_source_positions=math.ceil(config.max_seconds * 50),
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        begin_suppress_tokens=None,
    )


class CTCHead(nn.Module):
    """Frames (N, T, D) -> log-probabilities (N, T, V) over `vocab` (index 0: blank)."""

    def __init__(self, dim: int, vocab: Sequence[str] = CHARACTERS) -> None:
        super().__init__()
        self.vocab = list(vocab)
        self.proj = nn.Linear(dim, len(self.vocab))

    def forward(self, frames: Tensor) -> Tensor:
        return self.proj(frames).log_softmax(dim=-1)

    def encode(self, text: str) -> list[int]:
        """Character ids of `text` (lower-cased); characters outside the vocabulary raise a ValueError."""
        ids = {char: index for index, char in enumerate(self.vocab)}
        unknown = sorted({char for char in text.lower() if char not in ids})
        if unknown:
            raise ValueError(f"characters {unknown} of {text!r} are not in the CTC vocabulary {self.vocab[1:]}.")
        return [ids[char] for char in text.lower()]

    def decode(self, log_probs: Tensor, lengths: Tensor) -> list[str]:
        """Greedy CTC decoding of (N, T, V) log-probabilities: best path, repeats merged, blanks dropped."""
        texts = []
        for best, length in zip(log_probs.argmax(dim=-1).tolist(), lengths.tolist()):
            merged = [index for index, _ in itertools.groupby(best[:length])]
            texts.append(" ".join("".join(self.vocab[i] for i in merged if i != 0).split()))
        return texts

    def save(self, folder: str | Path) -> None:
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(folder) / HEAD_FILE))
        (Path(folder) / VOCAB_FILE).write_text(json.dumps(self.vocab) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> CTCHead:
        folder = Path(folder)
        missing = [name for name in (HEAD_FILE, VOCAB_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} has no {missing[0]}: it is not a toy encoder; build one with `lit-sllm toy build`."
            )
        state = load_file(str(folder / HEAD_FILE))
        head = cls(state["proj.weight"].shape[1], json.loads((folder / VOCAB_FILE).read_text()))
        head.load_state_dict(state)
        return head


def init_encoder(folder: str | Path, config: ToyEncoderConfig, seed: int) -> HFSpeechEncoder:
    """Saves a randomly initialised toy Whisper into `folder` and loads its encoder as the suite will."""
    torch.manual_seed(seed)
    WhisperModel(whisper_config(config)).save_pretrained(str(folder))
    return HFSpeechEncoder(str(folder))


def pad_batch(waves: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-padded (N, S) audio and (N,) lengths, as the suite's collate pads."""
    lengths = torch.tensor([wave.numel() for wave in waves])
    audio = torch.zeros(len(waves), int(lengths.max()))
    for row, wave in enumerate(waves):
        audio[row, : wave.numel()] = wave
    return audio, lengths


def stored_wave(flac: bytes, rate: int) -> Tensor:
    """A clip decoded from its shard bytes and resampled to `rate`, as the suite's pipeline reads it; (S,)."""
    wave, source_rate = read_audio(flac)
    return resample(wave, source_rate, rate)


def training_batches(
    speech: ToySpeech, config: ToyEncoderConfig, seed: int, rate: int
) -> Iterator[tuple[Tensor, Tensor, list[str]]]:
    """Endless (audio (N, S), lengths (N,), transcripts) of fresh "train" sentences, similar lengths together."""
    sentences = sentence_stream(seed, "train")
    rng = random.Random(f"toy-encoder/{seed}")
    while True:
        pool = []
        for sentence in itertools.islice(sentences, config.batch_size * POOL_BATCHES):
            pool.append((stored_wave(speech.speak(sentence.words, rng).flac(), rate), sentence.text))
        pool.sort(key=lambda item: item[0].numel())
        batches = [pool[start : start + config.batch_size] for start in range(0, len(pool), config.batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            audio, lengths = pad_batch([wave for wave, _ in batch])
            yield audio, lengths, [text for _, text in batch]


def ctc_loss(head: CTCHead, frames: Tensor, lengths: Tensor, texts: list[str]) -> Tensor:
    """Mean CTC loss per target character of (N, T, D) frames against `texts`."""
    targets = [torch.tensor(head.encode(text)) for text in texts]
    log_probs = head(frames).transpose(0, 1)  # (T, N, V)
    return nn.functional.ctc_loss(
        log_probs,
        torch.cat(targets),
        lengths,
        torch.tensor([len(target) for target in targets]),
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )


def _lr_factor(step: int, config: ToyEncoderConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return 0.05 + 0.475 * (1 + math.cos(math.pi * progress))


def held_out_speech(speech: ToySpeech, count: int, seed: int, rate: int) -> tuple[list[Tensor], list[str]]:
    """`count` "val" sentences spoken once, as stored and read back: ([waveform (S,)], [transcript])."""
    rng = random.Random(f"toy-encoder-val/{seed}")
    sentences = generate_sentences(count, seed, "val")
    return [stored_wave(speech.speak(s.words, rng).flac(), rate) for s in sentences], [s.text for s in sentences]


def speech_wer(
    encoder: HFSpeechEncoder, head: CTCHead, waves: list[Tensor], texts: list[str], batch: int = 16
) -> float:
    """Corpus WER (normalised text) of greedy CTC transcripts of `waves` against `texts`."""
    from lit_sllm.metrics import score

    hypotheses = []
    for start in range(0, len(waves), batch):
        hypotheses += transcribe(encoder, head, *pad_batch(waves[start : start + batch]))
    return score("wer", hypotheses, texts)["wer"]


def pretrain(
    encoder: HFSpeechEncoder, head: CTCHead, speech: ToySpeech, config: ToyEncoderConfig, seed: int
) -> dict[str, list]:
    """Trains `encoder.model` and `head` in place with CTC on fresh toy speech, until `config.steps` or until the
    held-out WER reaches `config.target_wer`.

    Returns:
        {"losses": loss of every step, "evaluations": [(step, held-out WER), ...]}.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    parameters = [p for p in [*encoder.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    held_out = held_out_speech(speech, config.eval_utterances, seed, encoder.sample_rate)
    history: dict[str, list] = {"losses": [], "evaluations": []}
    batches = training_batches(speech, config, seed, encoder.sample_rate)
    for step, (audio, lengths, texts) in enumerate(itertools.islice(batches, config.steps), 1):
        encoder.train()
        head.train()
        frames, frame_lengths = encoder(audio, lengths)  # (N, T, D), (N,)
        loss = ctc_loss(head, frames, frame_lengths, texts)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history["losses"].append(loss.item())
        if step % config.eval_every and step < config.steps:
            continue
        history["evaluations"].append((step, round(speech_wer(encoder.eval(), head.eval(), *held_out), 4)))
        log.info("toy encoder step %d/%d: CTC loss %.4f, held-out WER %.4f", step, config.steps, *_last(history))
        if history["evaluations"][-1][1] <= config.target_wer:
            break
    encoder.eval()
    head.eval()
    return history


def _last(history: dict[str, list]) -> tuple[float, float]:
    return history["losses"][-1], history["evaluations"][-1][1]


def save_encoder(folder: str | Path, encoder: HFSpeechEncoder, head: CTCHead) -> None:
    """Writes the trained encoder weights into the Whisper checkpoint in `folder`, and the CTC head beside it."""
    whisper = WhisperModel.from_pretrained(str(folder))
    whisper.get_encoder().load_state_dict(encoder.model.state_dict())
    whisper.save_pretrained(str(folder))
    head.save(folder)


def train_encoder(
    out_dir: str | Path, speech: ToySpeech, seed: int = 0, config: ToyEncoderConfig | None = None
) -> dict[str, Any]:
    """Builds, trains and saves the toy encoder with its CTC head into `out_dir`; returns the training figures."""
    config = config or ToyEncoderConfig()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    encoder = init_encoder(out_dir, config, seed)
    head = CTCHead(encoder.output_dim)
    start = time.perf_counter()
    history = pretrain(encoder, head, speech, config, seed)
    seconds = time.perf_counter() - start
    save_encoder(out_dir, encoder, head)
    tail = history["losses"][-min(50, len(history["losses"])) :]
    return {
        "parameters": sum(p.numel() for p in encoder.model.parameters()),
        "train_seconds": round(seconds, 1),
        "steps": len(history["losses"]),
        "first_loss": round(history["losses"][0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),
        "held_out_wer": history["evaluations"],
        "config": asdict(config),
    }


@torch.inference_mode()
def transcribe(encoder: HFSpeechEncoder, head: CTCHead, audio: Tensor, lengths: Tensor) -> list[str]:
    """Greedy CTC transcripts of (N, S) audio at the encoder's rate with (N,) valid lengths."""
    frames, frame_lengths = encoder(audio, lengths)  # (N, T, D), (N,)
    return head.decode(head(frames), frame_lengths)


def ctc_wer(encoder_dir: str | Path, shards: str | Sequence[str]) -> dict[str, Any]:
    """WER of the toy encoder's greedy CTC transcripts on a speech set, read through the suite's pipeline.

    Returns:
        {"wer": corpus WER (0-1, normalised text), "samples": utterances scored}.
    """
    encoder, head = HFSpeechEncoder(str(encoder_dir)).eval(), CTCHead.load(encoder_dir)
    read = ReadConfig(sample_rate=encoder.sample_rate)
    samples = list(finite_samples(resolve_shards(shards), read, Slot(), DataTally()))
    waves = [next(iter(sample.audio.values()))[0] for sample in samples]
    wer = speech_wer(encoder, head, waves, [sample.transcript or "" for sample in samples])
    return {"wer": round(wer, 4), "samples": len(samples)}
