"""MTBI generalisation benchmark: the questions (an eval-set expansion), scoring, and the end-of-fit callback."""

from __future__ import annotations

import json
import random

import lightning as L
import pytest
import torch
from data_helpers import speech_set
from model_helpers import TRANSCRIPTS, BatchListDataModule, make_batch

from lit_sllm.callbacks.generalization import GeneralizationBenchmark
from lit_sllm.data.batching import BatchingSpec
from lit_sllm.data.datamodule import EvalSetSpec, SpeechTextDataModule
from lit_sllm.data.generalization import GeneralizationRequests
from lit_sllm.data.schema import Sample
from lit_sllm.metrics.generalization import Answered, score_answers
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


def _questions(task_file, samples: list[Sample], seed: str = "0") -> list[Sample]:
    expand = GeneralizationRequests(task_file)
    return [q for sample in samples for q in expand(sample, random.Random(f"{seed}/{sample.key}"))]


def test_questions_cover_each_category_once_per_task_and_utterance(task_file):
    questions = _questions(task_file, _samples(3))
    by_category = {
        c: [(q.key.split("/")[0], q.task) for q in questions if q.group == c]
        for c in ("seen", "unseen_prompt", "unseen_task")
    }
    assert sorted(by_category["seen"]) == sorted((f"k{i}", t) for i in range(3) for t in ("colour", "count"))
    assert sorted(by_category["unseen_prompt"]) == [(f"k{i}", "colour") for i in range(3)]  # count has none
    assert sorted(by_category["unseen_task"]) == [(f"k{i}", "echo") for i in range(3)]
    unseen = [q for q in questions if q.group == "unseen_prompt"]
    assert all(q.turns[0]["parts"][0] == {"text": "please colour"} for q in unseen)
    assert all(q.teacher_turns[0]["parts"][1] == {"text": q.transcript} for q in questions)  # the text twin
    assert len({q.key for q in questions}) == len(questions)
    assert [q.turns for q in _questions(task_file, _samples(3))] == [q.turns for q in questions]  # seeded


def _answered(questions: list[Sample], speech: list[str], text: list[str]) -> list[Answered]:
    return [Answered(q.key, q.group, q.task, q.transcript, s, t) for q, s, t in zip(questions, speech, text)]


def test_scores_are_perfect_when_speech_and_text_answers_agree(task_file):
    questions = _questions(task_file, _samples(2))
    answers = [f"answer {i}" for i in range(len(questions))]
    table = score_answers(_answered(questions, answers, answers), lambda task, transcript, answer: task == "colour")
    for entry in table.values():
        assert entry["exact"] == 1.0 and entry["rougeL"] == pytest.approx(1.0)
        assert entry["accuracy"] == entry["teacher_accuracy"]
    assert table["unseen_task"]["accuracy"] == 0.0 and table["unseen_prompt"]["accuracy"] == 1.0
    disagree = score_answers(_answered(questions, answers, [a + " no" for a in answers]))
    assert all(entry["exact"] == 0.0 for entry in disagree.values())


def test_callback_prints_and_saves_the_table_at_fit_end(task_file, tmp_path, tiny_llm_dir, tiny_whisper_dir, capsys):
    speech_set(tmp_path / "test", shards=1, per_shard=3)
    torch.manual_seed(0)
    module = MTBI(llm=LLMSpec(str(tiny_llm_dir)), encoder=HFSpeechEncoder(str(tiny_whisper_dir)))
    benchmark = GeneralizationBenchmark("generalization", max_new_tokens=3)
    expand = GeneralizationRequests(task_file)
    spec = EvalSetSpec(str(tmp_path / "test"), BatchingSpec(batch_size=4), max_samples=3, expand=expand)
    eval_data = SpeechTextDataModule(tokenizer=str(tiny_llm_dir), eval={"generalization": spec}, num_workers=0)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        callbacks=[benchmark],
    )
    trainer.fit(module, BatchListDataModule([make_batch(module.model, TRANSCRIPTS)], eval_data=eval_data))
    saved = json.loads((tmp_path / "lightning_logs" / "version_0" / "generalization.json").read_text())
    assert saved == benchmark.table
    assert {c: int(e["n"]) for c, e in saved.items()} == {"seen": 6, "unseen_prompt": 3, "unseen_task": 3}
