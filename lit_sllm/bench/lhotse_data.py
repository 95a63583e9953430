"""The loader a NeMo user would bring to the data benchmark: lhotse over the same FLAC files as the plain loader.

A `CutSet` of one recording per file with its transcript as a supervision, lhotse's `DynamicBucketingSampler` with
the pipeline's duration budget and bucket count, and a map-style dataset that loads each cut's audio resampled to
16 kHz by lhotse (`cut.resample`) and encodes the conversation with the same `SampleEncoder` and `collate` as the
other loaders. It runs in a torch DataLoader as lhotse recommends: the sampler passed as `sampler=` with
`batch_size=None`, so each index the dataset is given is a whole batch of cuts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from lit_sllm.data.batch import Batch
from lit_sllm.data.collate import SampleEncoder, collate
from lit_sllm.data.schema import Sample

try:
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.dataset import DynamicBucketingSampler
except ImportError as err:
    raise ImportError(
        "The data benchmark compares against lhotse, which is not installed: pip install 'lit-sllm[bench]'."
    ) from err


def folder_cuts(folder: Path, manifest: Path) -> CutSet:
    """One cut per `<key>.flac` in `folder`: the recording read from the file's header, one supervision over the
    whole clip carrying the transcript (and, as custom fields, the task and the user's prompt text). The cuts are
    written to the JSONL `manifest` and read back lazily, as NeMo reads its lhotse manifests."""
    recordings, supervisions = [], []
    for path in sorted(folder.glob("*.flac")):
        meta = json.loads(path.with_suffix(".json").read_text())
        recording = Recording.from_file(path, recording_id=path.stem)
        prompt = " ".join(part["text"] for part in meta["turns"][0]["parts"] if "text" in part)
        recordings.append(recording)
        supervisions.append(
            SupervisionSegment(
                id=path.stem,
                recording_id=path.stem,
                start=0.0,
                duration=recording.duration,
                text=meta["transcript"],
                custom={"task": meta["task"], "prompt": prompt},
            )
        )
    cuts = CutSet.from_manifests(RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions))
    cuts.to_file(manifest)
    return CutSet.from_jsonl_lazy(manifest)


class LhotseSpeechDataset(Dataset):
    """Map-style dataset indexed by a `CutSet` (one batch of cuts): loads, resamples, encodes and collates it."""

    def __init__(self, encoder: SampleEncoder, pad_id: int) -> None:
        self.encoder = encoder
        self.pad_id = pad_id

    def __getitem__(self, cuts: CutSet) -> Batch:
        items = []
        for cut in cuts:
            supervision = cut.supervisions[0]
            wave = torch.from_numpy(cut.resample(self.encoder.sample_rate).load_audio()[0])  # (S,) float32, mono
            turns = [
                {"role": "user", "parts": [{"audio": "flac"}, {"text": supervision.custom["prompt"]}]},
                {"role": "assistant", "parts": [{"text": supervision.text}]},
            ]
            audio = {"flac": (wave, self.encoder.sample_rate)}
            sample = Sample(cut.id, supervision.custom["task"], turns, audio)
            items.append(self.encoder(sample, random.Random(cut.id)))
        return collate(items, source="lhotse", pad_id=self.pad_id)


def lhotse_loader(
    cuts: CutSet, encoder: SampleEncoder, pad_id: int, max_duration: float, num_buckets: int, workers: int, seed: int
) -> DataLoader:
    """A DataLoader over `cuts` batched by `DynamicBucketingSampler` (`max_duration` padded seconds per batch),
    shuffled, keeping the last partial batches (every cut once per epoch)."""
    sampler = DynamicBucketingSampler(
        cuts, max_duration=max_duration, num_buckets=num_buckets, shuffle=True, drop_last=False, seed=seed
    )
    return DataLoader(
        LhotseSpeechDataset(encoder, pad_id),
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
    )
