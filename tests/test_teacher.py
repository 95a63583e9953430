"""`lit-sllm teacher`: deterministic answers written into mirrored shards, resumable shard by shard, in place too; the
LLM loaded as a run loads it; the index written by `ShardSetWriter`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig

import lit_sllm.data.teacher as teacher_lib
from lit_sllm.cli import main
from lit_sllm.data.audio import encode_flac
from lit_sllm.data.collate import SampleEncoder, collate
from lit_sllm.data.inspect import inspect_shards
from lit_sllm.data.mtbi import BehaviourImitation
from lit_sllm.data.pipeline import DataTally, ReadConfig, decode_sample, read_shard
from lit_sllm.data.prompts import FALLBACK_CHAT_TEMPLATE
from lit_sllm.data.schema import SchemaError
from lit_sllm.data.shards import ShardSetWriter
from lit_sllm.data.teacher import TeacherSpec, label_shards, load_teacher
from lit_sllm.models import llm as llm_lib
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.llm import LLMSpec
from lit_sllm.modules.mtbi import MTBI
from lit_sllm.tools import teacher as teacher_tool

TASKS = """
tasks:
  continuation:
    prompts: ["say", "answer"]
    held_out_prompts: ["please"]
  colour:
    prompts: ["what colour"]
  keywords:
    prompts: ["hello"]
    held_out: true
"""
TEMPLATE = "{# the run's own template #}" + FALLBACK_CHAT_TEMPLATE


def _write_asr_shards(folder):
    with ShardSetWriter(folder, "asr", shard_size=2) as writer:
        for i, text in enumerate(["the red cat", "a blue dog", "two green box"]):
            flac = encode_flac(torch.from_numpy(np.sin(np.arange(1600) * (i + 1) / 10).astype("float32")), 16000)
            turns = [
                {"role": "user", "parts": [{"audio": "flac"}, {"text": "transcribe"}]},
                {"role": "assistant", "parts": [{"text": text}]},
            ]
            writer.write({"key": f"utt{i}", "task": "asr", "transcript": text, "turns": turns}, {"flac": flac})
    return writer.index


def _teacher(shards, out, llm_dir, tasks, *more):
    args = ["teacher", "--shards", str(shards), "--out", str(out), "--llm", str(llm_dir), "--tasks", str(tasks)]
    return main(args + ["--max-new-tokens", "3", "--batch-size", "2", *more])


def _spec(llm_dir, tmp_path, **llm):
    (tmp_path / "tasks.yaml").write_text(TASKS)
    return TeacherSpec(LLMSpec(str(llm_dir), **llm), str(tmp_path / "tasks.yaml"), 2, 3)


def _members(folder, part):
    return {s["__key__"]: s[part] for tar in sorted(folder.glob("*.tar")) for s in read_shard(str(tar), DataTally())}


def _metas(folder):
    return {key: json.loads(value) for key, value in _members(folder, "json").items()}


def test_teacher_is_deterministic_resumable_and_answers_seen_tasks_only(tiny_llm_dir, tmp_path):
    _write_asr_shards(tmp_path / "asr")
    (tmp_path / "tasks.yaml").write_text(TASKS)
    assert _teacher(tmp_path / "asr", tmp_path / "a", tiny_llm_dir, tmp_path / "tasks.yaml") == 0
    assert _teacher(tmp_path / "asr", tmp_path / "b", tiny_llm_dir, tmp_path / "tasks.yaml") == 0
    names = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert names == ["asr-000000.tar", "asr-000001.tar"]
    for name in names:  # two runs, identical bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    metas = _metas(tmp_path / "a")
    assert set(metas) == {"utt0", "utt1", "utt2"}
    for meta in metas.values():
        assert set(meta["responses"]) == set(meta["prompts"]) == {"continuation", "colour"}  # no held-out task
        assert meta["prompts"]["continuation"] in ("say", "answer")  # never a held-out phrasing
        assert all(isinstance(answer, str) for answer in meta["responses"].values())
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["samples"] == 3 and index["teacher"]["llm"]["name_or_path"] == str(tiny_llm_dir)
    assert _members(tmp_path / "asr", "flac") == _members(tmp_path / "a", "flac")  # audio copied untouched

    # resume: a finished shard is skipped (untouched), a missing one is redone identically
    first, second = tmp_path / "a" / names[0], tmp_path / "a" / names[1]
    kept_mtime, redo_bytes = first.stat().st_mtime_ns, second.read_bytes()
    second.unlink()
    assert _teacher(tmp_path / "asr", tmp_path / "a", tiny_llm_dir, tmp_path / "tasks.yaml") == 0
    assert first.stat().st_mtime_ns == kept_mtime
    assert second.read_bytes() == redo_bytes
    assert json.loads((tmp_path / "a" / "index.json").read_text()) == index


def test_the_labelled_index_has_the_shard_writers_schema(tiny_llm_dir, tmp_path):
    plain = _write_asr_shards(tmp_path / "asr")
    labelled = label_shards(str(tmp_path / "asr"), tmp_path / "out", _spec(tiny_llm_dir, tmp_path))
    assert json.loads((tmp_path / "out" / "index.json").read_text()) == labelled
    assert list(labelled) == [*list(plain)[:-1], "teacher", "created_with"]  # one schema, plus how it was made
    assert [list(entry) for entry in labelled["shards"]] == [list(entry) for entry in plain["shards"]]
    assert {k: v for k, v in labelled.items() if k != "teacher"} == plain  # same shards, names, counts and hours
    assert labelled["teacher"]["task_names"] == ["continuation", "colour"]
    assert inspect_shards(str(tmp_path / "out"))["samples"] == 3


def test_labelling_in_place_resumes_after_a_failure_and_replaces_the_set(tiny_llm_dir, tmp_path, monkeypatch):
    folder, spec = tmp_path / "asr", _spec(tiny_llm_dir, tmp_path)
    _write_asr_shards(folder)
    audio = _members(folder, "flac")
    calls, fail_at, label_shard = [], [2], teacher_lib.label_shard

    def recorded(url, *args):
        calls.append(Path(url).name)
        if len(calls) in fail_at:
            raise RuntimeError("interrupted")
        return label_shard(url, *args)

    monkeypatch.setattr(teacher_lib, "label_shard", recorded)
    with pytest.raises(RuntimeError, match="interrupted"):
        label_shards(str(folder), folder, spec)
    staging = tmp_path / "asr.labelling"
    assert sorted(p.name for p in staging.iterdir()) == ["asr-000000.tar"]  # the finished shard, no partial one
    assert "teacher" not in json.loads((folder / "index.json").read_text())  # the input set is untouched so far
    finished = (staging / "asr-000000.tar").read_bytes()

    calls.clear()
    fail_at.clear()
    index = label_shards(str(folder), folder, spec)
    assert calls == ["asr-000001.tar"]  # only the shard the failed run did not finish
    assert not staging.exists() and sorted(p.name for p in folder.iterdir()) == [
        "asr-000000.tar",
        "asr-000001.tar",
        "index.json",
    ]
    assert (folder / "asr-000000.tar").read_bytes() == finished  # kept, not labelled again
    assert json.loads((folder / "index.json").read_text()) == index and index["name"] == "asr"
    assert all(set(meta["responses"]) == {"continuation", "colour"} for meta in _metas(folder).values())
    assert _members(folder, "flac") == audio


def test_the_teacher_llm_is_loaded_through_load_llm_with_the_specs_settings(tiny_llm_dir, tmp_path, monkeypatch):
    llm, formatter = load_teacher(_spec(tiny_llm_dir, tmp_path, dtype="bfloat16", chat_template=TEMPLATE))
    assert llm.dtype == torch.bfloat16 and not llm.training
    assert formatter.template == TEMPLATE

    loaded = []
    monkeypatch.setattr(teacher_lib, "load_llm", lambda spec, key: loaded.append(spec) or llm_lib.load_llm(spec, key))
    _write_asr_shards(tmp_path / "asr")
    assert _teacher(tmp_path / "asr", tmp_path / "a", tiny_llm_dir, tmp_path / "tasks.yaml", "--dtype", "float16") == 0
    assert [spec.dtype for spec in loaded] == ["float16"]
    assert json.loads((tmp_path / "a" / "index.json").read_text())["teacher"]["llm"]["dtype"] == "float16"


def test_the_commands_dtype_choices_are_the_loaders():
    assert set(teacher_tool.DTYPES) == set(llm_lib._DTYPES)


def _mtbi_batches(folder, module, seed, **transform):
    """Every sample of `folder` through `BehaviourImitation(asr_prob=0.5, **transform)`, encoded and collated."""
    rate = module.model.encoder.sample_rate
    encoder = SampleEncoder(module.model.formatter, rate, transform=BehaviourImitation(asr_prob=0.5, **transform))
    raws = [raw for tar in sorted(folder.glob("*.tar")) for raw in read_shard(str(tar), DataTally())]
    samples = [decode_sample(raw, ReadConfig(sample_rate=rate), DataTally()) for raw in raws]
    rng = random.Random(seed)
    return collate([encoder(sample, rng) for sample in samples], "mtbi", module.model.tokenizer.pad_token_id)


def test_stored_teacher_distributions_give_the_online_teachers_kd_loss(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    """`--topk V --keep-answers` adds the teacher's whole distributions to answered shards (answers kept); MTBI's KD
    term from them equals the online teacher's, and a smaller k keeps the most likely tokens."""
    _write_asr_shards(tmp_path / "asr")
    (tmp_path / "tasks.yaml").write_text(TASKS)
    assert _teacher(tmp_path / "asr", tmp_path / "a", tiny_llm_dir, tmp_path / "tasks.yaml") == 0
    vocab = AutoConfig.from_pretrained(tiny_llm_dir).vocab_size
    more = ["--topk", str(vocab), "--asr-prompt", "Transcribe the audio.", "--keep-answers"]
    assert _teacher(tmp_path / "a", tmp_path / "k", tiny_llm_dir, tmp_path / "tasks.yaml", *more) == 0
    answered, stored = _metas(tmp_path / "a"), _metas(tmp_path / "k")
    answered_by = json.loads((tmp_path / "a" / "index.json").read_text())["teacher"]
    assert json.loads((tmp_path / "k" / "index.json").read_text())["teacher"]["answered_by"] == answered_by
    for key, meta in stored.items():
        assert meta["responses"] == answered[key]["responses"] and meta["prompts"] == answered[key]["prompts"]
        assert set(meta["teacher_topk"]) == {"continuation", "colour", "asr"}
        for entry in meta["teacher_topk"].values():
            log_probs = torch.tensor(entry["log_probs"])
            assert log_probs.shape[1] == vocab and (log_probs[:, :-1] >= log_probs[:, 1:]).all()
            torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(len(log_probs)), atol=2e-3, rtol=0)

    torch.manual_seed(0)
    module = MTBI(kd_weight=1.0, kd_temperature=2.0, llm=LLMSpec(str(tiny_llm_dir)),
                  encoder=HFSpeechEncoder(str(tiny_whisper_dir))).eval()  # fmt: skip
    online = _mtbi_batches(tmp_path / "k", module, 3, teacher_view=True)
    offline = _mtbi_batches(tmp_path / "k", module, 3, teacher_logits=True)
    assert online.teacher_topk is None and offline.teacher is None and "asr" in offline.tasks
    assert offline.teacher_topk.ids.shape == (offline.num_target_tokens(), vocab)
    with torch.no_grad():
        expected, got = module._loss(online), module._loss(offline)
    assert float(expected["kd"]) > 0.01
    torch.testing.assert_close(got["ce"], expected["ce"], rtol=0, atol=0)
    torch.testing.assert_close(got["kd"], expected["kd"], rtol=0, atol=1e-3)

    assert _teacher(tmp_path / "a", tmp_path / "k3", tiny_llm_dir, tmp_path / "tasks.yaml", "--topk", "3",
                    "--keep-answers") == 0  # fmt: skip
    for key, meta in _metas(tmp_path / "k3").items():
        for task, entry in meta["teacher_topk"].items():
            assert entry["ids"] == [row[:3] for row in stored[key]["teacher_topk"][task]["ids"]]
    with pytest.raises(SchemaError, match="teacher_topk.asr.*no stored teacher distributions"):
        _mtbi_batches(tmp_path / "k3", module, 3, teacher_logits=True)  # labelled without --asr-prompt


def test_stored_distributions_must_match_the_prompt_and_the_answer_tokens(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    _write_asr_shards(tmp_path / "asr")
    (tmp_path / "tasks.yaml").write_text(TASKS)
    more = ["--topk", "4", "--asr-prompt", "Say what you hear."]
    assert _teacher(tmp_path / "asr", tmp_path / "k", tiny_llm_dir, tmp_path / "tasks.yaml", *more) == 0
    torch.manual_seed(0)
    module = MTBI(kd_weight=1.0, llm=LLMSpec(str(tiny_llm_dir)), encoder=HFSpeechEncoder(str(tiny_whisper_dir)))
    with pytest.raises(SchemaError, match="stored for the prompt 'Say what you hear.'.*asr_prompt"):
        _mtbi_batches(tmp_path / "k", module, 3, teacher_logits=True)
    batch = _mtbi_batches(tmp_path / "k", module, 3, teacher_logits=True, asr_prompt="Say what you hear.")
    assert batch.teacher_topk.ids.shape == (batch.num_target_tokens(), 4)

    rate, raw = module.model.encoder.sample_rate, next(read_shard(str(tmp_path / "k" / "asr-000000.tar"), DataTally()))
    sample = decode_sample(raw, ReadConfig(sample_rate=rate), DataTally())
    entry = sample.teacher_topk["colour"]
    sample.teacher_topk["colour"] = entry | {"ids": entry["ids"][:-1], "log_probs": entry["log_probs"][:-1]}
    encoder = SampleEncoder(module.model.formatter, rate, transform=BehaviourImitation(teacher_logits=True,
                            tasks=["colour"]))  # fmt: skip
    with pytest.raises(ValueError, match="stored teacher distributions for .* labelled tokens.*Relabel"):
        encoder(sample, random.Random(0))
    with pytest.raises(ValueError, match="teacher_view and teacher_logits"):
        BehaviourImitation(teacher_view=True, teacher_logits=True)
    with pytest.raises(ValueError, match="keep_answers only adds stored distributions"):
        _spec(tiny_llm_dir, tmp_path).__class__(LLMSpec(str(tiny_llm_dir)), "t.yaml", keep_answers=True)
