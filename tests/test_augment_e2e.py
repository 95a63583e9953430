"""The shipped toy augmentation overlay end to end: a short fit logs the counts, and `data inspect --augment` writes
audible examples and a spectrogram picture."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import soundfile as sf

from lit_sllm.cli import main

ROOT = Path(__file__).resolve().parents[1]
BASE, OVERLAY = ROOT / "experiments/toy/joint_sft.yaml", ROOT / "experiments/toy/joint_sft_augment.yaml"


@pytest.mark.slow
def test_toy_fit_with_augmentation_logs_the_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    short = tmp_path / "short.yaml"  # the ASR source alone, in few buckets: the first batch comes quickly
    short.write_text(f"""
data:
  init_args:
    num_workers: 1
    train:
      asr: {{batching: {{num_buckets: 3}}}}
      st: {{weight: 0.0}}
      sqa: {{weight: 0.0}}
      dialog: {{weight: 0.0}}
      text: {{weight: 0.0}}
trainer:
  max_steps: 3
  log_every_n_steps: 1
  limit_val_batches: 0
  enable_progress_bar: false
  default_root_dir: {tmp_path}
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {tmp_path}, name: run}}}}
  callbacks: []
""")
    assert main(["fit", "--config", str(BASE), "--config", str(OVERLAY), "--config", str(short)]) == 0
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(r["train/asr/loss"] for r in rows)
    assert all(float(r["data/augment/speed"]) >= 1 for r in rows)  # p = 1: every sample of every batch


def test_inspect_writes_audible_examples_and_a_spectrogram_picture(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "examples"
    command = ["data", "inspect", "--augment", str(BASE), "--augment", str(OVERLAY), "--out", str(out)]
    assert main([*command, "--each", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [e["applied"] for e in result["examples"]] == [["speed"], ["noise"], ["reverb"], ["gain"], ["telephone"]]
    for example in result["examples"]:
        original, rate = sf.read(example["original"])
        augmented, augmented_rate = sf.read(example["augmented"])
        assert rate == augmented_rate == 16000 and abs(augmented).max() > 0.01  # audible, not silence
        assert len(augmented) == pytest.approx(len(original) / (len(original) / rate) * example["seconds"][1], abs=2)
    png = Path(result["png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert main(["data", "inspect", "--augment", str(BASE), "--out", str(out)]) == 1
    assert "give no augmentation for any train source" in capsys.readouterr().err
