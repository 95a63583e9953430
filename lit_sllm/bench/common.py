"""What every benchmark shares: interleaved timing with medians and paired ratios, run provenance, result files.

Shared machines are noisy, so candidates are never timed one after another in blocks: each round runs every
candidate once, in an order rotated from round to round. Comparisons are ratios of measurements from the same run:
paired by round (the median of per-round ratios), or, for training steps, each candidate's least-disturbed round
(other jobs only ever add time), with the median of step-by-step ratios kept as a cross-check.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import torch

from lit_sllm.provenance import git_state

T = TypeVar("T")
PACKAGES = ("lit-sllm", "torch", "torchaudio", "lightning", "transformers", "peft", "webdataset", "lhotse")


@dataclass
class Goal:
    """The issue's target for a benchmark and whether the measurement meets it.

    Attributes:
        target: the goal in words, e.g. "padding efficiency >= 0.97 and not below lhotse".
        measured: the measured figure in words, e.g. "0.977 (lhotse 0.974)".
        met: whether the goal is met.
    """

    target: str
    measured: str
    met: bool


@dataclass
class Outcome:
    """What a benchmark reports.

    Attributes:
        settings: sizes, seeds and counts that define the run.
        figures: the measurements, as plain numbers.
        tables: the figures for people, each `{"title": ..., "columns": [...], "rows": [[...], ...]}`; the README
            shows them as they are.
        goal: the issue's goal and the verdict.
    """

    settings: dict[str, Any]
    figures: dict[str, Any]
    tables: list[dict[str, Any]]
    goal: Goal


class BenchmarkSkipped(Exception):
    """Raised by a benchmark that cannot run here (e.g. no CUDA GPU); nothing is written."""


def table(title: str, columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """One display table of an `Outcome`."""
    return {"title": title, "columns": columns, "rows": rows}


def interleaved(candidates: dict[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Runs every candidate once per round, the order rotated by one each round.

    Args:
        candidates: name -> callable that runs the candidate once and returns what it measured (e.g. its seconds,
            or the seconds of each of its steps).
        rounds: rounds to run.

    Returns:
        name -> what each round measured, in round order.
    """
    names = list(candidates)
    measured: dict[str, list[T]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            measured[name].append(candidates[name]())
    return measured


def flatten(rounds: list[list[float]]) -> list[float]:
    """Per-step measurements of every round, in order (pairs step i of round r across candidates)."""
    return [value for one in rounds for value in one]


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median of numerator / denominator over pairs measured side by side (same round, or same step of a round)."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"Paired ratios need equal, non-empty lists, got {len(numerators)} and {len(denominators)}.")
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def best_round(rounds: list[list[float]]) -> float:
    """The smallest per-round median: the round least disturbed by other jobs on the machine."""
    return min(statistics.median(one) for one in rounds)


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements, and the measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on: CPU model and cores, torch threads, memory, GPU."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(memory / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_result(out_dir: str | Path, name: str, outcome: Outcome, quick: bool, seconds: float) -> Path:
    """Writes `<out_dir>/<name>.json`: figures, tables, goal, settings, machine, versions, git commit and run time."""
    payload = {
        "benchmark": name,
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(seconds, 1),
        "goal": asdict(outcome.goal),
        "tables": outcome.tables,
        "figures": outcome.figures,
        "settings": outcome.settings,
        "machine": machine_info(),
        "versions": package_versions(),
        "git": git_state(),
    }
    path = Path(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
