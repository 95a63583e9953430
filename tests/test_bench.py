"""Benchmarks: timing helpers, every benchmark end to end at --quick sizes, the GPU benchmark's size choices and its
clean skip without CUDA, and the README tables made from the results. Nothing here asserts on speed."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from lit_sllm.bench import gpu
from lit_sllm.bench.common import interleaved, paired_ratio
from lit_sllm.bench.flops import matmul_weights, step_flops, step_shape
from lit_sllm.bench.gpu import largest_fitting, peak_flops, probe_batch, synthetic_samples
from lit_sllm.bench.models import build_module, num_words, write_model_folders
from lit_sllm.bench.report import results_markdown
from lit_sllm.bench.runner import run_benchmark
from lit_sllm.bench.stages import LOADER_STAGES
from lit_sllm.bench.synthetic import librispeech_durations
from lit_sllm.bench.training import TINY_SIZE, StepClock, compare_steps
from lit_sllm.data.collate import SampleEncoder, collate
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.tools import bench as bench_tool

REPO = Path(__file__).resolve().parents[1]


def bench_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    bench_tool.add_parser(parser.add_subparsers(dest="tool", required=True))
    args = parser.parse_args(["bench", *argv])
    return args.func(args)


def test_interleaved_rotates_the_order_every_round_and_ratios_pair_rounds():
    calls = []
    candidates = {name: (lambda name=name: calls.append(name) or float(len(calls))) for name in "abc"}
    seconds = interleaved(candidates, rounds=3)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert seconds == {"a": [1.0, 6.0, 8.0], "b": [2.0, 4.0, 9.0], "c": [3.0, 5.0, 7.0]}
    assert paired_ratio([2.0, 3.0, 30.0], [1.0, 1.0, 1.0]) == 3.0  # the median round, not the mean
    with pytest.raises(ValueError, match="equal, non-empty lists"):
        paired_ratio([1.0], [1.0, 2.0])


def test_librispeech_like_durations_have_its_shape():
    durations = librispeech_durations(5000, seed=1)
    assert len(durations) == 5000 and min(durations) >= 1.0 and max(durations) <= 24.5
    assert 12.0 < sum(durations) / len(durations) < 13.5
    assert sum(13 <= d <= 17 for d in durations) / len(durations) > 0.5  # the peak


def test_padding_batches_every_clip_once_within_the_limit(tmp_path):
    pytest.importorskip("lhotse")
    path = run_benchmark("padding", quick=True, out_dir=tmp_path)
    result = json.loads(path.read_text())
    figures, settings = result["figures"], result["settings"]
    names = ["lit_sllm", "lit_sllm 2-D", "fixed_size", "lhotse"]
    for name in names:
        assert figures[name]["clips"] == settings["utterances"]
        assert figures[name]["largest_padded_seconds"] <= settings["max_duration"] + 1e-6
        assert 0 < figures[name]["padding_efficiency"] <= 1 and 0 < figures[name]["token_padding_efficiency"] <= 1
    for name in ("lit_sllm", "lit_sllm 2-D"):
        assert figures[name]["largest_padded_tokens"] <= settings["max_tokens"]
        assert figures[name]["peak_held"] >= figures[name]["mean_rows"]  # a pool fills before it releases a batch
    longest = max(librispeech_durations(settings["utterances"], settings["seed"]))
    assert figures["fixed_size"]["batches"] == math.ceil(settings["utterances"] / (settings["max_duration"] // longest))
    assert result["goal"]["met"] in (True, False) and result["quick"] is True
    assert {"machine", "versions", "git", "created"} <= result.keys() and result["versions"]["torch"]
    assert [row[0] for row in result["tables"][0]["rows"]] == names


def test_data_compares_the_three_loaders_at_each_worker_count_and_times_each_stage(tmp_path):
    assert bench_cli(["data", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "data.json").read_text())
    figures, utterances = result["figures"], result["settings"]["utterances"]
    assert set(figures["pipeline_over_plain"]) == set(figures["pipeline_over_plain_per_cpu_second"]) == {"0", "1", "2"}
    for workers in (0, 1, 2):
        plain, pipeline = figures["loaders"][f"plain/{workers}"], figures["loaders"][f"pipeline/{workers}"]
        assert plain["decoded_per_epoch"] == plain["delivered_per_epoch"] == [utterances]  # each file once
        # samples still in bucket pools when the epoch ends were decoded but not delivered
        assert all(d >= n > 0 for d, n in zip(pipeline["decoded_per_epoch"], pipeline["delivered_per_epoch"]))
        assert pipeline["samples_per_s"]["median"] > 0 and plain["samples_per_s"]["median"] > 0
        assert pipeline["cpu_ms_per_decoded_sample"]["median"] > 0 and plain["cpu_ms_per_decoded_sample"]["median"] > 0
    assert set(figures["pipeline_over_lhotse_delivered_audio_per_cpu_second"]) == {"0", "1", "2"}
    assert set(figures["pipeline_over_lhotse_per_cpu_second"]) == {"0", "1", "2"}
    for workers in (0, 1, 2):  # lhotse delivers every clip once per epoch, with all its audio
        lhotse = figures["loaders"][f"lhotse/{workers}"]
        assert lhotse["decoded_per_epoch"] == lhotse["delivered_per_epoch"] == [utterances]
        assert lhotse["delivered_audio_s_per_epoch"] == [pytest.approx(figures["audio_hours"] * 3600)]
        assert lhotse["delivered_audio_s_per_cpu_s"]["median"] > 0
    assert [row[0] for row in result["tables"][1]["rows"]] == ["0", "1", "2"]
    assert set(figures["stage_s_per_audio_hour"]) == {*LOADER_STAGES, "features"}
    assert all(value > 0 for value in figures["stage_s_per_audio_hour"].values())


def test_augment_times_every_transform_and_the_pipeline_with_and_without(tmp_path):
    path = run_benchmark("augment", quick=True, out_dir=tmp_path)
    result = json.loads(path.read_text())
    figures, settings = result["figures"], result["settings"]
    costs = figures["transform_cpu_s_per_audio_hour"]
    assert {"speed 0.9/1.1", "noise, folder of WAV (as MUSAN)", "reverb, RIR folder", "codec mp3"} <= set(costs)
    assert all(value > 0 for value in costs.values())
    loaders = {f"{rate}/{kind}" for rate in settings["source_rates"] for kind in ("plain", "typical")}
    assert loaders <= set(figures["samples_per_s"]) and set(figures["over_plain"]) == set(
        figures["over_plain_per_cpu_second"]
    )
    assert [step["name"] for step in settings["lists"]["typical"]] == ["speed", "noise", "gain"]
    assert [t["title"].split(",")[0] for t in result["tables"]] == [
        "CPU seconds per hour of audio",
        "Pipeline throughput on 1 worker",
    ]


def test_step_runs_all_three_loops_on_the_same_batches(tmp_path):
    path = run_benchmark("step", quick=True, out_dir=tmp_path)  # raises if any loop saw other batches
    figures = json.loads(path.read_text())["figures"]
    assert set(figures["steps"]) == set(figures["overhead_vs_bare"]) == {"bare", "lightning", "lightning_prebuilt"}
    assert figures["overhead_vs_bare"]["bare"] == {"wall": 0.0, "cpu": 0.0}
    params = figures["parameters"]
    assert params["llm"]["trainable"] == 0 and params["llm"]["total"] > 0
    assert all(params[name]["trainable"] == params[name]["total"] > 0 for name in ("encoder", "adapter", "lora"))


def test_kd_times_distillation_and_interleaving_against_ce(tmp_path):
    path = run_benchmark("kd", quick=True, out_dir=tmp_path)
    figures = json.loads(path.read_text())["figures"]
    assert set(figures["ratio_to_ce"]) == {"ce", "kd_online", "kd_stored", "interleave_clips", "interleave_frames"}
    assert figures["ratio_to_ce"]["ce"]["wall"] == 1.0
    batches = figures["batches"]
    assert batches["kd_online"]["teacher_tokens"] > 0  # the stored kind runs no teacher: no teacher tokens
    assert batches["ce"]["teacher_tokens"] == batches["kd_stored"]["teacher_tokens"] == 0
    assert batches["kd_stored"]["stored_teacher_tokens"] == batches["kd_stored"]["labelled_tokens"] > 0
    # frame-level interleaving encodes each utterance once, as CE does; clip-level cuts it into more, shorter clips
    assert batches["interleave_frames"]["clips"] == batches["ce"]["clips"] < batches["interleave_clips"]["clips"]


def test_memory_measures_both_losses_in_fresh_processes_with_the_same_loss(tmp_path):
    path = run_benchmark("memory", quick=True, out_dir=tmp_path)  # raises if the two losses differ
    result = json.loads(path.read_text())
    memory, settings = result["figures"]["memory_bytes"], result["settings"]
    assert set(memory) == {"full", "labelled"} and settings["size"]["vocab_size"] == 4096
    for one in memory.values():
        assert one["peak"] >= one["before"] > 0 and one["step"] == one["peak"] - one["before"]
    assert memory["full"]["loss"] == pytest.approx(memory["labelled"]["loss"], rel=1e-5)
    ratios = result["figures"]["ratios"]
    assert ratios["step_memory"] == memory["labelled"]["step"] / memory["full"]["step"] and ratios["cpu"] > 0
    assert [row[0] for row in result["tables"][0]["rows"]] == ["full", "labelled"]


def test_compare_steps_takes_each_candidates_quietest_round():
    def clock(*step_seconds):
        made = StepClock(warmup=1)
        made.ticks = [(t, t / 2) for t in itertools.accumulate((0.0, *step_seconds))]
        return made

    clocks = {
        "base": [clock(1.0, 1.0, 1.2), clock(2.0, 2.0, 2.0)],  # round medians 1.0 and 2.0 (a busy round)
        "other": [clock(3.0, 3.0, 3.0), clock(1.1, 1.2, 1.1)],  # round medians 3.0 (busy) and 1.1
    }
    compared = compare_steps(clocks, "base")
    assert compared["other"]["wall"]["round_medians"] == [3.0, 1.1]
    assert compared["other"]["wall"]["ratio"] == pytest.approx(1.1) and compared["base"]["wall"]["ratio"] == 1.0
    assert compared["other"]["cpu"]["best"] == pytest.approx(0.55)  # the CPU ticks run at half the wall clock


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path taken without a CUDA GPU")
def test_gpu_is_skipped_cleanly_without_cuda(tmp_path, capsys):
    assert run_benchmark("gpu", quick=True, out_dir=tmp_path) is None
    assert bench_cli(["gpu", "--quick", "--out", str(tmp_path)]) == 0
    assert "gpu: skipped" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_largest_fitting_finds_the_threshold_from_either_side():
    probes = []

    def fits_below(threshold):
        def fits(size):
            probes.append(size)
            return size <= threshold

        return fits

    found = largest_fitting(fits_below(1000.0), start=240.0, limit=7680.0, tolerance=0.05)
    assert 950.0 <= found <= 1000.0 and probes[:4] == [240.0, 480.0, 960.0, 1920.0]
    assert largest_fitting(fits_below(1e9), start=240.0, limit=7680.0, tolerance=0.05) == 7680.0
    assert 57.0 <= largest_fitting(fits_below(60.0), start=240.0, limit=7680.0, tolerance=0.05) <= 60.0
    assert largest_fitting(lambda size: False, start=240.0, limit=7680.0, tolerance=0.05) is None


def test_peak_flops_by_device_name():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA GH200 480GB") == 989.4e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Future GPU") is None


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory):
    llm_dir, encoder_dir = write_model_folders(tmp_path_factory.mktemp("bench_models"), TINY_SIZE)
    torch.manual_seed(0)
    return build_module(JointSFT, llm_dir, encoder_dir, TINY_SIZE)


def test_probe_batches_hold_as_many_whole_clips_as_fit(tiny_module):
    encoder = SampleEncoder(ChatFormatter(tiny_module.model.tokenizer), 16000)
    (sample,) = synthetic_samples(encoder, [1.5], num_words(TINY_SIZE), seed=0)
    pad_id = tiny_module.model.tokenizer.pad_token_id
    assert probe_batch(sample, 7.4, pad_id).size == 4
    assert probe_batch(sample, 0.5, pad_id).size == 1
    assert probe_batch(sample, 7.4, pad_id).audio.shape == (4, 24000)


def test_step_flops_count_the_real_positions_of_each_stage(tiny_module):
    model = tiny_module.model
    encoder = SampleEncoder(ChatFormatter(model.tokenizer), 16000)
    samples = synthetic_samples(encoder, [0.7, 1.3, 2.0], num_words(TINY_SIZE), seed=0)
    batch = collate(samples, "asr", model.tokenizer.pad_token_id)
    shape = step_shape(model, batch)
    with torch.no_grad():
        spliced = model.prepare_inputs(batch)
        _, encoder_lengths = model.encoder(batch.audio, batch.audio_lengths)
    assert torch.equal(shape.llm_tokens, spliced.attention_mask.sum(dim=1))
    assert torch.equal(shape.encoder_frames, encoder_lengths)
    assert int(shape.adapter_frames.sum()) == int(spliced.audio_mask.sum())
    llm = matmul_weights(model.llm)
    lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    assert llm.trained == lora and llm.frozen > 0  # LoRA trains, the base LLM is frozen
    without_llm_attention = step_flops(model, shape) - 12 * TINY_SIZE.llm_layers * TINY_SIZE.llm_hidden * int(
        (shape.llm_tokens**2).sum()
    )
    llm_matmuls = (6 * llm.trained + 4 * llm.frozen) * int(shape.llm_tokens.sum())
    assert without_llm_attention > llm_matmuls  # encoder and adapter add theirs


def test_table_lists_every_result_with_its_goal(tmp_path):
    with pytest.raises(FileNotFoundError, match="No benchmark results"):
        results_markdown(tmp_path)
    pytest.importorskip("lhotse")
    run_benchmark("padding", quick=True, out_dir=tmp_path)
    text = results_markdown(tmp_path)
    assert "| `padding` | audio padding efficiency >= 0.97" in text
    assert "| lit_sllm |" in text and "--quick sizes" in text


def test_readme_tables_match_the_committed_results():
    committed = REPO / "bench" / "results"
    if not any(committed.glob("*.json")):
        pytest.skip("no committed benchmark results")
    readmes = [(REPO / name).read_text() for name in ("README.md", "bench/README_section.md") if (REPO / name).exists()]
    assert any(results_markdown(committed) in text for text in readmes), "paste `lit-sllm bench --table` output"


def test_gpu_measurement_runs_end_to_end_on_cpu_with_cuda_memory_calls_stubbed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    outcome = gpu.measure(gpu.QUICK, "cpu")
    figures = outcome.figures
    assert figures["largest_batch_seconds"] == gpu.QUICK.search_limit  # nothing runs out of memory on the CPU
    assert figures["peak_memory_gib"] == 3.0 and figures["peak_bf16_flops"] == 989.4e12
    assert figures["mfu"] > 0 and figures["llm_tokens_per_s"] > 0 and figures["model_flops_per_step"] > 0
    assert figures["parameters"]["llm"]["trainable"] == 0 and figures["parameters"]["lora"]["trainable"] > 0
