"""The toy speech encoder: a tiny Whisper pre-trained with CTC over characters on toy speech.

It is saved as a complete `WhisperModel` (a one-layer decoder rides along) so it loads with `from_pretrained(path)`
exactly like a hub Whisper, and it is trained through `WhisperSpeechEncoder`, so the suite later computes exactly the
features it learnt from. Training audio goes through the same 8-bit FLAC bytes the shards store. The CTC head and
its characters are saved beside the model (`ctc_head.safetensors`, `ctc_vocab.json`) for greedy transcription.

Word times are exact in toy speech, so next to the CTC loss a frame cross-entropy on characters spread over their
word's frames (`alignment_targets`) gives the from-scratch model a dense signal on every frame (`align_weight: 0`
trains with CTC alone, for comparison).
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
from lit_sllm.data.tts import Word
from lit_sllm.metrics import score
from lit_sllm.models.encoders import WhisperSpeechEncoder
from lit_sllm.threads import torch_threads
from lit_sllm.toy.language import generate_sentences, sentence_stream
from lit_sllm.toy.speech import ToySpeech

log = logging.getLogger(__name__)

BLANK = "<blank>"
CHARACTERS = (BLANK, " ", *"abcdefghijklmnopqrstuvwxyz'")  # index 0 is the CTC blank
HEAD_FILE, VOCAB_FILE = "ctc_head.safetensors", "ctc_vocab.json"
POOL_BATCHES = 8  # batches drawn at once and sorted by length
FRAME_SECONDS = 0.02  # one Whisper encoder frame: a 10 ms feature hop times the stride-2 convolution


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
        threads: CPU threads of the model while training; fixed so runs repeat exactly. One thread plus the
            data worker uses two cores well, and threads that wait on each other on a shared machine are slow.
        data_worker: synthesise training speech in a worker process, in parallel with training.
        eval_every: steps between WER measurements on held-out "val" speech (logged).
        eval_utterances: held-out utterances the WER is measured on.
        target_wer: training stops early once the held-out WER is at most this.
        align_weight: weight of the frame cross-entropy on the exact word times (`alignment_targets`) added to
            the CTC loss; 0 trains with CTC alone.
    """

    d_model: int = 144
    layers: int = 4
    heads: int = 4
    ffn_dim: int = 576
    max_seconds: float = 8.0
    steps: int = 1400
    batch_size: int = 12
    lr: float = 3e-3
    warmup_steps: int = 60
    weight_decay: float = 0.01
    threads: int = 1
    data_worker: bool = True
    eval_every: int = 100
    eval_utterances: int = 64
    target_wer: float = 0.02
    align_weight: float = 1.0


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
        self.ids = {char: index for index, char in enumerate(self.vocab)}
        self.proj = nn.Linear(dim, len(self.vocab))

    def forward(self, frames: Tensor) -> Tensor:
        return self.proj(frames).log_softmax(dim=-1)

    def encode(self, text: str) -> list[int]:
        """Character ids of `text` (lower-cased); characters outside the vocabulary raise a ValueError."""
        unknown = sorted({char for char in text.lower() if char not in self.ids})
        if unknown:
            raise ValueError(f"characters {unknown} of {text!r} are not in the CTC vocabulary {self.vocab[1:]}.")
        return [self.ids[char] for char in text.lower()]

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


def init_encoder(folder: str | Path, config: ToyEncoderConfig, seed: int) -> WhisperSpeechEncoder:
    """Saves a randomly initialised toy Whisper into `folder` and loads its encoder as the suite will."""
    torch.manual_seed(seed)
    WhisperModel(whisper_config(config)).save_pretrained(str(folder))
    return WhisperSpeechEncoder(str(folder))


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
) -> Iterator[tuple[Tensor, Tensor, list[str], list[list[Word]]]]:
    """Endless (audio (N, S), lengths (N,), transcripts, word times) of fresh "train" sentences, similar lengths
    together."""
    sentences = sentence_stream(seed, "train")
    rng = random.Random(f"toy-encoder/{seed}")
    while True:
        pool = []
        for sentence in itertools.islice(sentences, config.batch_size * POOL_BATCHES):
            utterance = speech.speak(sentence.words, rng)
            pool.append((stored_wave(utterance.flac(), rate), sentence.text, utterance.words))
        pool.sort(key=lambda item: item[0].numel())
        batches = [pool[start : start + config.batch_size] for start in range(0, len(pool), config.batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            audio, lengths = pad_batch([wave for wave, _, _ in batch])
            yield audio, lengths, [text for _, text, _ in batch], [words for _, _, words in batch]


def alignment_targets(head: CTCHead, words: Sequence[Word], frames: int) -> Tensor:
    """A character for every encoder frame of one utterance, from its exact word times; (frames,) ids.

    A word's frames (those whose centre lies inside it) share its characters in equal runs, and a blank opens the
    second of two equal letters so that merging repeats keeps both; frames between words are a space, frames before
    the first and after the last word are blank. Read with the CTC rule (merge repeats, drop blanks) the targets
    spell the transcript, so the cross-entropy on them teaches the output that CTC decoding reads.
    """
    targets = torch.zeros(frames, dtype=torch.long)
    centres = (torch.arange(frames) + 0.5) * FRAME_SECONDS
    space = head.encode(" ")[0]
    for index, (word, start, end) in enumerate(words):
        inside = ((centres >= start) & (centres < end)).nonzero().flatten()
        chars = head.encode(word)
        if len(inside):
            runs = (torch.arange(len(inside)) * len(chars)) // len(inside)  # each frame's character, 0..len-1
            targets[inside] = torch.tensor(chars)[runs]
            for run in range(1, len(chars)):
                frames_of_run = inside[runs == run]
                if chars[run] == chars[run - 1] and len(frames_of_run) > 1:
                    targets[frames_of_run[0]] = 0
        if index + 1 < len(words):
            targets[(centres >= end) & (centres < words[index + 1][1])] = space
    return targets


def alignment_loss(head: CTCHead, log_probs: Tensor, lengths: Tensor, words: list[list[Word]]) -> Tensor:
    """Mean frame cross-entropy of (N, T, V) log-probabilities against `alignment_targets` (padding ignored)."""
    targets = torch.full(log_probs.shape[:2], -100, dtype=torch.long)
    for row, (utterance_words, length) in enumerate(zip(words, lengths.tolist())):
        targets[row, :length] = alignment_targets(head, utterance_words, length)
    return nn.functional.nll_loss(log_probs.flatten(0, 1), targets.flatten(), ignore_index=-100)


def ctc_loss(head: CTCHead, log_probs: Tensor, lengths: Tensor, texts: list[str]) -> Tensor:
    """Mean CTC loss per target character of (N, T, V) log-probabilities against `texts`."""
    targets = [torch.tensor(head.encode(text)) for text in texts]
    return nn.functional.ctc_loss(
        log_probs.transpose(0, 1),  # (T, N, V)
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
    encoder: WhisperSpeechEncoder, head: CTCHead, waves: list[Tensor], texts: list[str], batch: int = 16
) -> float:
    """Corpus WER (normalised text) of greedy CTC transcripts of `waves` against `texts`."""
    hypotheses = []
    for start in range(0, len(waves), batch):
        hypotheses += transcribe(encoder, head, *pad_batch(waves[start : start + batch]))
    return score("wer", hypotheses, texts)["wer"]


def pretrain(
    encoder: WhisperSpeechEncoder, head: CTCHead, speech: ToySpeech, config: ToyEncoderConfig, seed: int
) -> dict[str, list]:
    """Trains `encoder.model` and `head` in place with CTC on fresh toy speech, until `config.steps` or until the
    held-out WER reaches `config.target_wer`.

    Returns:
        {"losses": loss of every step, "evaluations": [(step, held-out WER), ...]}.
    """
    with torch_threads(config.threads):
        return _train(encoder, head, speech, config, seed)


class _SpeechBatches(torch.utils.data.IterableDataset):
    """`training_batches` for a DataLoader, so a worker process synthesises speech while the model trains."""

    def __init__(self, speech: ToySpeech, config: ToyEncoderConfig, seed: int, rate: int) -> None:
        self.speech, self.config, self.seed, self.rate = speech, config, seed, rate

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, list[str], list[list[Word]]]]:
        return training_batches(self.speech, self.config, self.seed, self.rate)


def _train(
    encoder: WhisperSpeechEncoder, head: CTCHead, speech: ToySpeech, config: ToyEncoderConfig, seed: int
) -> dict[str, list]:
    torch.manual_seed(seed)
    parameters = [p for p in [*encoder.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    held_out = held_out_speech(speech, config.eval_utterances, seed, encoder.sample_rate)
    history: dict[str, list] = {"losses": [], "evaluations": []}
    # One worker keeps the batch order exactly as `training_batches` makes it.
    stream = _SpeechBatches(speech, config, seed, encoder.sample_rate)
    batches = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=int(config.data_worker))
    for step, (audio, lengths, texts, words) in enumerate(itertools.islice(batches, config.steps), 1):
        encoder.train()
        head.train()
        frames, frame_lengths = encoder(audio, lengths)  # (N, T, D), (N,)
        log_probs = head(frames)
        loss = ctc_loss(head, log_probs, frame_lengths, texts)
        if config.align_weight:
            loss = loss + config.align_weight * alignment_loss(head, log_probs, frame_lengths, words)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history["losses"].append(loss.item())
        if step % config.eval_every and step < config.steps:
            continue
        history["evaluations"].append((step, round(speech_wer(encoder.eval(), head.eval(), *held_out), 4)))
        log.info("toy encoder step %d/%d: loss %.4f, held-out WER %.4f", step, config.steps, *_last(history))
        if history["evaluations"][-1][1] <= config.target_wer:
            break
    encoder.eval()
    head.eval()
    return history


def _last(history: dict[str, list]) -> tuple[float, float]:
    return history["losses"][-1], history["evaluations"][-1][1]


def save_encoder(folder: str | Path, encoder: WhisperSpeechEncoder, head: CTCHead) -> None:
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
def transcribe(encoder: WhisperSpeechEncoder, head: CTCHead, audio: Tensor, lengths: Tensor) -> list[str]:
    """Greedy CTC transcripts of (N, S) audio at the encoder's rate with (N,) valid lengths."""
    frames, frame_lengths = encoder(audio, lengths)  # (N, T, D), (N,)
    return head.decode(head(frames), frame_lengths)


def ctc_wer(encoder_dir: str | Path, shards: str | Sequence[str]) -> dict[str, Any]:
    """WER of the toy encoder's greedy CTC transcripts on a speech set, read through the suite's pipeline.

    Returns:
        {"wer": corpus WER (0-1, normalised text), "samples": utterances scored}.
    """
    encoder, head = WhisperSpeechEncoder(str(encoder_dir)).eval(), CTCHead.load(encoder_dir)
    read = ReadConfig(sample_rate=encoder.sample_rate)
    samples = list(finite_samples(resolve_shards(shards), read, Slot(), DataTally()))
    waves = [next(iter(sample.audio.values()))[0] for sample in samples]
    wer = speech_wer(encoder, head, waves, [sample.transcript or "" for sample in samples])
    return {"wer": round(wer, 4), "samples": len(samples)}
