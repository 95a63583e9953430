"""The toy world builder: seeded speech with exact word times, valid shard sets, a miniature end-to-end build, the
toy encoder's CTC head and the `lit-sllm toy` commands."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tarfile

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from lit_sllm.data.inspect import inspect_shards
from lit_sllm.data.tasks import TaskSet
from lit_sllm.tools import toy as toy_tool
from lit_sllm.toy.build import WorldSizes, build_world, write_speech_sets, write_text_sets
from lit_sllm.toy.encoder import CHARACTERS, CTCHead, ToyEncoderConfig, alignment_targets
from lit_sllm.toy.language import generate_sentences
from lit_sllm.toy.pretrain_llm import ToyLLMConfig
from lit_sllm.toy.speech import VOICES, ToySpeech
from lit_sllm.toy.tasks import QUESTIONS, single_tasks

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

TINY = WorldSizes(
    asr={"train": 4, "val": 2, "test": 2},
    st={"train": 2, "val": 1, "test": 1},
    sqa={"train": 2, "val": 1, "test": 1},
    dialog={"train": 2, "val": 1, "test": 1},
    text=3,
    text_eval_per_task=1,
    shard_size=3,
)


@pytest.fixture(scope="module")
def speech() -> ToySpeech:
    """Two voices and only the words of the sentences these tests speak, to keep espeak-ng calls few."""
    words = {word for split in ("train", "val", "test") for s in generate_sentences(12, 0, split) for word in s.words}
    words |= {w for split in ("train", "val", "test") for s in generate_sentences(10, 1, split) for w in s.words}
    return ToySpeech(sorted(words), voices=VOICES[:2])


def test_speech_is_the_same_for_the_same_seed(speech):
    words = generate_sentences(1, 0, "train")[0].words
    first, again = speech.speak(words, random.Random(7)), speech.speak(words, random.Random(7))
    assert first.flac() == again.flac()
    assert first.words == again.words
    assert speech.speak(words, random.Random(8)).flac() != first.flac()


def test_word_times_lie_inside_the_clip_in_order(speech):
    for seed, sentence in enumerate(generate_sentences(8, 0, "val")):
        utterance = speech.speak(sentence.words, random.Random(seed))
        assert [word for word, _, _ in utterance.words] == sentence.words
        starts = [start for _, start, _ in utterance.words]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        for (_, start, end), (_, next_start, _) in zip(utterance.words, utterance.words[1:] + [("", 1e9, 0)]):
            assert 0.0 < start < end <= next_start
        assert utterance.words[-1][2] < utterance.duration
        # the words carry the sound: the pauses between them are near silent
        wave, rate = utterance.wave, utterance.sample_rate
        (_, _, first_end), (_, second_start, _) = utterance.words[0], utterance.words[1]
        gap = wave[int(first_end * rate) + 1 : int(second_start * rate) - 1]
        assert gap.abs().max() < 0.1 * wave.abs().max()


def test_speech_sets_are_valid_and_repeat_byte_for_byte(speech, tmp_path):
    for run in ("a", "b"):
        write_speech_sets(tmp_path / run, speech, TINY, seed=0)
    tars = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*.tar"))
    assert len(tars) == 4 * 3 + 1  # 12 sets of one shard, but asr/train holds 4 samples in shards of 3
    for tar in tars:
        assert (tmp_path / "a" / tar).read_bytes() == (tmp_path / "b" / tar).read_bytes()
    for name in ("asr", "st", "sqa", "dialog"):
        for split in ("train", "val", "test"):
            report = inspect_shards(str(tmp_path / "a" / name / split))
            assert report["skipped"] == {}
            assert report["samples"] == getattr(TINY, name)[split]
            assert report["tasks"] == {name: getattr(TINY, name)[split]}


def test_sample_layouts(speech, tmp_path):
    write_speech_sets(tmp_path, speech, TINY, seed=0)
    write_text_sets(tmp_path, TINY, seed=0)
    asr = json.loads((tmp_path / "asr" / "train" / "index.json").read_text())
    assert asr["samples"] == 4 and asr["tasks"] == {"asr": 4}
    samples = {name: _first_sample(tmp_path / name / split) for name, split in _SETS}
    assert samples["asr"].turns[0]["parts"][0] == {"audio": "flac"}
    assert samples["asr"].turns[1]["parts"][0]["text"] == samples["asr"].transcript
    assert samples["sqa"].task == "sqa"
    sqa = json.loads(next(iter(_raw_jsons(tmp_path / "sqa" / "val"))))
    assert sqa["toy_task"] in QUESTIONS
    dialog = samples["dialog"]
    assert {"audio": "flac"} in dialog.turns[0]["parts"] and len(dialog.turns) in (4, 6)
    assert all("audio" not in part for turn in dialog.turns[1:] for part in turn["parts"])
    assert samples["text"].audio == {} and samples["text"].task == "text"
    assert samples["text_eval"].task in {task.name for task in single_tasks()}
    assert inspect_shards(str(tmp_path / "text_eval" / "val"))["samples"] == len(single_tasks())


_SETS = (("asr", "train"), ("sqa", "val"), ("dialog", "test"), ("text", "train"), ("text_eval", "val"))


def _raw_jsons(folder):
    with tarfile.open(next(folder.glob("*.tar"))) as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".json")]


def _first_sample(folder):
    from lit_sllm.data.pipeline import DataTally, ReadConfig, Slot, finite_samples, resolve_shards

    return next(finite_samples(resolve_shards(str(folder)), ReadConfig(), Slot(), DataTally()))


def test_ctc_head_decodes_greedily_and_round_trips(tmp_path):
    head = CTCHead(4)
    ids = head.encode("cat")
    path = [0, ids[0], ids[0], 0, ids[1], ids[2], ids[2], 0, ids[2]]  # c c _ a t t _ t -> "catt"
    log_probs = torch.full((2, len(path), len(CHARACTERS)), -10.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    log_probs[1] = log_probs[0]
    assert head.decode(log_probs, torch.tensor([len(path), 7])) == ["catt", "cat"]
    with pytest.raises(ValueError, match="not in the CTC vocabulary"):
        head.encode("cat!")
    head.save(tmp_path)
    loaded = CTCHead.load(tmp_path)
    assert loaded.vocab == list(CHARACTERS)
    assert torch.equal(loaded.proj.weight, head.proj.weight)


def test_alignment_targets_spread_characters_over_word_frames_and_decode_to_the_transcript():
    head = CTCHead(4)
    words = [("see", 0.04, 0.16), ("me", 0.2, 0.28)]  # 20 ms frames with centres at 10, 30, ... ms
    targets = alignment_targets(head, words, frames=16)
    s, e, m, space = head.encode("sem ")
    # "see": 6 frames, 2 per letter, the second "e" opened by a blank; a pause (space); "me": 4 frames; edges blank
    assert targets.tolist() == [0, 0, s, s, e, e, 0, e, space, space, m, m, e, e, 0, 0]
    log_probs = torch.nn.functional.one_hot(targets, len(CHARACTERS)).float().log()[None]
    assert head.decode(log_probs, torch.tensor([16])) == ["see me"]


@pytest.mark.slow
def test_miniature_world_builds_end_to_end(tmp_path):
    out = tmp_path / "toy"
    llm = ToyLLMConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, steps=2, batch_size=4)
    encoder = ToyEncoderConfig(d_model=32, layers=1, heads=2, ffn_dim=64, steps=2, batch_size=2, eval_utterances=2)
    report = build_world(out, 0, TINY, llm, encoder, voices=VOICES[:1], eval_per_task=1)
    expected = {f"{name}/{split}" for name in ("asr", "st", "sqa", "dialog") for split in ("train", "val", "test")}
    expected |= {"text/train", "text_eval/val"}
    assert set(report["sets"]) == expected
    for name in expected:
        assert inspect_shards(str(out / name))["skipped"] == {}, name
    assert report["sets"]["asr/train"]["samples"] == 4 and not (out / "mtbi").exists()
    labelled = _first_sample(out / "asr" / "train")  # MTBI's teacher answers ride on the ASR samples
    assert set(labelled.responses) == {task.name for task in TaskSet.load(out / "tasks.yaml").seen}
    assert labelled.turns[-1]["parts"][0]["text"] == labelled.transcript  # still an ASR sample
    assert set(report["pseudo_speech"]) >= {"exact", "each token x3"}
    assert AutoModelForCausalLM.from_pretrained(out / "models" / "llm").config.hidden_size == 32
    assert AutoModel.from_pretrained(out / "models" / "encoder").config.d_model == 32
    assert report["encoder_wer"]["samples"] == 2
    assert set(report["llm_accuracy"]) == {"trained", "held_out_phrasings", "held_out_tasks"}
    assert json.loads((out / "report.json").read_text())["seconds"]["total"] > 0
    assert "| asr/train | 4 |" in (out / "README.md").read_text()
    with pytest.raises(FileExistsError, match="not empty"):
        build_world(out, 0, TINY)


def test_toy_commands_parse_and_fail_clearly(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    toy_tool.add_parser(parser.add_subparsers(dest="tool", required=True))
    args = parser.parse_args(["toy", "build", "--out", str(tmp_path / "w"), "--seed", "3"])
    assert (args.func, args.out, args.seed) == (toy_tool.run_build, str(tmp_path / "w"), 3)
    args = parser.parse_args(["toy", "report", "--world", str(tmp_path), "--json"])
    assert args.func(args) == 1
    assert "not a toy world" in capsys.readouterr().err
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "old.txt").write_text("x")
    args = parser.parse_args(["toy", "build", "--out", str(tmp_path / "w")])
    assert args.func(args) == 1
    assert "is not empty" in capsys.readouterr().err
