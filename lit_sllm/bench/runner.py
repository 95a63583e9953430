"""Runs benchmarks by name and writes their result files."""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

from lit_sllm.bench import BENCHMARKS, GROUPS
from lit_sllm.bench.common import BenchmarkSkipped, write_result

log = logging.getLogger(__name__)


def expand(names: list[str]) -> list[str]:
    """Benchmark names with groups expanded, in order, each once."""
    return list(dict.fromkeys(one for name in names for one in GROUPS.get(name, (name,))))


def run_benchmark(name: str, quick: bool, out_dir: str | Path) -> Path | None:
    """Runs one benchmark and writes `<out_dir>/<name>.json`; returns its path, or None when it was skipped.

    Raises:
        KeyError: for an unknown name.
    """
    if name not in BENCHMARKS:
        raise KeyError(f"Unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}.")
    module = importlib.import_module(BENCHMARKS[name])
    start = time.perf_counter()
    try:
        outcome = module.run(quick)
    except BenchmarkSkipped as skipped:
        log.warning("Benchmark %s skipped: %s", name, skipped)
        return None
    return write_result(out_dir, name, outcome, quick, time.perf_counter() - start)
