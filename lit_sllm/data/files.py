"""Prediction inputs that are not shards: a folder of audio files, or a JSONL of {"audio": path, "prompt": ...}.

    lit-sllm predict --config run.yaml --config experiments/predict_files.yaml \\
        --data.inputs my_audio/ --ckpt_path runs/.../last.ckpt
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from lit_sllm.data.audio import read_audio, resample
from lit_sllm.data.batch import Batch
from lit_sllm.data.collate import EncodedSample, SampleEncoder, collate
from lit_sllm.data.prompts import DEFAULT_AUDIO_TOKEN
from lit_sllm.data.schema import Sample
from lit_sllm.data.tokenizer import load_formatter

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class FileRequest:
    """One input: an audio file and the instruction to answer about it."""

    key: str
    audio: Path
    prompt: str


def list_requests(inputs: str | Path, default_prompt: str) -> list[FileRequest]:
    """Requests from a folder (every audio file below it, sorted) or a JSONL file (one request per line)."""
    inputs = Path(inputs)
    if inputs.is_dir():
        files = sorted(p for p in inputs.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"data.inputs: no {AUDIO_SUFFIXES} files under {inputs}.")
        return [FileRequest(str(p.relative_to(inputs).with_suffix("")), p, default_prompt) for p in files]
    if not inputs.is_file():
        raise FileNotFoundError(f"data.inputs: {inputs} is neither a folder of audio files nor a JSONL file.")
    requests = []
    for number, line in enumerate(inputs.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            audio = Path(record["audio"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(
                f'{inputs}:{number}: expected {{"audio": path, "prompt": ...}}, got {line!r} ({err}).'
            ) from err
        audio = audio if audio.is_absolute() else inputs.parent / audio
        requests.append(
            FileRequest(record.get("key", f"{inputs.stem}-{number:06d}"), audio, record.get("prompt", default_prompt))
        )
    return requests


class FileRequests(Dataset):
    """Reads, downmixes and resamples each file; an unreadable file becomes None and is counted by the collate."""

    def __init__(self, requests: list[FileRequest], encoder: SampleEncoder) -> None:
        self.requests, self.encoder = requests, encoder

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, index: int) -> EncodedSample | None:
        request = self.requests[index]
        try:
            wave, rate = read_audio(request.audio)
        except Exception as err:  # noqa: BLE001 - any decoder failure is one skipped file, logged with its name
            log.warning("Skipping unreadable audio %s: %s", request.audio, err)
            return None
        wave = resample(wave, rate, self.encoder.sample_rate)
        turns = [{"role": "user", "parts": [{"audio": "wav"}, {"text": request.prompt}]}]
        sample = Sample(request.key, "predict", turns, audio={"wav": (wave, self.encoder.sample_rate)})
        return self.encoder(sample, random.Random(0))


class AudioFilesDataModule(L.LightningDataModule):
    """Predict-only data from plain audio files.

    Args:
        inputs: a folder of audio files (.wav/.flac/...), or a JSONL of {"audio": path, "prompt": str, "key": str}.
        tokenizer: the LLM tokenizer (linked from the model by the CLI).
        prompt: instruction for files that have none (every file of a folder).
        batch_size: files per batch.
        sample_rate: the encoder's rate; files are resampled to it.
        audio_token: placeholder string (linked from the model by the CLI).
        chat_template: the LLM's chat template setting (linked from the model by the CLI).
        chat_template_kwargs: the template's extra variables (linked from the model by the CLI).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        inputs: str,
        tokenizer: str = "",
        prompt: str = "Transcribe the audio.",
        batch_size: int = 8,
        sample_rate: int = 16000,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        chat_template: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.inputs, self.prompt, self.batch_size = inputs, prompt, batch_size
        self.sample_rate, self.num_workers = sample_rate, num_workers
        self.formatter = load_formatter(tokenizer, audio_token, chat_template, chat_template_kwargs)
        self.predict_set_names = ["files"]

    def predict_dataloader(self) -> DataLoader:
        encoder = SampleEncoder(self.formatter, self.sample_rate, generate=True)
        dataset = FileRequests(list_requests(self.inputs, self.prompt), encoder)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self._collate)

    def _collate(self, items: list[EncodedSample | None]) -> Batch:
        good = [item for item in items if item is not None]
        if not good:
            raise ValueError(f"Every file of a batch from {self.inputs} was unreadable; see the warnings above.")
        batch = collate(good, "files", self.formatter.tokenizer.pad_token_id)
        batch.extras["skipped"] = {"unreadable_audio": len(items) - len(good)} if len(good) < len(items) else {}
        return batch
