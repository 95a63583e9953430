"""`lit-sllm teacher`: deterministic answers written into mirrored shards, resumable shard by shard."""

from __future__ import annotations

import json

import numpy as np

from lit_sllm.cli import main
from lit_sllm.data.audio import encode_flac
from lit_sllm.data.pipeline import DataTally, read_shard
from lit_sllm.data.shards import ShardSetWriter

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


def _write_asr_shards(folder):
    import torch

    with ShardSetWriter(folder, "asr", shard_size=2) as writer:
        for i, text in enumerate(["the red cat", "a blue dog", "two green box"]):
            flac = encode_flac(torch.from_numpy(np.sin(np.arange(1600) * (i + 1) / 10).astype("float32")), 16000)
            turns = [
                {"role": "user", "parts": [{"audio": "flac"}, {"text": "transcribe"}]},
                {"role": "assistant", "parts": [{"text": text}]},
            ]
            writer.write({"key": f"utt{i}", "task": "asr", "transcript": text, "turns": turns}, {"flac": flac})


def _teacher(shards, out, llm_dir, tasks):
    args = ["teacher", "--shards", str(shards), "--out", str(out), "--llm", str(llm_dir), "--tasks", str(tasks)]
    return main(args + ["--max-new-tokens", "3", "--batch-size", "2"])


def _metas(folder):
    return {
        s["__key__"]: json.loads(s["json"])
        for tar in sorted(folder.glob("*.tar"))
        for s in read_shard(str(tar), DataTally())
    }


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
    assert index["samples"] == 3 and index["teacher"]["llm"] == str(tiny_llm_dir)
    # audio members are copied untouched
    original = {s["__key__"]: s["flac"] for s in read_shard(str(tmp_path / "asr" / "asr-000000.tar"), DataTally())}
    copied = {s["__key__"]: s["flac"] for s in read_shard(str(tmp_path / "a" / "asr-000000.tar"), DataTally())}
    assert original == copied

    # resume: a finished shard is skipped (untouched), a missing one is redone identically
    first, second = tmp_path / "a" / names[0], tmp_path / "a" / names[1]
    kept_mtime, redo_bytes = first.stat().st_mtime_ns, second.read_bytes()
    second.unlink()
    assert _teacher(tmp_path / "asr", tmp_path / "a", tiny_llm_dir, tmp_path / "tasks.yaml") == 0
    assert first.stat().st_mtime_ns == kept_mtime
    assert second.read_bytes() == redo_bytes
    assert json.loads((tmp_path / "a" / "index.json").read_text())["samples"] == 3
