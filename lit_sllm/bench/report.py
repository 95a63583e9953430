"""The README's benchmark tables, made from the result files so that the two cannot disagree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_sllm.bench import BENCHMARKS


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """The result files in `out_dir`, in benchmark order."""
    paths = [Path(out_dir) / f"{name}.json" for name in BENCHMARKS]
    return [json.loads(path.read_text()) for path in paths if path.exists()]


def results_markdown(out_dir: str | Path) -> str:
    """A goals table over every result in `out_dir`, then each benchmark's own table with where it was measured.

    Raises:
        FileNotFoundError: when `out_dir` holds no result file.
    """
    results = load_results(out_dir)
    if not results:
        raise FileNotFoundError(f"No benchmark results in {out_dir}; run `lit-sllm bench NAME --out {out_dir}` first.")
    goals = [
        [f"`{r['benchmark']}`", r["goal"]["target"], r["goal"]["measured"], "yes" if r["goal"]["met"] else "**no**"]
        for r in results
    ]
    parts = [markdown_table(["benchmark", "goal", "measured", "met"], goals)]
    for result in results:
        machine, commit = result["machine"], result["git"]["commit"][:10]
        where = machine["gpu"] or f"{machine['cpu']}, {machine['cpu_cores']} cores"
        quick = ", --quick sizes" if result["quick"] else ""
        parts.append(f"`{result['benchmark']}` ({where}; commit {commit}; {result['wall_seconds']} s{quick}):")
        for shown in result["tables"]:
            parts += [f"*{shown['title']}*", markdown_table(shown["columns"], shown["rows"])]
    return "\n\n".join(parts) + "\n"
