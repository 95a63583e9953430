"""Augmentation inside `SpeechTextDataModule`: training streams only, reproducible across runs and a resume, counted
per batch across the worker boundary, refused on evaluation sets."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from data_helpers import speech_set

from lit_sllm.config_errors import ConfigError
from lit_sllm.data import EvalSetSpec, SourceSpec, SpeechTextDataModule
from lit_sllm.data.batching import BatchingSpec

AUGMENT = [{"name": "speed", "p": 0.5}, {"name": "noise", "p": 0.5, "snr_db": [5, 10]}, {"name": "gain", "p": 0.3}]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("augment_sets")
    speech_set(root / "speech", shards=3, per_shard=8)
    return str(root / "speech")


def data(tokenizer_dir: str, speech: str, augment=AUGMENT, **kwargs) -> SpeechTextDataModule:
    source = SourceSpec(speech, batching=BatchingSpec(max_duration=2.0, num_buckets=2), augment=augment)
    options = {"num_workers": 0, "batches_per_epoch": 8, "seed": 3} | kwargs
    return SpeechTextDataModule(tokenizer=tokenizer_dir, train={"speech": source}, **options)


def epochs(dm: SpeechTextDataModule, count: int = 2) -> list[list[tuple]]:
    loader = dm.train_dataloader()
    return [[(b.keys, b.audio, b.extras.get("augment", {})) for b in loader] for _ in range(count)]


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b))


def test_training_augmentation_repeats_across_runs_and_resumes(tokenizer_dir, speech):
    fresh, again = epochs(data(tokenizer_dir, speech)), epochs(data(tokenizer_dir, speech))
    assert same(fresh[0], again[0]) and same(fresh[1], again[1])
    assert not same(fresh[0], fresh[1])
    resumed_module = data(tokenizer_dir, speech)
    resumed_module.load_state_dict({"seed": 3, "epoch": 0, "batches": 3})
    resumed = epochs(resumed_module)
    assert len(resumed[0]) == 5 and same(resumed[1], fresh[1])  # the next epoch: exactly the uninterrupted one
    plain = epochs(data(tokenizer_dir, speech, augment=None), count=1)[0]
    assert all(not extras for _, _, extras in plain)
    assert not same(plain, fresh[0])


def test_counts_cross_the_worker_boundary_and_match_the_probabilities(tokenizer_dir, speech):
    dm = data(tokenizer_dir, speech, num_workers=1, batches_per_epoch=40)
    batches = list(dm.train_dataloader())
    rows = sum(b.size for b in batches)
    counts = sum((Counter(b.extras.get("augment", {})) for b in batches), Counter())
    assert all(sum(b.extras.get("augment", {}).values()) <= 3 * b.size for b in batches)
    for name, p in (("speed", 0.5), ("noise", 0.5), ("gain", 0.3)):
        assert abs(counts[name] / rows - p) < 4 * (p * (1 - p) / rows) ** 0.5, (name, counts[name], rows)


def test_eval_sets_are_never_augmented(tokenizer_dir, speech):
    dm = data(tokenizer_dir, speech, val={"dev": EvalSetSpec(speech)})
    clean = SpeechTextDataModule(tokenizer=tokenizer_dir, val={"dev": EvalSetSpec(speech)}, num_workers=0)
    (loader,), (clean_loader,) = dm.val_dataloader(), clean.val_dataloader()
    for batch, reference in zip(loader, clean_loader):
        assert "augment" not in batch.extras and torch.equal(batch.audio, reference.audio)
    with pytest.raises(ConfigError, match=r"data\.val\.dev\.augment: evaluation sets are never augmented"):
        data(tokenizer_dir, speech, val={"dev": EvalSetSpec(speech, augment=AUGMENT)})
    with pytest.raises(ConfigError, match=r"data\.train\.speech\.augment\[0\]\.name: unknown transform"):
        data(tokenizer_dir, speech, augment=[{"name": "sped"}])
