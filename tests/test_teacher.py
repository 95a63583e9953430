"""`lit-sllm teacher`: deterministic answers written into mirrored shards, resumable shard by shard, in place too; the
LLM loaded as a run loads it; the index written by `ShardSetWriter`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lit_sllm.data.teacher as teacher_lib
from lit_sllm.cli import main
from lit_sllm.data.audio import encode_flac
from lit_sllm.data.inspect import inspect_shards
from lit_sllm.data.pipeline import DataTally, read_shard
from lit_sllm.data.prompts import FALLBACK_CHAT_TEMPLATE
from lit_sllm.data.shards import ShardSetWriter
from lit_sllm.data.teacher import TeacherSpec, label_shards, load_teacher
from lit_sllm.models import llm as llm_lib
from lit_sllm.models.llm import LLMSpec
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
