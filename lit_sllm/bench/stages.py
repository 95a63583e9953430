"""Where the data pipeline's time goes: each stage of turning shards into batches, timed alone, in this process."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoTokenizer

from lit_sllm.data.audio import decode_audio, resample
from lit_sllm.data.batching import fixed_batches
from lit_sllm.data.collate import SampleEncoder, collate
from lit_sllm.data.pipeline import DataTally, read_shard, resolve_shards
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.data.schema import Sample, parse_meta
from lit_sllm.models.features import LogMelFeatures

LOADER_STAGES = ("tar read", "metadata", "decode", "resample", "encode", "collate")


class StageClock:
    """Adds up the wall-clock seconds spent in named stages."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] += time.perf_counter() - start


def stage_seconds(shards: Path, tokenizer_dir: Path, sample_rate: int, rows: int) -> dict[str, float]:
    """Seconds each stage takes over every sample of a shard set, one shard at a time.

    The loader's stages are `LOADER_STAGES`: tar read (`read_shard`), metadata (JSON and schema), decode (FLAC),
    resample (to `sample_rate`), encode (chat template and labels) and collate (padding batches of `rows`).
    "features" is the log-mel front end on those batches, which the model runs on the accelerator, not the loader.
    """
    clock, tally = StageClock(), DataTally()
    encoder = SampleEncoder(ChatFormatter(AutoTokenizer.from_pretrained(tokenizer_dir)), sample_rate)
    pad_id, rng = encoder.formatter.tokenizer.pad_token_id, random.Random(0)
    features = LogMelFeatures(n_mels=80, whisper_scaling=True)
    for shard in resolve_shards(str(shards)):
        with clock("tar read"):
            raws = list(read_shard(shard.url, tally))
        with clock("metadata"):
            metas = [parse_meta(json.loads(raw["json"])) for raw in raws]
        with clock("decode"):
            decoded = [decode_audio(raw["flac"]) for raw in raws]
        with clock("resample"):
            waves = [resample(wave, rate, sample_rate) for wave, rate in decoded]  # (S,) each
        samples = [
            Sample(raw["__key__"], meta["task"], meta["turns"], {"flac": (wave, sample_rate)})
            for raw, meta, wave in zip(raws, metas, waves)
        ]
        with clock("encode"):
            encoded = [encoder(sample, rng) for sample in samples]
        with clock("collate"):
            batches = [collate(items, "stages", pad_id) for items in fixed_batches(encoded, rows)]
        with clock("features"), torch.no_grad():
            for batch in batches:
                features(batch.audio, batch.audio_lengths)  # (N, 80, T)
    if tally.total:
        raise RuntimeError(f"The benchmark's own shards in {shards} had unreadable parts: {dict(tally.total)}.")
    return dict(clock.seconds)
