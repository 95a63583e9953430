"""The data writing side: audio helpers, shard sets, the manifest/LibriSpeech/chat converters, TTS and the CLI."""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds

from lit_sllm.data.audio import decode_audio, encode_flac, read_audio, resample
from lit_sllm.data.converters.chat import chat_to_samples, speech_turn_picker
from lit_sllm.data.converters.librispeech import librispeech_to_samples
from lit_sllm.data.converters.manifest import write_manifest
from lit_sllm.data.schema import SchemaError
from lit_sllm.data.shards import ShardSetWriter, SkipLog, write_samples
from lit_sllm.data.tts import EspeakTTS, trim_silence
from lit_sllm.tools.data import add_parser

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
ASR_TURNS = [
    {"role": "user", "parts": [{"audio": "flac"}, {"text": "Transcribe the audio."}]},
    {"role": "assistant", "parts": [{"text": "hello"}]},
]


def sine(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """(S,) or (S, C) float32 sine; channels differ in amplitude so a downmix is checkable."""
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * math.pi * freq * t).astype(np.float32)
    return wave if channels == 1 else np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)


def members(tar_path: Path) -> list[str]:
    with tarfile.open(tar_path) as tar:
        return tar.getnames()


def read_member(tar_path: Path, name: str) -> bytes:
    with tarfile.open(tar_path) as tar:
        return tar.extractfile(name).read()


def run_cli(argv: list[str]) -> int:
    subparsers = argparse.ArgumentParser().add_subparsers(dest="tool", required=True)
    add_parser(subparsers)
    args = subparsers._name_parser_map["data"].parse_args(argv)
    return args.func(args)


class SineTTS:
    """A fast stand-in TTS: a 0.1 s tone whose pitch depends on the text length."""

    sample_rate = 8000

    def synthesize(self, text: str) -> torch.Tensor:
        return torch.from_numpy(sine(0.1, self.sample_rate, freq=200.0 + 10 * len(text)))


# ---------------------------------------------------------------- audio


def test_read_audio_downmixes_and_flac_round_trips(tmp_path):
    stereo = sine(0.5, 8000, channels=2)
    sf.write(tmp_path / "s.wav", stereo, 8000, subtype="FLOAT")
    wave, rate = read_audio(tmp_path / "s.wav")
    assert rate == 8000 and wave.dtype == torch.float32 and wave.shape == (4000,)
    assert torch.allclose(wave, torch.from_numpy(stereo.mean(axis=1)), atol=1e-6)
    decoded, decoded_rate = decode_audio(encode_flac(wave, rate))
    assert decoded_rate == 8000 and decoded.shape == wave.shape
    assert (decoded - wave).abs().max() <= 1 / 32768 + 1e-6  # 16-bit quantisation only
    assert resample(wave, 8000, 16000).shape == (8000,)
    assert resample(wave, 8000, 8000) is wave


def test_encode_flac_rejects_multichannel():
    with pytest.raises(ValueError, match="mono"):
        encode_flac(torch.zeros(2, 100), 16000)


# ---------------------------------------------------------------- shard writer


def test_writer_rejects_missing_and_unreferenced_parts_and_duplicate_keys(tmp_path):
    flac = encode_flac(torch.zeros(1600), 16000)
    with ShardSetWriter(tmp_path / "set", "x") as writer:
        with pytest.raises(SchemaError, match=r"key a, field 'turns\[0\]\.parts\[0\]'.*Fix: add the audio"):
            writer.write({"key": "a", "task": "asr", "transcript": "hello", "turns": ASR_TURNS}, {})
        with pytest.raises(SchemaError, match="'0.flac' is not referenced"):
            writer.write({"key": "a", "task": "text", "turns": ASR_TURNS[1:]}, {"0.flac": flac})
        with pytest.raises(SchemaError, match="cannot name a sample"):
            writer.write({"key": "a.b", "task": "text", "turns": ASR_TURNS[1:]}, {})
        writer.write({"key": "a", "task": "asr", "transcript": "hello", "turns": ASR_TURNS}, {"flac": flac})
        with pytest.raises(SchemaError, match="already written"):
            writer.write({"key": "a", "task": "text", "turns": ASR_TURNS[1:]}, {})
    assert writer.index["samples"] == 1 and writer.index["hours"] == pytest.approx(0.1 / 3600, abs=1e-9)
    stored = json.loads(read_member(tmp_path / "set" / "x-000000.tar", "a.json"))
    assert stored == {"task": "asr", "transcript": "hello", "turns": ASR_TURNS, "duration": 0.1}


def test_writer_refuses_an_existing_set_and_cleans_up_after_a_crash(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), ShardSetWriter(tmp_path, "x", shard_size=1) as writer:
        for key in ("a", "b"):
            writer.write({"key": key, "task": "text", "turns": ASR_TURNS[1:]}, {})
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no half set left behind, no index
    write_samples([({"key": "a", "task": "text", "turns": ASR_TURNS[1:]}, {})], tmp_path, "x")
    with pytest.raises(FileExistsError, match="index.json already exists"):
        ShardSetWriter(tmp_path, "y")


def _text_sample(key: str) -> tuple[dict, dict]:
    return {"key": key, "task": "text", "turns": ASR_TURNS[1:]}, {}


def _boom_after(*samples):
    yield from samples
    raise RuntimeError("boom")


def test_writer_resumes_named_shards_keeping_the_finished_ones(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), ShardSetWriter(tmp_path, "x", resume=True) as writer:
        first = dict(writer.write_shard("a.tar", [_text_sample("a1"), _text_sample("a2")]))
        writer.write_shard("b.tar", _boom_after(_text_sample("b1")))
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]  # the finished shard stays; no partial one, no index
    with ShardSetWriter(tmp_path, "x", resume=True, extra={"made_by": "a test"}) as writer:
        assert writer.keep_shard("a.tar") == first
        with pytest.raises(SchemaError, match="already written"):
            writer.write_shard("b.tar", [_text_sample("a1")])
        assert not (tmp_path / "b.tar.partial").exists()
        writer.write_shard("b.tar", [_text_sample("b1")])
    index = json.loads((tmp_path / "index.json").read_text())
    assert index == writer.index and [shard["path"] for shard in index["shards"]] == ["a.tar", "b.tar"]
    assert index["samples"] == 3 and index["tasks"] == {"text": 3} and index["made_by"] == "a test"
    assert list(index) == ["name", "shards", "samples", "hours", "tasks", "made_by", "created_with"]
    with pytest.raises(ValueError, match="replace standard ones"):
        ShardSetWriter(tmp_path / "c", "x", extra={"samples": 1})


# ---------------------------------------------------------------- manifest


@pytest.fixture
def manifest(tmp_path) -> Path:
    """Nine lines: four good (mono 16 kHz, stereo 8 kHz, two clips, text), a blank one and four bad ones."""
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", sine(1.0, 16000), 16000)
    sf.write(audio / "b.wav", sine(0.5, 8000, channels=2), 8000)
    sf.write(audio / "c.wav", sine(0.25, 16000, freq=300), 16000)
    (audio / "broken.wav").write_bytes(b"RIFF not really audio")
    dialog = [{"role": "user", "parts": [{"audio": "0.flac"}, {"audio": "1.flac"}]}, ASR_TURNS[1]]
    lines = [
        {"key": "utt1", "task": "asr", "transcript": "hello", "turns": ASR_TURNS, "audio_path": "audio/a.wav"},
        "{this is not json",
        {"task": "asr", "transcript": "hello", "turns": ASR_TURNS, "audio": {"flac": str(audio / "b.wav")}},
        {"task": "asr", "transcript": "hello", "turns": ASR_TURNS, "audio_path": "audio/missing.wav"},
        {"transcript": "no task", "turns": ASR_TURNS, "audio_path": "audio/a.wav"},
        "",
        {"task": "dialog", "turns": dialog, "audio": {"0.flac": "audio/a.wav", "1.flac": "audio/c.wav"}},
        {"task": "text", "turns": ASR_TURNS[1:]},
        {"task": "asr", "transcript": "hello", "turns": ASR_TURNS, "audio_path": "audio/broken.wav"},
    ]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_write_manifest_counts_index_and_members(manifest, tmp_path):
    result = write_manifest(manifest, tmp_path / "out", shard_size=3)
    assert result.skips.counts == {"bad_json": 1, "missing_audio": 1, "schema": 1, "bad_audio": 1}
    assert {p.reason: p.where for p in result.skips.problems} == {
        "bad_json": f"{manifest}:2",
        "missing_audio": f"{manifest}:4",
        "schema": f"{manifest}:5",
        "bad_audio": f"{manifest}:9",
    }
    assert "'task' must be a non-empty string" in result.skips.problems[2].message
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index == result.index
    assert index["name"] == "manifest" and index["samples"] == 4 and index["created_with"] == "lit_sllm 0.1.0"
    assert abs(index["hours"] - (1.0 + 0.5 + 1.25) / 3600) < 1e-6
    assert index["tasks"] == {"asr": 2, "dialog": 1, "text": 1}
    assert [(s["path"], s["samples"], s["tasks"]) for s in index["shards"]] == [
        ("manifest-000000.tar", 3, {"asr": 2, "dialog": 1}),
        ("manifest-000001.tar", 1, {"text": 1}),
    ]
    assert abs(index["shards"][1]["hours"]) < 1e-12
    first, second = (tmp_path / "out" / s["path"] for s in index["shards"])
    assert members(first) == [  # in manifest order
        "utt1.flac",
        "utt1.json",
        "manifest-00000003.flac",
        "manifest-00000003.json",
        "manifest-00000007.0.flac",
        "manifest-00000007.1.flac",
        "manifest-00000007.json",
    ]
    assert members(second) == ["manifest-00000008.json"]
    assert "wrote 4 samples (0.0008 h, 2 shards)" in result.summary()
    assert "bad_json 1 (" in result.summary() and f"{manifest}:2" in result.summary()


def test_manifest_audio_round_trips_and_resamples(manifest, tmp_path):
    write_manifest(manifest, tmp_path / "keep", shard_size=10)
    tar = tmp_path / "keep" / "manifest-000000.tar"
    mono, rate = decode_audio(read_member(tar, "utt1.flac"))
    assert rate == 16000 and torch.allclose(mono, torch.from_numpy(sine(1.0, 16000)), atol=1e-4)
    stereo, rate = decode_audio(read_member(tar, "manifest-00000003.flac"))
    assert rate == 8000 and torch.allclose(stereo, torch.from_numpy(sine(0.5, 8000, channels=2).mean(1)), atol=1e-4)
    meta = json.loads(read_member(tar, "manifest-00000003.json"))
    assert meta["duration"] == pytest.approx(0.5) and "audio" not in meta and "key" not in meta

    write_manifest(manifest, tmp_path / "16k", shard_size=10, sample_rate=16000)
    resampled, rate = decode_audio(read_member(tmp_path / "16k" / "manifest-000000.tar", "manifest-00000003.flac"))
    assert rate == 16000 and resampled.shape == (8000,)


def test_manifest_workers_give_identical_shards(manifest, tmp_path):
    one = write_manifest(manifest, tmp_path / "one", shard_size=2, workers=1)
    two = write_manifest(manifest, tmp_path / "two", shard_size=2, workers=2)
    assert one.index == two.index and one.skips.counts == two.skips.counts
    for shard in one.index["shards"]:
        assert (tmp_path / "one" / shard["path"]).read_bytes() == (tmp_path / "two" / shard["path"]).read_bytes()


def test_shards_read_back_with_webdataset(manifest, tmp_path):
    write_manifest(manifest, tmp_path / "out", shard_size=10)
    dataset = wds.WebDataset(str(tmp_path / "out" / "manifest-000000.tar"), shardshuffle=False)
    samples = {sample["__key__"]: sorted(k for k in sample if not k.startswith("__")) for sample in dataset}
    assert samples == {
        "utt1": ["flac", "json"],
        "manifest-00000003": ["flac", "json"],
        "manifest-00000007": ["0.flac", "1.flac", "json"],
        "manifest-00000008": ["json"],
    }


# ---------------------------------------------------------------- LibriSpeech


@pytest.fixture
def librispeech(tmp_path) -> Path:
    """Two chapters: one with 2 matched utterances, a transcript line without audio and one without text; one
    chapter whose FLAC has no transcript file."""
    root = tmp_path / "train-clean-5"
    chapter = root / "84" / "121123"
    chapter.mkdir(parents=True)
    for utt, seconds in (("0000", 0.5), ("0001", 0.75)):
        sf.write(chapter / f"84-121123-{utt}.flac", sine(seconds, 16000), 16000)
    lines = ["84-121123-0000 GO DO YOU HEAR", "84-121123-0001 BUT IN LESS THAN FIVE MINUTES", "84-121123-0002 GONE"]
    (chapter / "84-121123.trans.txt").write_text("\n".join([*lines, "84-121123-0003"]) + "\n")
    orphan = root / "84" / "121124"
    orphan.mkdir(parents=True)
    sf.write(orphan / "84-121124-0000.flac", sine(0.25, 16000), 16000)
    return root


def test_librispeech_converts_with_exact_counts(librispeech, tmp_path):
    skips = SkipLog()
    result = write_samples(librispeech_to_samples(librispeech, skips), tmp_path / "out", "ls", 10, skips)
    assert result.index["samples"] == 2 and result.index["tasks"] == {"asr": 2}
    assert abs(result.index["hours"] - 1.25 / 3600) < 1e-6
    assert skips.counts == {"no_audio": 1, "bad_transcript": 1, "no_transcript": 1}
    trans = librispeech / "84" / "121123" / "84-121123.trans.txt"
    assert {p.reason: p.where for p in skips.problems} == {
        "no_audio": f"{trans}:3",
        "bad_transcript": f"{trans}:4",
        "no_transcript": str(librispeech / "84" / "121124" / "84-121124-0000.flac"),
    }
    tar = tmp_path / "out" / "ls-000000.tar"
    assert members(tar) == ["84-121123-0000.flac", "84-121123-0000.json", "84-121123-0001.flac", "84-121123-0001.json"]
    meta = json.loads(read_member(tar, "84-121123-0001.json"))
    assert meta["transcript"] == "BUT IN LESS THAN FIVE MINUTES" and meta["duration"] == pytest.approx(0.75)
    assert meta["turns"] == [
        {"role": "user", "parts": [{"audio": "flac"}, {"text": "Transcribe the audio."}]},
        {"role": "assistant", "parts": [{"text": "BUT IN LESS THAN FIVE MINUTES"}]},
    ]
    assert read_member(tar, "84-121123-0000.flac") == (librispeech / "84/121123/84-121123-0000.flac").read_bytes()


def test_librispeech_rejects_a_folder_without_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="LibriSpeech split folder"):
        librispeech_to_samples(tmp_path)


# ---------------------------------------------------------------- chat


@pytest.fixture
def chat_jsonl(tmp_path) -> Path:
    lines = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "two"},
                {"role": "user", "content": "three"},
                {"role": "assistant", "content": "four"},
            ]
        },
        {"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "nobody answers"}]},
        "[1, 2]",
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def text_turn(role: str, text: str) -> dict:
    return {"role": role, "parts": [{"text": text}]}


def test_chat_to_text_samples(chat_jsonl):
    skips = SkipLog()
    samples = list(chat_to_samples(chat_jsonl, skips=skips))
    assert skips.counts == {"schema": 1, "no_assistant": 1, "bad_json": 1}
    assert sorted(p.where.rsplit(":", 1)[1] for p in skips.problems) == ["3", "4", "5"]
    assert "field 'messages[0]'" in next(p.message for p in skips.problems if p.reason == "schema")
    assert samples == [
        (
            {
                "key": "chat-00000001",
                "task": "text",
                "turns": [text_turn("user", "hi"), text_turn("assistant", "hello")],
            },
            {},
        ),
        (
            {
                "key": "chat-00000002",
                "task": "text",
                "turns": [
                    text_turn("system", "be brief"),
                    text_turn("user", "one"),
                    text_turn("assistant", "two"),
                    text_turn("user", "three"),
                    text_turn("assistant", "four"),
                ],
            },
            {},
        ),
    ]


@pytest.mark.parametrize(("policy", "spoken"), [("first", [1]), ("all", [1, 3]), (0.0, []), (1.0, [1, 3])])
def test_chat_speech_turn_policies(chat_jsonl, policy, spoken):
    _, (meta, audio) = chat_to_samples(chat_jsonl, tts=SineTTS(), speech_turns=policy)
    assert sorted(audio) == [f"{i}.flac" for i in range(len(spoken))]
    audio_turns = [i for i, turn in enumerate(meta["turns"]) if "audio" in turn["parts"][0]]
    assert audio_turns == spoken
    assert meta["task"] == ("dialog" if spoken else "text")
    assert meta.get("transcript") == (" ".join(["one", "three"][: len(spoken)]) if spoken else None)
    for clip in audio.values():
        wave, rate = decode_audio(clip)
        assert rate == 8000 and wave.shape == (800,)


def test_probability_policy_is_seeded_and_validated():
    users = list(range(20))
    picks = [speech_turn_picker(0.5)(users, random.Random(f"7:{line}")) for line in range(2)]
    again = [speech_turn_picker("0.5")(users, random.Random(f"7:{line}")) for line in range(2)]
    assert picks == again and picks[0] != picks[1] and 0 < len(picks[0]) < 20
    with pytest.raises(ValueError, match="'first', 'all' or a probability"):
        speech_turn_picker("some")
    with pytest.raises(ValueError, match="probability in"):
        speech_turn_picker(1.5)


# ---------------------------------------------------------------- TTS


def test_espeak_missing_binary_says_how_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        EspeakTTS()


def test_trim_silence_keeps_the_loud_middle():
    wave = torch.tensor([0.0, 0.001, 0.5, 0.0, -0.3, 0.002, 0.0])
    assert trim_silence(wave, threshold=0.02).tolist() == pytest.approx([0.5, 0.0, -0.3])
    assert trim_silence(torch.zeros(5), threshold=0.02).numel() == 0
    assert trim_silence(torch.zeros(0), threshold=0.02).numel() == 0


@needs_espeak
def test_synthesize_words_times_are_increasing_and_in_the_clip():
    tts = EspeakTTS(sample_rate=16000)
    wave, times = tts.synthesize_words(["the", "red", "cat"], pause_s=0.1)
    assert [word for word, _, _ in times] == ["the", "red", "cat"]
    assert times[0][1] == pytest.approx(0.1)
    previous_end = 0.0
    for _, start, end in times:
        assert previous_end < start < end <= wave.numel() / 16000
        assert int(round(start * 16000)) - int(round(previous_end * 16000)) == 1600  # exactly one pause apart
        assert wave[int(start * 16000) : int(end * 16000)].abs().max() > 0.05  # speech inside the word
        previous_end = end
    assert wave.numel() / 16000 == pytest.approx(times[-1][2] + 0.1)
    assert wave[:1600].abs().max() == 0 and wave[-1600:].abs().max() == 0  # pauses are silent


@needs_espeak
def test_chat_with_espeak_gives_dialog_samples(chat_jsonl, tmp_path):
    assert run_cli(["chat", "--jsonl", str(chat_jsonl), "--out", str(tmp_path / "out"), "--tts", "espeak"]) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["samples"] == 2 and index["tasks"] == {"dialog": 2} and index["hours"] > 0
    tar = tmp_path / "out" / "chat-000000.tar"
    assert members(tar) == ["chat-00000001.0.flac", "chat-00000001.json", "chat-00000002.0.flac", "chat-00000002.json"]
    wave, rate = decode_audio(read_member(tar, "chat-00000002.0.flac"))
    assert rate == 16000 and wave.numel() > 1600 and wave.abs().max() > 0.05
    meta = json.loads(read_member(tar, "chat-00000002.json"))
    assert meta["turns"][1] == {"role": "user", "parts": [{"audio": "0.flac"}]} and meta["transcript"] == "one"
    assert meta["duration"] == pytest.approx(wave.numel() / 16000)


# ---------------------------------------------------------------- CLI


def test_cli_write_prints_summary_and_fails_only_on_unusable_input(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(["write", "--manifest", str(manifest), "--out", str(out), "--shard-size", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote 4 samples (0.0008 h, 2 shards)") and "skipped 4:" in line
    assert run_cli(["inspect", str(out), "--json"]) == 0  # the reading pipeline accepts every written sample
    report = json.loads(capsys.readouterr().out)
    assert (report["samples"], report["tasks"], report["skipped"]) == (4, {"asr": 2, "dialog": 1, "text": 1}, {})
    assert abs(report["hours"] - (1.0 + 0.5 + 1.25) / 3600) < 1e-6
    assert run_cli(["write", "--manifest", str(manifest), "--out", str(out)]) == 1  # the set already exists
    assert "index.json already exists" in capsys.readouterr().err
    assert run_cli(["write", "--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o2")]) == 1
    assert "nope.jsonl does not exist" in capsys.readouterr().err


def test_cli_librispeech_and_option_validation(librispeech, tmp_path, capsys):
    assert run_cli(["librispeech", "--root", str(librispeech), "--out", str(tmp_path / "ls")]) == 0
    assert capsys.readouterr().out.startswith("wrote 2 samples")
    assert (tmp_path / "ls" / "train-clean-5-000000.tar").exists()
    with pytest.raises(SystemExit):
        run_cli(["chat", "--jsonl", "x.jsonl", "--out", str(tmp_path / "c"), "--speech-turns", "most"])
