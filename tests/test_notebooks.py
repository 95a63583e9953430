"""The notebooks run headless on artefacts made here (shards, CSV logs, a W&B offline run); the curve loaders they
use read exact values, W&B records longer than a log block, and logs cut short by a killed job."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import nbformat
import pytest
import torch
import wandb
from nbclient import NotebookClient

from lit_sllm.analysis import load_csv_metrics, load_runs, load_wandb_run
from lit_sllm.data.audio import encode_flac
from lit_sllm.data.shards import ShardSetWriter

REPO = Path(__file__).resolve().parent.parent
RATE = 16000
CSV_HEADER = "epoch,step,train/loss,val/loss,forgetting/x/ppl_ratio,forgetting/x/kl\n"
WIDE_METRICS = 3000  # one history record of ~90 KB: longer than a 32 KiB block of the W&B log


def sine_flac(seconds: float, freq: float) -> bytes:
    t = torch.arange(int(seconds * RATE)) / RATE
    return encode_flac(0.3 * torch.sin(2 * math.pi * freq * t), RATE)


def speech(key: str, seconds: float, task: str, transcript: str) -> tuple[dict, dict[str, bytes]]:
    turns = [
        {"role": "user", "parts": [{"audio": "flac"}, {"text": "transcribe"}]},
        {"role": "assistant", "parts": [{"text": transcript}]},
    ]
    meta = {"key": key, "task": task, "transcript": transcript, "turns": turns}
    return meta, {"flac": sine_flac(seconds, 200 + 100 * seconds)}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """5 samples in 2 shards: 3 ASR, 1 spoken QA, 1 text-only."""
    out = tmp_path_factory.mktemp("shards")
    samples = [
        speech("utt0", 1.0, "asr", "the red cat"),
        speech("utt1", 1.5, "asr", "a blue dog"),
        speech("utt2", 0.5, "asr", "hello world"),
        speech("utt3", 2.0, "sqa", "what colour is the ball"),
    ]
    text_turns = [{"role": "user", "parts": [{"text": "say yes"}]}, {"role": "assistant", "parts": [{"text": "yes"}]}]
    samples.append(({"key": "txt0", "task": "text", "turns": text_turns}, {}))
    with ShardSetWriter(out, "toy", shard_size=3) as writer:
        for meta, audio in samples:
            writer.write(meta, audio)
    return out


def write_csv(folder: Path, rows: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(CSV_HEADER + "".join(row + "\n" for row in rows))
    return folder


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Two CSVLogger runs and one W&B offline run, the way Lightning's loggers lay them out."""
    root = tmp_path_factory.mktemp("runs")
    write_csv(root / "csv_a" / "version_0", ["0,9,2.0,,,", "0,19,1.5,,,", "0,19,,1.7,1.01,0.002", "0,29,1.0,,,"])
    write_csv(root / "csv_b" / "version_0", ["0,9,2.5,,,", "0,19,2.2,2.4,1.2,0.05"])
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
    run = wandb.init(mode="offline", dir=root, project="lit_sllm", name="wb_run", settings=settings)
    for step in range(0, 50, 10):
        run.log({"train/loss": 3.0 - step / 25, "trainer/global_step": step})
    run.log({"forgetting/x/ppl_ratio": 1.03, "forgetting/x/kl": 0.01, "trainer/global_step": 40})
    run.log({f"wide/m{i}": float(i) for i in range(WIDE_METRICS)} | {"trainer/global_step": 41, "note": "text"})
    run.finish()
    return root


def execute(notebook: str, monkeypatch, **env: str) -> list[dict]:
    """Runs a notebook from the repo root with `env` set and returns the outputs of all its code cells."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(REPO / "notebooks" / notebook, as_version=4)
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def stdout(outputs: list[dict]) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def images(outputs: list[dict]) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def test_inspect_shards_notebook_counts_plots_and_plays(shard_dir, monkeypatch):
    outputs = execute("inspect_shards.ipynb", monkeypatch, LIT_SLLM_SHARDS=str(shard_dir))
    text = stdout(outputs)
    assert "samples: 5" in text
    for line in ("task asr: 3", "task sqa: 1", "task text: 1"):
        assert line in text
    assert "utt0 [asr] 1.00 s  user: <flac> transcribe | assistant: the red cat" in text
    assert images(outputs) == 3  # tasks, durations, spectrogram
    assert sum("<audio" in o.get("data", {}).get("text/html", "") for o in outputs) == 1


def test_curves_notebook_compares_csv_and_wandb_runs(runs_dir, monkeypatch):
    folders = ",".join(str(runs_dir / name) for name in ("csv_a", "csv_b", "wandb"))
    outputs = execute("curves.ipynb", monkeypatch, LIT_SLLM_RUNS=folders)
    text = stdout(outputs)
    assert "csv_a/version_0: 5 metrics, last step 29" in text
    assert "csv_b/version_0: 5 metrics, last step 19" in text
    assert f"{WIDE_METRICS + 3} metrics, last step 41" in text and "wb_run (offline-run-" in text
    assert "csv_a/version_0 {'forgetting/x/kl': 0.002, 'forgetting/x/ppl_ratio': 1.01}" in text
    assert "{'forgetting/x/kl': 0.01, 'forgetting/x/ppl_ratio': 1.03}" in text
    assert images(outputs) == 2  # losses, forgetting


def test_csv_metrics_skip_blank_cells_and_count_text(tmp_path, caplog):
    folder = write_csv(tmp_path / "run", ["0,9,2.0,,,", "0,19,,1.7,1.01,n/a"])
    with caplog.at_level(logging.WARNING):
        run = load_csv_metrics(folder / "metrics.csv")
    assert run["train/loss"] == ([9.0], [2.0])
    assert run["val/loss"] == ([19.0], [1.7])
    assert run["epoch"] == ([9.0, 19.0], [0.0, 0.0])
    assert "forgetting/x/kl" not in run
    assert "left out 1 non-numeric values" in caplog.text
    with pytest.raises(ValueError, match="no 'step' column"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        load_csv_metrics(tmp_path / "bad.csv")


def test_wandb_log_reads_long_records_and_stops_cleanly_at_a_cut(runs_dir, tmp_path, caplog):
    (folder,) = (runs_dir / "wandb").glob("offline-run-*")
    run, name = load_wandb_run(folder)
    assert name == "wb_run"
    assert run["train/loss"] == ([0.0, 10.0, 20.0, 30.0, 40.0], [3.0, 2.6, 2.2, 1.8, 1.4])
    assert sum(metric.startswith("wide/") for metric in run) == WIDE_METRICS
    assert run["wide/m2999"] == ([41.0], [2999.0])
    # a job killed inside the long record: everything before it is kept, the tail is reported
    (log,) = folder.glob("*.wandb")
    data = log.read_bytes()
    cut = data.index(b"wide/m1500")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / log.name).write_bytes(data[:cut])
    with caplog.at_level(logging.WARNING):
        runs = load_runs(tmp_path / "cut")
    (short,) = runs.values()
    assert short["train/loss"] == run["train/loss"]
    assert short["forgetting/x/ppl_ratio"] == ([40.0], [1.03])
    assert not any(metric.startswith("wide/") for metric in short)
    assert "ends early" in caplog.text


def test_load_runs_names_the_path_when_nothing_is_there(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_runs(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="No metrics.csv or W&B run folder"):
        load_runs([tmp_path])
