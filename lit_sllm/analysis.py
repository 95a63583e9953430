"""Helpers the notebooks import: training curves from CSV logs and W&B run folders, shard-set overviews, plots.

Curves load without pandas and without a W&B account: CSVLogger `metrics.csv` files are read as CSV, and W&B run
folders (offline or synced) from `files/wandb-history.jsonl` when present, else from the run's `run-<id>.wandb`
transaction log, which wandb (0.31 included) writes as a LevelDB-style log of protobuf records: a 7-byte file
header, then 32 KiB blocks of records, each `crc32 (4) | length (2) | type (1) | payload`, with long records split
into FIRST/MIDDLE/LAST fragments. A log cut short by a killed job is read up to its last whole record.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import math
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_sllm.data.inspect import inspect_shards
from lit_sllm.data.pipeline import DataTally, ReadConfig, Slot, finite_samples, peek_durations, resolve_shards
from lit_sllm.data.schema import Sample
from lit_sllm.models.features import LogMelFeatures

logger = logging.getLogger(__name__)

Curve = tuple[list[float], list[float]]  # (steps, values), in logging order
Run = dict[str, Curve]  # metric name -> curve

CSV_FILE = "metrics.csv"
WANDB_HISTORY = "files/wandb-history.jsonl"
# Step axes, in order of preference: Lightning's WandbLogger logs trainer/global_step next to every metric.
WANDB_STEP_KEYS = ("trainer/global_step", "_step")
WANDB_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
WANDB_BLOCK = 32768
RECORD_HEADER = struct.Struct("<IHB")  # crc32 of (type byte + payload), payload length, record type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class _CutShort(Exception):
    """The W&B log ends in a partial or corrupt record."""


# --- numbers ----------------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A float for numbers and numeric strings ("nan" included); None for anything else (media, tables, text)."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _add_row(run: Run, step: float, row: dict[str, Any], skipped: Counter) -> None:
    """Appends the numeric values of one logged row; non-numeric ones are counted in `skipped` by metric."""
    for name, value in row.items():
        number = _number(value)
        if number is None:
            if value not in (None, ""):
                skipped[name] += 1
            continue
        steps, values = run.setdefault(name, ([], []))
        steps.append(step)
        values.append(number)


def _report_skipped(source: Path, skipped: Counter) -> None:
    if skipped:
        logger.warning("%s: left out %d non-numeric values (by metric: %s)", source, sum(skipped.values()), skipped)


# --- CSVLogger --------------------------------------------------------------------------------------------------


def load_csv_metrics(path: str | Path) -> Run:
    """Curves of a Lightning CSVLogger `metrics.csv`: every column but `step`, against `step`; blank cells skipped.

    Raises:
        ValueError: when the file has no `step` column (it is not a CSVLogger file).
    """
    path = Path(path)
    run: Run = {}
    skipped: Counter = Counter()
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if "step" not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no 'step' column ({reader.fieldnames}): pass a Lightning CSVLogger file.")
        for row in reader:
            step = _number(row.pop("step"))
            if step is None:
                skipped["step"] += 1
                continue
            _add_row(run, step, row, skipped)
    _report_skipped(path, skipped)
    return run


# --- W&B --------------------------------------------------------------------------------------------------------


def _wandb_fragments(path: Path) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each record of a W&B transaction log; raises `_CutShort` at a partial or corrupt one."""
    with path.open("rb") as handle:
        block, start = handle.read(WANDB_BLOCK), len(WANDB_HEADER)
        if not block.startswith(WANDB_HEADER):
            raise ValueError(f"{path} does not start with the W&B log header: pass a run-<id>.wandb file.")
        while block:
            pos = start
            while pos + RECORD_HEADER.size <= len(block):
                crc, length, kind = RECORD_HEADER.unpack_from(block, pos)
                if crc == length == kind == 0:  # zero padding to the end of the block
                    break
                payload = block[pos + RECORD_HEADER.size : pos + RECORD_HEADER.size + length]
                if len(payload) < length or zlib.crc32(bytes([kind]) + payload) != crc:
                    raise _CutShort(f"record at byte {handle.tell() - len(block) + pos} is partial or corrupt")
                yield kind, payload
                pos += RECORD_HEADER.size + length
            block, start = handle.read(WANDB_BLOCK), 0


def wandb_records(path: str | Path) -> Iterator[bytes]:
    """Whole protobuf records of a `run-<id>.wandb` log, fragments joined; a cut-short tail is logged and ends it."""
    path, pending = Path(path), b""
    try:
        for kind, payload in _wandb_fragments(path):
            if kind == FULL:
                yield payload
            elif kind == FIRST:
                pending = payload
            elif kind == MIDDLE:
                pending += payload
            elif kind == LAST:
                yield pending + payload
    except _CutShort as err:
        logger.warning("%s ends early (%s; the run was probably killed while writing): read up to there.", path, err)


def _wandb_rows(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """History rows (metric -> value) of a `.wandb` log, and the run's display name when it was recorded."""
    from wandb.proto import wandb_internal_pb2

    rows, name = [], None
    for data in wandb_records(path):
        record = wandb_internal_pb2.Record.FromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name = record.run.display_name or name
        elif kind == "history":
            items = ((item.key or ".".join(item.nested_key), item.value_json) for item in record.history.item)
            rows.append({key: json.loads(value) for key, value in items})
    return rows, name


def _rows_to_run(rows: Iterable[dict[str, Any]], source: Path) -> Run:
    run: Run = {}
    skipped: Counter = Counter()
    for row in rows:
        step = next((_number(row[key]) for key in WANDB_STEP_KEYS if key in row), None)
        if step is None:
            skipped["(rows without a step)"] += 1
            continue
        metrics = {k: v for k, v in row.items() if not k.startswith("_") and k not in WANDB_STEP_KEYS}
        _add_row(run, step, metrics, skipped)
    _report_skipped(source, skipped)
    return run


def load_wandb_run(folder: str | Path) -> tuple[Run, str | None]:
    """Curves of one W&B run folder (`wandb/offline-run-*` or `wandb/run-*`) and the run's display name.

    Rows are placed at `trainer/global_step` when logged (Lightning's WandbLogger), else at W&B's `_step`.

    Raises:
        FileNotFoundError: when the folder holds neither `files/wandb-history.jsonl` nor a `.wandb` log.
    """
    folder = Path(folder)
    history = folder / WANDB_HISTORY
    if history.is_file():
        rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
        return _rows_to_run(rows, history), None
    logs = sorted(folder.glob("*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{folder} holds no {WANDB_HISTORY} and no .wandb log: pass a W&B run folder.")
    rows, name = [], None
    for log in logs:
        more, found = _wandb_rows(log)
        rows, name = rows + more, found or name
    return _rows_to_run(rows, logs[0]), name


# --- finding and loading runs -----------------------------------------------------------------------------------


def find_runs(path: str | Path) -> list[Path]:
    """Run folders at or under `path`: folders with a `metrics.csv` (CSV runs) or a `.wandb` log (W&B runs).

    Raises:
        FileNotFoundError: when `path` does not exist or holds no run.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass run folders (comma separated in LIT_SLLM_RUNS).")
    if path.is_file():
        return [path.parent]
    found = {p.parent for pattern in (CSV_FILE, "*.wandb", "wandb-history.jsonl") for p in path.rglob(pattern)}
    found = {folder.parent if folder.name == "files" else folder for folder in found}
    if not found:
        raise FileNotFoundError(f"No {CSV_FILE} or W&B run folder (.wandb log) under {path}.")
    return sorted(found)


def load_run(folder: Path) -> tuple[Run, str | None]:
    """Curves of one run folder (CSV or W&B) and its display name when W&B recorded one."""
    if (folder / CSV_FILE).is_file():
        return load_csv_metrics(folder / CSV_FILE), None
    return load_wandb_run(folder)


def _label(folder: Path, root: Path, name: str | None) -> str:
    relative = folder.relative_to(root.parent) if folder.is_relative_to(root.parent) else folder
    return f"{name} ({relative.name})" if name else str(relative)


def load_runs(paths: str | Path | Sequence[str | Path]) -> dict[str, Run]:
    """Curves of every run at or under `paths`, keyed by a readable label (W&B name, or the folder path).

    Args:
        paths: folders or files; a comma-separated string is split (the notebooks pass `LIT_SLLM_RUNS`).

    Returns:
        {run label: {metric: (steps, values)}}.
    """
    if isinstance(paths, str):
        paths = [p.strip() for p in paths.split(",") if p.strip()]
    elif isinstance(paths, Path):
        paths = [paths]
    runs: dict[str, Run] = {}
    for root in map(Path, paths):
        for folder in find_runs(root):
            run, name = load_run(folder)
            label, copy = _label(folder, root, name), 2
            while label in runs:
                label, copy = f"{_label(folder, root, name)} #{copy}", copy + 1
            runs[label] = run
    return runs


def matching(run: Run, pattern: str) -> list[str]:
    """Metric names of `run` that match a glob pattern such as `forgetting/*/ppl_ratio`, sorted."""
    return sorted(name for name in run if fnmatch.fnmatchcase(name, pattern))


def plot_metrics(runs: dict[str, Run], pattern: str, ax: Any) -> int:
    """Draws every metric matching `pattern` of every run on one matplotlib Axes, to compare runs.

    Returns:
        The number of lines drawn (0 when no run logged a matching metric).
    """
    lines = 0
    for label, run in runs.items():
        for name in matching(run, pattern):
            steps, values = run[name]
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=f"{label}: {name}")
            lines += 1
    ax.set_title(pattern)
    ax.set_xlabel("step")
    if lines:
        ax.legend(fontsize="small")
    return lines


def last_values(runs: dict[str, Run], pattern: str) -> dict[str, dict[str, float]]:
    """{run label: {metric: last logged value}} for metrics matching `pattern`; runs without one are left out."""
    table = {label: {name: run[name][1][-1] for name in matching(run, pattern)} for label, run in runs.items()}
    return {label: values for label, values in table.items() if values}


# --- shard sets -------------------------------------------------------------------------------------------------


@dataclass
class ShardOverview:
    """What a notebook shows of a shard set.

    Attributes:
        report: `lit_sllm.data.inspect.inspect_shards` output (samples, hours, tasks, duration bins, skips).
        durations: seconds of each speech sample, from metadata (up to `duration_limit` samples).
        examples: the first decoded samples, audio at the read sample rate.
    """

    report: dict[str, Any]
    durations: list[float]
    examples: list[Sample]


def shard_overview(
    spec: str | Sequence[str], sample_rate: int = 16000, examples: int = 3, duration_limit: int = 100_000
) -> ShardOverview:
    """Counts a shard set through the training pipeline and keeps a few samples to look at and listen to."""
    shards = resolve_shards(spec)
    report = inspect_shards(spec, sample_rate=sample_rate)
    durations = peek_durations(shards, limit=duration_limit)
    stream = finite_samples(shards, ReadConfig(sample_rate=sample_rate), Slot(), DataTally(warn_limit=0))
    kept = [sample for _, sample in zip(range(examples), stream)]
    return ShardOverview(report, durations, kept)


def first_clip(sample: Sample) -> tuple[Tensor, int]:
    """The first audio clip of a sample as (waveform (S,), sample rate).

    Raises:
        ValueError: for a text-only sample.
    """
    if not sample.audio:
        raise ValueError(f"sample {sample.key} (task {sample.task}) has no audio: pick a speech sample.")
    return next(iter(sample.audio.values()))


def log_mel(wave: Tensor, sample_rate: int, n_mels: int = 80) -> Tensor:
    """Log-mel features of one clip as the encoders see them: (S,) -> (n_mels, T) at 100 frames per second."""
    features = LogMelFeatures(n_mels=n_mels, sample_rate=sample_rate, hop_length=sample_rate // 100)
    with torch.no_grad():
        mel, _ = features(wave[None].float(), torch.tensor([wave.numel()]))  # (1, M, T)
    return mel[0]


def curve_summary(runs: dict[str, Run]) -> str:
    """One line per run: how many metrics it logged and its last step."""
    lines = []
    for label, run in runs.items():
        last = max((steps[-1] for steps, _ in run.values() if steps), default=math.nan)
        lines.append(f"{label}: {len(run)} metrics, last step {last:g}")
    return "\n".join(lines)
