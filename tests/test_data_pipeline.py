"""Schema validation, shard lists, node/worker splits, decoding and skip counting, and `data inspect`."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import tarfile
from collections import Counter

import pytest
import torch
from data_helpers import RATE, corrupt_set, encode, sine, speech_meta, speech_sample, speech_set, text_set, write_shard

from lit_sllm.data.inspect import inspect_shards
from lit_sllm.data.pipeline import (
    DataTally,
    ReadConfig,
    RetryPolicy,
    Slot,
    finite_samples,
    infinite_samples,
    peek_durations,
    resolve_shards,
)
from lit_sllm.data.remote import _stream_members, tar_members
from lit_sllm.data.schema import SchemaError, audio_part_names, parse_meta
from lit_sllm.tools.data import add_parser as add_data_parser


def keys_of(samples) -> list[str]:
    return [sample.key for sample in samples]


# --- schema ---------------------------------------------------------------------------------------------------


def test_parse_meta_normalises_and_lists_audio_parts():
    meta = speech_meta(1.0, clips=2) | {"words": [["the", 0, 0.5], ["cat", 0.5, 1]], "responses": {"sqa": "yes"}}
    parsed = parse_meta(meta)
    assert parsed["words"] == [("the", 0.0, 0.5), ("cat", 0.5, 1.0)]
    assert parsed["duration"] == 2.0 and parsed["responses"] == {"sqa": "yes"}
    assert audio_part_names(parsed) == ["0.flac", "1.flac"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.pop("transcript"), "transcript"),
        (lambda m: m.pop("task"), "task"),
        (lambda m: m["turns"][0].update(role="robot"), "turns[0].role"),
        (lambda m: m["turns"][1].update(parts=[{"text": 3}]), "turns[1].parts[0]"),
        (lambda m: m.update(words=[["a", 2.0, 1.0]]), "words[0]"),
        (lambda m: m.update(duration=-1), "duration"),
        (lambda m: m.update(responses={"sqa": 1}), "responses"),
        (lambda m: m.update(prompts=["is it red"]), "prompts"),
    ],
)
def test_schema_errors_name_shard_key_field_and_fix(change, field):
    meta = speech_meta(1.0)
    change(meta)
    with pytest.raises(SchemaError) as info:
        parse_meta(meta, shard="data/x-000001.tar", key="utt42")
    message = str(info.value)
    assert message.startswith("shard data/x-000001.tar, key utt42, ")
    assert f"field '{field}'" in message and "Fix: " in message
    assert info.value.field == field


# --- shard lists ----------------------------------------------------------------------------------------------


def test_resolve_shards_from_directory_index_glob_brace_list_and_pipe(tmp_path):
    speech_set(tmp_path / "set", shards=3, per_shard=2)
    with_index = resolve_shards(str(tmp_path / "set"))
    assert [s.url for s in with_index] == [str(tmp_path / "set" / f"s-{i:06d}.tar") for i in range(3)]
    assert [s.samples for s in with_index] == [2, 2, 2] and all(s.hours > 0 for s in with_index)
    (tmp_path / "set" / "index.json").rename(tmp_path / "index-copy.json")
    assert [s.url for s in resolve_shards(str(tmp_path / "set"))] == [s.url for s in with_index]
    assert len(resolve_shards(str(tmp_path / "set" / "s-*.tar"))) == 3
    brace = resolve_shards(str(tmp_path / "set" / "s-{000000..000001}.tar"))
    assert [s.url for s in brace] == [s.url for s in with_index[:2]]
    assert len(resolve_shards([with_index[0].url, with_index[2].url])) == 2
    pipe = resolve_shards(f"pipe:cat {with_index[1].url}")
    assert keys_of(finite_samples(pipe, ReadConfig(), Slot(), DataTally())) == ["s1_0", "s1_1"]


def test_resolve_shards_errors_name_the_spec(tmp_path):
    with pytest.raises(FileNotFoundError, match="No shards match"):
        resolve_shards(str(tmp_path / "*.tar"))
    with pytest.raises(FileNotFoundError, match="x-000003.tar"):
        resolve_shards(str(tmp_path / "x-{000003..000004}.tar"))
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="shard index"):
        resolve_shards(str(tmp_path / "index.json"))


# --- splits ---------------------------------------------------------------------------------------------------


def test_two_ranks_by_two_workers_read_disjoint_shards_covering_the_set(tmp_path):
    keys = speech_set(tmp_path, shards=6, per_shard=3)
    shards = resolve_shards(str(tmp_path))
    seen_shards, seen_keys = [], []
    for rank, worker in itertools.product(range(2), range(2)):
        samples = list(finite_samples(shards, ReadConfig(), Slot(rank, 2, worker, 2), DataTally()))
        seen_shards.append({s.source for s in samples})
        seen_keys += keys_of(samples)
    assert all(a.isdisjoint(b) for a, b in itertools.combinations(seen_shards, 2))
    assert set().union(*seen_shards) == {s.url for s in shards}
    assert Counter(seen_keys) == Counter(keys)


def test_fewer_shards_than_readers_still_gives_each_sample_once(tmp_path):
    keys = speech_set(tmp_path, shards=1, per_shard=7)
    shards = resolve_shards(str(tmp_path))
    seen = [
        k
        for i in range(4)
        for k in keys_of(finite_samples(shards, ReadConfig(), Slot(i // 2, 2, i % 2, 2), DataTally()))
    ]
    assert Counter(seen) == Counter(keys)


# --- decoding and skips ---------------------------------------------------------------------------------------


def test_each_corruption_is_skipped_and_counted_while_the_rest_streams(tmp_path):
    good, expected = corrupt_set(tmp_path)
    tally = DataTally()
    assert keys_of(finite_samples(resolve_shards(str(tmp_path / "*.tar")), ReadConfig(), Slot(), tally)) == good
    assert dict(tally.total) == expected


def test_shard_level_skips_are_counted_once_when_samples_are_split(tmp_path):
    good, expected = corrupt_set(tmp_path)
    shards = resolve_shards(str(tmp_path / "*.tar"))
    tallies = [DataTally() for _ in range(3)]
    seen = [
        k for i, t in enumerate(tallies) for k in keys_of(finite_samples(shards, ReadConfig(), Slot(0, 1, i, 3), t))
    ]
    assert sorted(seen) == sorted(good)
    assert sum((t.total for t in tallies), Counter()) == Counter(expected)


def test_8khz_stereo_wav_is_downmixed_resampled_and_kept(tmp_path):
    meta = speech_meta(0.5)
    meta["turns"][0]["parts"][0] = {"audio": "wav"}
    write_shard(tmp_path / "w.tar", [("stereo", meta, {"wav": encode(sine(0.5, rate=8000, channels=2), 8000, "WAV")})])
    tally = DataTally()
    (sample,) = finite_samples(resolve_shards(str(tmp_path / "w.tar")), ReadConfig(sample_rate=RATE), Slot(), tally)
    wave, rate = sample.audio["wav"]
    assert rate == RATE and wave.shape == (RATE // 2,) and wave.dtype == torch.float32
    assert sample.duration == pytest.approx(0.5) and not tally.total
    assert wave.abs().max() == pytest.approx(0.225, abs=0.01)  # mean of the channels (0.15 and 0.3 amplitude)


def test_too_long_samples_are_dropped_or_clipped_and_counted(tmp_path):
    write_shard(tmp_path / "x.tar", [speech_sample("short", 0.4), speech_sample("long", 1.0, clips=2)])
    shards = resolve_shards(str(tmp_path / "x.tar"))
    dropped = DataTally()
    assert keys_of(finite_samples(shards, ReadConfig(max_duration=1.0), Slot(), dropped)) == ["short"]
    assert dropped.total == {"too_long": 1}
    clipped = DataTally()
    samples = list(finite_samples(shards, ReadConfig(max_duration=1.0, on_too_long="clip"), Slot(), clipped))
    assert keys_of(samples) == ["short", "long"] and clipped.clipped == 1 and not clipped.total
    assert samples[1].duration <= 1.0 and [w.numel() for w, _ in samples[1].audio.values()] == [RATE // 2] * 2


def test_multi_clip_and_text_samples_decode(tmp_path):
    text_set(tmp_path, shards=1, per_shard=2)
    write_shard(tmp_path / "m.tar", [speech_sample("multi", 0.25, clips=3)])
    shards = resolve_shards([str(tmp_path / "t-000000.tar"), str(tmp_path / "m.tar")])
    text0, _, multi = finite_samples(shards, ReadConfig(), Slot(), DataTally())
    assert text0.task == "text" and text0.audio == {} and text0.duration is None
    assert list(multi.audio) == ["0.flac", "1.flac", "2.flac"] and multi.duration == pytest.approx(0.75)


def test_infinite_stream_is_seeded_per_reader_and_never_ends(tmp_path):
    speech_set(tmp_path, shards=2, per_shard=3)
    shards = resolve_shards(str(tmp_path))

    def first(seed: int, n: int = 20) -> list[str]:
        stream = infinite_samples(shards, ReadConfig(), random.Random(seed), DataTally(), shuffle_buffer=4)
        return keys_of(itertools.islice(stream, n))

    assert first(1) == first(1)
    assert first(1) != first(2)
    assert len(first(1, 50)) == 50  # six samples, drawn again and again


def test_infinite_stream_of_only_bad_samples_raises_instead_of_hanging(tmp_path):
    write_shard(tmp_path / "bad.tar", [("b", b"not json", {})])
    stream = infinite_samples(
        resolve_shards(str(tmp_path / "bad.tar")), ReadConfig(), random.Random(0), DataTally(), 1, 50
    )
    with pytest.raises(RuntimeError, match="50 samples in a row were unusable"):
        next(stream)


def test_peek_durations_reads_metadata(tmp_path):
    speech_set(tmp_path, shards=2, per_shard=3, seconds=(1.0, 2.0))
    durations = peek_durations(resolve_shards(str(tmp_path)), limit=4)
    assert len(durations) == 4 and all(1.0 <= d <= 2.0 for d in durations)


# --- inspect --------------------------------------------------------------------------------------------------


def test_inspect_json_reports_exact_counts_and_exits_zero(tmp_path, capsys):
    good, expected = corrupt_set(tmp_path)
    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers())
    args = parser.parse_args(["data", "inspect", str(tmp_path / "*.tar"), "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == len(good) and report["shards"] == 2
    assert report["skipped"] == expected and report["tasks"] == {"asr": len(good)}
    assert sum(report["durations"].values()) == len(good)
    assert report["hours"] == pytest.approx((3 * 0.3 + 0.5) / 3600)


def test_inspect_text_table(tmp_path, capsys):
    speech_set(tmp_path, shards=1, per_shard=2, seconds=(1.5, 1.5))
    assert inspect_shards(str(tmp_path))["durations"]["1-2s"] == 2
    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers())
    args = parser.parse_args(["data", "inspect", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "samples" in out and "asr" in out and "skipped: none" in out


def test_unreadable_shards_are_counted_and_the_rest_streams(tmp_path):
    keys = speech_set(tmp_path, shards=1, per_shard=2)
    shards = resolve_shards([f"pipe:cat {tmp_path}/missing.tar", str(tmp_path / "s-000000.tar")])
    tally = DataTally()
    read = ReadConfig(retry=RetryPolicy(attempts=2, wait_s=0.0))
    assert keys_of(finite_samples(shards, read, Slot(), tally)) == keys
    assert dict(tally.total) == {"unreadable_shard": 1} and tally.retries == 1  # a failed pipe is tried once more


def test_teacher_prompts_and_responses_reach_the_sample(tmp_path):
    meta = speech_meta(0.3) | {"responses": {"sqa": "yes"}, "prompts": {"sqa": "is it red"}}
    write_shard(tmp_path / "t.tar", [("k", meta, speech_sample("k", 0.3)[2])])
    (sample,) = finite_samples(resolve_shards(str(tmp_path / "t.tar")), ReadConfig(), Slot(), DataTally())
    assert sample.responses == {"sqa": "yes"} and sample.prompts == {"sqa": "is it red"}
    assert sample.teacher_turns is None


def _tarfile_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("compression", ["", "gz"])
def test_the_tar_reader_gives_what_tarfile_gives_and_fails_where_it_fails(fmt, compression):
    """Long names (GNU and pax), pax mtimes (webdataset writes float ones), directories, compressed shards; and
    streams cut in a header, a member or its padding."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}" if compression else "w", format=fmt) as tar:
        for i in range(5):
            name = f"{'d' * (120 if i == 2 and fmt != tarfile.USTAR_FORMAT else 3)}/k{i}.flac"
            info, payload = tarfile.TarInfo(name), bytes(range(256)) * i + b"x" * (97 * i)
            info.size, info.mtime = len(payload), 1.5 + i
            tar.addfile(info, io.BytesIO(payload))
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    data = buffer.getvalue()
    assert [(n, read()) for n, read in _stream_members(io.BytesIO(data))] == _tarfile_members(data)
    if compression:
        return
    for cut in (0, 300, 512, 600, len(data) // 2, len(data) - 1030):
        try:
            expected: object = _tarfile_members(data[:cut])
        except tarfile.ReadError:
            expected = tarfile.ReadError
        try:
            got: object = [(n, read()) for n, read in tar_members(io.BytesIO(data[:cut]))]
        except tarfile.ReadError:
            got = tarfile.ReadError
        assert got == expected, cut
