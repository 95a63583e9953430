"""`SpeechTextDataModule`: eval sets read exactly once over workers, mixed training streams, resuming, config."""

from __future__ import annotations

import random
from collections import Counter

import lightning as L
import pytest
import torch
from data_helpers import corrupt_set, speech_set, text_set

from lit_sllm.config_errors import ConfigError
from lit_sllm.data import Batch, EvalSetSpec, SourceSpec, SpeechTextDataModule
from lit_sllm.data.batch import IGNORE_INDEX
from lit_sllm.data.batching import BatchingSpec
from lit_sllm.data.schema import Sample
from lit_sllm.data.streams import EvalStream


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sets")
    good, skipped = corrupt_set(root / "corrupt")
    return {
        "speech": str(root / "speech"),
        "speech_keys": speech_set(root / "speech", shards=3, per_shard=4),
        "text": str(root / "text"),
        "text_keys": text_set(root / "text", shards=2, per_shard=3),
        "corrupt": str(root / "corrupt" / "*.tar"),
        "corrupt_keys": good,
        "corrupt_skips": skipped,
    }


def speech_source(sets: dict, weight: float = 0.85, max_duration: float = 2.0) -> SourceSpec:
    return SourceSpec(sets["speech"], weight, BatchingSpec(max_duration=max_duration, num_buckets=3))


def module(tokenizer_dir: str, **kwargs) -> SpeechTextDataModule:
    return SpeechTextDataModule(tokenizer=tokenizer_dir, **({"num_workers": 0} | kwargs))


def assert_labels_only_on_assistant_tokens(batch: Batch, tokenizer) -> None:
    for row in range(batch.size):
        trained = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        answer = tokenizer(batch.references[row] + " <|end|>", add_special_tokens=False)["input_ids"]
        assert trained == answer


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_val_reads_each_good_sample_exactly_once_and_reports_skips(tokenizer_dir, sets, workers):
    val = {"mixed": EvalSetSpec([sets["speech"], sets["corrupt"]], BatchingSpec(max_duration=1.5, num_buckets=2))}
    dm = module(tokenizer_dir, val=val, num_workers=workers)
    (loader,) = dm.val_dataloader()
    batches = list(loader)
    keys = Counter(key for batch in batches for key in batch.keys)
    assert keys == Counter(sets["speech_keys"] + sets["corrupt_keys"])
    skipped = sum((Counter(batch.extras["skipped"]) for batch in batches), Counter())
    assert skipped == Counter(sets["corrupt_skips"])
    for batch in batches:
        assert batch.source == "mixed" and batch.extras["audio_seconds"] <= 1.5
        assert_labels_only_on_assistant_tokens(batch, dm.formatter.tokenizer)


class RandomTask:
    """A transform whose output depends only on the generator it is given."""

    def __call__(self, sample: Sample, rng: random.Random) -> Sample:
        sample.task = f"{rng.random():.6f}"
        return sample


def test_eval_transforms_do_not_depend_on_the_number_of_workers(tokenizer_dir, sets):
    def tasks(workers: int) -> dict[str, str]:
        val = {"dev": EvalSetSpec(sets["speech"], transform=RandomTask())}
        (loader,) = module(tokenizer_dir, val=val, num_workers=workers).val_dataloader()
        return {key: task for batch in loader for key, task in zip(batch.keys, batch.tasks)}

    assert tasks(0) == tasks(2) and len(set(tasks(0).values())) == len(sets["speech_keys"])


def test_val_sets_keep_their_names_and_order_and_are_stable(tokenizer_dir, sets):
    val = {"text_qa": EvalSetSpec(sets["text"]), "asr": EvalSetSpec(sets["speech"], generate=True)}
    dm = module(tokenizer_dir, val=val)
    assert dm.val_set_names == ["text_qa", "asr"]
    text_loader, asr_loader = dm.val_dataloader()
    assert {b.source for b in text_loader} == {"text_qa"} and {b.source for b in asr_loader} == {"asr"}
    assert [b.keys for b in asr_loader] == [b.keys for b in asr_loader]
    prompt = next(iter(asr_loader))
    assert (prompt.labels == IGNORE_INDEX).all() and all(prompt.references)


def test_training_mixes_named_sources_for_a_fixed_number_of_batches(tokenizer_dir, sets):
    train = {"speech": speech_source(sets), "text": SourceSpec(sets["text"], 0.15, BatchingSpec(batch_size=1))}
    dm = module(tokenizer_dir, train=train, num_workers=2, batches_per_epoch=40)
    batches = list(dm.train_dataloader())
    assert len(batches) == 40 and len(dm.train_dataloader()) == 40
    by_source = Counter(batch.source for batch in batches)
    assert set(by_source) == {"speech", "text"} and by_source["speech"] > by_source["text"]
    for batch in batches:
        if batch.source == "text":
            assert batch.size == 1 and batch.num_clips == 0 and set(batch.keys) <= set(sets["text_keys"])
        else:
            longest = batch.audio_lengths.max().item() / dm.sample_rate
            assert batch.size * longest <= 2.0 + 1e-6 and set(batch.keys) <= set(sets["speech_keys"])
            assert 0 < batch.extras["padding_ratio"] <= 1
        assert_labels_only_on_assistant_tokens(batch, dm.formatter.tokenizer)


def test_training_skips_reach_the_main_process(tokenizer_dir, sets):
    train = {"noisy": SourceSpec(sets["corrupt"], batching=BatchingSpec(batch_size=2))}
    dm = module(tokenizer_dir, train=train, num_workers=1, batches_per_epoch=12)
    batches = list(dm.train_dataloader())
    skipped = sum((Counter(b.extras["skipped"]) for b in batches), Counter())
    assert set(skipped) == set(sets["corrupt_skips"])
    assert {key for b in batches for key in b.keys} <= set(sets["corrupt_keys"])


@pytest.mark.parametrize(("workers", "consumed"), [(0, 4), (2, 4), (2, 5), (3, 7)])
def test_resume_continues_the_epoch_exactly_where_it_stopped(tokenizer_dir, sets, workers, consumed):
    def run(state: dict | None = None) -> list[list[list[str]]]:
        dm = module(
            tokenizer_dir, train={"speech": speech_source(sets)}, batches_per_epoch=10, seed=5, num_workers=workers
        )
        if state is not None:
            dm.load_state_dict(state)
        loader = dm.train_dataloader()
        return [[b.keys for b in loader] for _ in range(2)]

    fresh = run()
    assert [len(epoch) for epoch in fresh] == [10, 10] and fresh[0] != fresh[1]
    assert run() == fresh  # seeded
    resumed = run({"seed": 5, "epoch": 0, "batches": consumed})
    assert [len(epoch) for epoch in resumed] == [10 - consumed, 10]
    assert resumed[0] == fresh[0][consumed:]  # the uninterrupted run's remaining batches, in its order
    assert resumed[1] == fresh[1]  # and the next epoch is the same as in an uninterrupted run


class _Probe(L.LightningModule):
    """Records the batches it is given; trains one scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[Batch] = []

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch)
        return (self.weight - batch.input_ids.float().mean()) ** 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(dm: SpeechTextDataModule, root, max_steps: int, ckpt_path=None) -> _Probe:
    """Fits the probe, checkpointing every 6 steps (mid-epoch, as a crashed run would leave it)."""
    probe = _Probe()
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(root, "{step}", every_n_train_steps=6, save_top_k=-1)
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, limit_val_batches=0, callbacks=[checkpoint],
    )  # fmt: skip
    trainer.fit(probe, datamodule=dm, ckpt_path=ckpt_path)
    return probe


def test_trainer_drives_the_stream_and_resumes_mid_epoch(tokenizer_dir, sets, tmp_path):
    def data() -> SpeechTextDataModule:
        return module(tokenizer_dir, train={"speech": speech_source(sets)}, batches_per_epoch=4)

    first = data()
    probe = fit(first, tmp_path, max_steps=7)
    assert len(probe.seen) == 7 and all(isinstance(b, Batch) for b in probe.seen)
    assert first.state_dict() == {"seed": 0, "epoch": 1, "batches": 3}
    state = torch.load(tmp_path / "step=6.ckpt", weights_only=True)["SpeechTextDataModule"]
    assert state == {"seed": 0, "epoch": 1, "batches": 2}
    second = data()
    resumed = fit(second, tmp_path / "resumed", max_steps=9, ckpt_path=tmp_path / "step=6.ckpt")
    assert len(resumed.seen) == 3  # the last two batches of epoch 1, then one of epoch 2
    assert second.state_dict() == {"seed": 0, "epoch": 2, "batches": 1}
    whole = fit(data(), tmp_path / "whole", max_steps=9)
    assert [b.keys for b in resumed.seen] == [b.keys for b in whole.seen[6:]]  # what an uninterrupted run reads


def test_config_errors_name_the_key_and_the_fix(tokenizer_dir, sets, tmp_path):
    missing = module(tokenizer_dir, train={"speech": SourceSpec(str(tmp_path / "nothing-*.tar"))})
    with pytest.raises(ConfigError, match=r"data\.train\.speech\.shards: No shards match"):
        missing.train_dataloader()
    with pytest.raises(ValueError, match=r"data\.train weights .* sum to > 0"):
        module(tokenizer_dir, train={"a": SourceSpec(sets["speech"], 0.0), "b": SourceSpec(sets["text"], 0.0)})
    with pytest.raises(ValueError, match=r"data\.train\.a\.train_on"):
        module(tokenizer_dir, train={"a": SourceSpec(sets["speech"], train_on="first")})
    with pytest.raises(ValueError, match="data.sample_rate"):
        module(tokenizer_dir, sample_rate=0)
    with pytest.raises(ValueError, match="data.tokenizer"):
        _ = module(str(tmp_path / "no-tokenizer"), val={"x": EvalSetSpec(sets["text"])}).formatter


class TagTask:
    """A YAML-configurable transform: renames the task."""

    def __init__(self, task: str) -> None:
        self.task = task

    def __call__(self, sample: Sample, rng: random.Random) -> Sample:
        sample.task = self.task
        return sample


def test_yaml_data_section_builds_the_module(tokenizer_dir, sets):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SpeechTextDataModule, "data")
    config = parser.parse_string(f"""
data:
  tokenizer: {tokenizer_dir}
  sample_rate: 16000
  num_workers: 0
  batches_per_epoch: 20
  train:
    speech:
      shards: {sets["speech"]}
      weight: 0.85
      batching: {{max_duration: 2.0, num_buckets: 3}}
      transform:
        class_path: test_datamodule.TagTask
        init_args: {{task: tagged}}
    text:
      shards: [{sets["text"]}]
      weight: 0.15
      batching: {{batch_size: 1}}
  val:
    dev: {{shards: {sets["speech"]}}}
""")
    dm = parser.instantiate_classes(config).data
    assert isinstance(dm, SpeechTextDataModule) and isinstance(dm.train_specs["speech"].transform, TagTask)
    batches = list(dm.train_dataloader())
    assert {b.tasks[0] for b in batches if b.source == "speech"} == {"tagged"}
    assert dm.val_set_names == ["dev"]


def test_named_eval_sets_give_the_first_samples_once_with_scored_and_prompt_views(tokenizer_dir, sets):
    dm = module(tokenizer_dir, eval={"text": EvalSetSpec(sets["text"], BatchingSpec(batch_size=2), max_samples=5)})
    dm.trainer = None
    batches = list(dm.eval_dataloader("text"))
    keys = [key for b in batches for key in b.keys]
    assert sorted(keys) == sorted(sets["text_keys"][:5])  # the set's first 5 records, each once
    assert all(b.num_target_tokens() > 0 for b in batches)
    prompts = [b.generation_view() for b in batches]
    assert [p.keys for p in prompts] == [b.keys for b in batches] and all(not p.num_target_tokens() for p in prompts)
    assert prompts[0].references == ["red"] * prompts[0].size
    shares = [EvalStream(dm._plan("eval", "text", dm.eval_specs["text"]), 0, rank, 2) for rank in (0, 1)]
    split = [[key for b in share for key in b.keys] for share in shares]
    assert sorted(split[0] + split[1]) == sorted(keys) and split[0] and split[1]  # ranks split the first 5
    with pytest.raises(ConfigError, match=r"X.sets names eval set 'other' but data.eval has \['text'\]"):
        dm.require_eval_set("other", "X.sets")


def make_tokenizer_from(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
