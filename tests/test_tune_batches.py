"""`lit-sllm data tune-batches`: the search per bucket on a known memory curve, and a real probe of a tiny model on
the CPU whose result is written into a config the DataModule then batches by."""

from __future__ import annotations

import argparse

import pytest
import yaml
from data_helpers import speech_set

from lit_sllm.cli import main
from lit_sllm.data.batching import BucketGrid
from lit_sllm.tools.tune_batches import Cell, build, largest_rows, parse_bytes, tune, tune_source, worst_cases


class FakeProbe:
    """Memory = 100 + rows x seconds x tokens; fits under `budget`; records what it measured, as `StepProbe` does."""

    def __init__(self, budget: float) -> None:
        self.budget, self.peaks, self.calls = budget, {}, 0

    def __call__(self, cell: Cell, rows: int) -> bool:
        self.calls += 1
        self.peaks[(cell.row, cell.column, rows)] = peak = 100 + rows * cell.seconds * cell.tokens
        return peak <= self.budget


def test_the_search_finds_the_largest_fitting_rows_and_respects_smaller_buckets():
    grid = BucketGrid([2.0, 4.0], [[10], [10], [10]])
    cells = worst_cases(grid, [(1.0, 5), (6.0, 30)], longest=8.0, limit_rows=lambda s, t: 500)
    assert [(c.seconds, c.tokens) for c in cells] == [(2.0, 9), (2.0, 30), (4.0, 9), (4.0, 30), (6.0, 9), (6.0, 30)]
    probe = FakeProbe(budget=10_000)
    tune(cells, probe, max_rows=400)
    for cell in cells:
        exact = min(400, int((10_000 - 100) // (cell.seconds * cell.tokens)))
        assert cell.rows == exact and cell.peak <= 10_000
    assert probe.calls < 6 * 2 * 9  # doubling then bisection: about 2 log2(rows) probes per bucket
    with pytest.raises(RuntimeError, match="does not fit the memory budget; lower data.max_duration"):
        tune(worst_cases(grid, [], 8.0, lambda s, t: 500), FakeProbe(budget=50), max_rows=400)
    assert largest_rows(FakeProbe(1e9), cells[0], upper=7) == 7
    assert parse_bytes("1.5GiB") == 3 * 2**29 and parse_bytes("512M") == 2**29 and parse_bytes("1000") == 1000
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bytes("lots")


CONFIG = """
model:
  class_path: lit_sllm.modules.joint_sft.JointSFT
  init_args:
    llm: {{name_or_path: {llm}}}
    encoder: {{class_path: lit_sllm.models.encoders.HFSpeechEncoder, init_args: {{name_or_path: {encoder}}}}}
    adapter: {{class_path: lit_sllm.models.adapters.FrameStackMLP, init_args: {{stack: 2}}}}
data:
  class_path: lit_sllm.data.SpeechTextDataModule
  init_args:
    num_workers: 0
    batches_per_epoch: 10
    train:
      asr: {{shards: {asr}, batching: {{batch_size: 512, max_duration: 1000.0, num_buckets: 2, token_buckets: 2}}}}
trainer: {{accelerator: cpu}}
"""


def test_a_cpu_probe_under_a_memory_cap_is_written_into_the_config(
    tmp_path, tiny_llm_dir, tiny_whisper_dir, capsys, monkeypatch
):
    speech_set(tmp_path / "asr", shards=2, per_shard=10)
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(llm=tiny_llm_dir, encoder=tiny_whisper_dir, asr=tmp_path / "asr"))
    tuned = tune_source([str(config)], "asr", "cpu", memory_cap=2**31, margin=0.1, max_rows=8)
    budget, cells = tuned.probe.budget, tuned.cells
    for index, cell in enumerate(cells):  # the largest size that fit, or the bound it was searched up to
        peaks = {rows: peak for (r, c, rows), peak in tuned.probe.peaks.items() if (r, c) == (cell.row, cell.column)}
        assert 1 <= cell.rows <= 8 and 0 < peaks[cell.rows] <= budget
        smaller = [c.rows for c in cells[:index] if c.seconds <= cell.seconds and c.tokens <= cell.tokens]
        assert cell.rows == min([8, *smaller]) or peaks[cell.rows + 1] > budget
    monkeypatch.setattr("lit_sllm.tools.tune_batches.tune_source", lambda *args: tuned)
    out = tmp_path / "tuned.yaml"
    command = ["data", "tune-batches", "--config", str(config), "--source", "asr", "--device", "cpu"]
    assert main([*command, "--out", str(out)]) == 0
    sizes = yaml.safe_load(out.read_text())["data"]["init_args"]["train"]["asr"]["batching"]["bucket_batch_sizes"]
    assert sizes == [[cells[0].rows, cells[1].rows], [cells[2].rows, cells[3].rows]]
    assert "rows" in capsys.readouterr().out
    data, _ = build(yaml.safe_load(out.read_text()), "cpu")
    loader = data.train_dataloader()
    grid = loader.dataset.plans["asr"].grid
    assert grid.batch_sizes == sizes
    for batch in loader:
        seconds, tokens = batch.audio_lengths.max().item() / 16000, int(batch.attention_mask.sum(1).max())
        assert batch.size <= grid.cap(grid.index(seconds, tokens))
    monkeypatch.undo()
    assert main([*command, "--memory-cap", "1KiB", "--out", str(out)]) == 1
    assert "does not fit the memory budget" in capsys.readouterr().err
