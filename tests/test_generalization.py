"""MTBI generalisation benchmark: request building, scoring, and the end-of-fit callback."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from data_helpers import speech_set
from model_helpers import TRANSCRIPTS, BatchListDataModule, make_batch

from lit_sllm.callbacks.generalization import GeneralizationBenchmark
from lit_sllm.data.schema import Sample
from lit_sllm.data.tasks import TaskSet
from lit_sllm.metrics.generalization import build_requests, score_requests
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.llm import LLMSpec
from lit_sllm.modules.mtbi import MTBI

TASKS = """
tasks:
  colour:
    prompts: ["what colour", "say colour"]
    held_out_prompts: ["please colour"]
  count:
    prompts: ["answer"]
  echo:
    prompts: ["hello"]
    held_out: true
"""


@pytest.fixture()
def task_file(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(TASKS)
    return path


def _samples(n: int) -> list[Sample]:
    return [
        Sample(f"k{i}", "asr", [], {"flac": (torch.zeros(800), 16000)}, transcript=f"the red cat {i}") for i in range(n)
    ]


def test_requests_cover_each_category_once_per_task_and_utterance(task_file):
    requests = build_requests(_samples(3), TaskSet.load(task_file), seed=0)
    by_category = {
        c: [(r.sample.key, r.task) for r in requests if r.category == c]
        for c in ("seen", "unseen_prompt", "unseen_task")
    }
    assert sorted(by_category["seen"]) == sorted((f"k{i}", t) for i in range(3) for t in ("colour", "count"))
    assert sorted(by_category["unseen_prompt"]) == [(f"k{i}", "colour") for i in range(3)]  # count has none
    assert sorted(by_category["unseen_task"]) == [(f"k{i}", "echo") for i in range(3)]
    assert all(r.prompt == "please colour" for r in requests if r.category == "unseen_prompt")
    assert build_requests(_samples(3), TaskSet.load(task_file), seed=0)[0].prompt == requests[0].prompt


def test_scores_are_perfect_when_speech_and_text_answers_agree(task_file):
    requests = build_requests(_samples(2), TaskSet.load(task_file))
    answers = [f"answer {i}" for i in range(len(requests))]
    table = score_requests(requests, answers, answers, checker=lambda task, transcript, answer: task == "colour")
    for entry in table.values():
        assert entry["exact"] == 1.0 and entry["rougeL"] == pytest.approx(1.0)
        assert entry["accuracy"] == entry["teacher_accuracy"]
    assert table["unseen_task"]["accuracy"] == 0.0 and table["unseen_prompt"]["accuracy"] == 1.0
    disagree = score_requests(requests, answers, [a + " no" for a in answers])
    assert all(entry["exact"] == 0.0 for entry in disagree.values())


def test_callback_prints_and_saves_the_table_at_fit_end(task_file, tmp_path, tiny_llm_dir, tiny_whisper_dir, capsys):
    speech_set(tmp_path / "test", shards=1, per_shard=3)
    torch.manual_seed(0)
    module = MTBI(llm=LLMSpec(str(tiny_llm_dir)), encoder=HFSpeechEncoder(str(tiny_whisper_dir)))
    benchmark = GeneralizationBenchmark(str(tmp_path / "test"), str(task_file), max_samples=3, max_new_tokens=3)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        callbacks=[benchmark],
    )
    trainer.fit(module, BatchListDataModule([make_batch(module.model, TRANSCRIPTS)]))
    saved = json.loads((tmp_path / "lightning_logs" / "version_0" / "generalization.json").read_text())
    assert saved == benchmark.table
    assert {c: int(e["n"]) for c, e in saved.items()} == {"seen": 6, "unseen_prompt": 3, "unseen_task": 3}
