"""Text-only forgetting: a frozen LLM reads exactly no change; a moving LoRA is seen and can stop training."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from data_helpers import text_set
from model_helpers import TRANSCRIPTS, BatchListDataModule, make_batch

from lit_sllm.callbacks.forgetting import ForgettingLimits, TextForgetting, kl_sum
from lit_sllm.config_errors import ConfigError
from lit_sllm.data.batching import BatchingSpec
from lit_sllm.data.datamodule import EvalSetSpec, SpeechTextDataModule
from lit_sllm.models.adapters import FrameStackMLP
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.llm import LLMSpec, LoraSpec
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.modules.optim import OptimSpec


class Recorder(L.Callback):
    """Keeps the logged forgetting metrics of every validation."""

    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        self.seen.append({k: float(v) for k, v in metrics.items() if k.startswith("forgetting/")})


def eval_data(llm_dir, **sets: EvalSetSpec) -> SpeechTextDataModule:
    return SpeechTextDataModule(tokenizer=str(llm_dir), eval=sets, num_workers=0)


def _fit(
    tmp_path, llm_dir, whisper_dir, lora: LoraSpec | None, limits=None, sets=("text",)
) -> tuple[list[dict], L.Trainer]:
    text_set(tmp_path / "text", shards=2, per_shard=3)
    torch.manual_seed(0)
    module = JointSFT(
        llm=LLMSpec(str(llm_dir)),
        encoder=HFSpeechEncoder(str(whisper_dir)),
        adapter=partial(FrameStackMLP, stack=2),
        lora=lora,
        optimizer=OptimSpec(lr=5e-2, weight_decay=0.0),
    )
    batch = make_batch(module.model, TRANSCRIPTS)
    forgetting = TextForgetting(list(sets), limits=limits)
    spec = EvalSetSpec(str(tmp_path / "text"), BatchingSpec(batch_size=2), max_samples=5)
    recorder = Recorder()
    trainer = L.Trainer(
        max_steps=6,
        val_check_interval=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=[forgetting, recorder],
    )
    trainer.fit(module, BatchListDataModule([batch] * 6, val=[batch], eval_data=eval_data(llm_dir, text=spec)))
    return recorder.seen, trainer


def test_frozen_llm_shows_no_forgetting(tmp_path, tiny_llm_dir, tiny_whisper_dir):
    seen, _ = _fit(tmp_path, tiny_llm_dir, tiny_whisper_dir, lora=None)
    assert len(seen) == 3
    for metrics in seen:
        assert metrics["forgetting/text/ppl_ratio"] == pytest.approx(1.0, abs=1e-5)
        assert metrics["forgetting/text/kl"] == pytest.approx(0.0, abs=1e-6)
        assert metrics["forgetting/text/accuracy_drop"] == 0.0
        assert metrics["forgetting/text/samples"] == 5  # max_samples of the 6 in the set, each once


def test_lora_training_is_seen_and_a_limit_can_stop_training(tmp_path, tiny_llm_dir, tiny_whisper_dir):
    limits = ForgettingLimits(max_ppl_ratio=1.0 + 1e-6, action="stop")
    seen, trainer = _fit(tmp_path, tiny_llm_dir, tiny_whisper_dir, LoraSpec(r=4, alpha=8, dropout=0.0), limits)
    assert seen[0]["forgetting/text/kl"] > 0 and seen[0]["forgetting/text/ppl_ratio"] != 1.0
    assert len(seen) == 1 and trainer.global_step == 2  # stopped at the first validation


def test_kl_sum_of_identical_and_different_distributions():
    p = torch.randn(3, 7).log_softmax(-1)
    assert kl_sum({"a": p}, {"a": p.clone()}) == (pytest.approx(0.0, abs=1e-6), 3)
    q = torch.randn(3, 7).log_softmax(-1)
    total, tokens = kl_sum({"a": p, "b": p}, {"a": q})  # only samples both scored count
    assert total == pytest.approx(float((p.exp() * (p - q)).sum())) and tokens == 3


def test_a_forgetting_set_missing_from_data_eval_fails_at_start(tmp_path, tiny_llm_dir, tiny_whisper_dir):
    with pytest.raises(ConfigError, match=r"TextForgetting.sets names eval set 'other'.*data.eval.other"):
        _fit(tmp_path, tiny_llm_dir, tiny_whisper_dir, lora=None, sets=("other",))
