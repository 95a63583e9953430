"""`lit-sllm data inspect`: what a shard set holds, read through the very pipeline training uses.

Reports usable samples, hours of audio, samples per task, a duration histogram and skipped samples by reason;
corrupt members are reported, never fatal (the command exits 0).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lit_sllm.data.pipeline import DataTally, ReadConfig, Slot, finite_samples, resolve_shards

HISTOGRAM_EDGES = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0)  # seconds


def _bin_labels(edges: Sequence[float]) -> list[str]:
    bounds = [0.0, *edges]
    return [f"{lo:g}-{hi:g}s" for lo, hi in zip(bounds, edges)] + [f">={edges[-1]:g}s"]


def inspect_shards(spec: str | Sequence[str], sample_rate: int = 16000) -> dict[str, Any]:
    """Reads every sample of a shard set once, decoding audio exactly as training does.

    Returns:
        {"shards", "samples" (usable), "hours", "tasks" {task: count}, "durations" {bin: count} (speech samples
        only, bins in seconds), "skipped" {reason: count}, "clipped"}.
    """
    shards = resolve_shards(spec)
    tally = DataTally(warn_limit=0)
    tasks: Counter = Counter()
    labels = _bin_labels(HISTOGRAM_EDGES)
    histogram = dict.fromkeys(labels, 0)
    samples, seconds = 0, 0.0
    for sample in finite_samples(shards, ReadConfig(sample_rate=sample_rate), Slot(), tally):
        samples += 1
        tasks[sample.task] += 1
        if sample.duration is not None:
            seconds += sample.duration
            histogram[labels[bisect.bisect_right(HISTOGRAM_EDGES, sample.duration)]] += 1
    return {
        "shards": len(shards),
        "samples": samples,
        "hours": seconds / 3600,
        "tasks": dict(sorted(tasks.items())),
        "durations": histogram,
        "skipped": dict(sorted(tally.total.items())),
        "clipped": tally.clipped,
        "retries": tally.retries,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as an aligned text table."""
    lines = [f"{'shards':<24}{report['shards']:>10}", f"{'samples':<24}{report['samples']:>10}"]
    lines.append(f"{'hours':<24}{report['hours']:>10.3f}")
    if report.get("retries"):
        lines.append(f"{'remote re-reads':<24}{report['retries']:>10}")
    sections = (("task", report["tasks"]), ("duration", report["durations"]), ("skipped", report["skipped"]))
    for title, counts in sections:
        lines.append(f"{title}:" + ("" if counts else " none"))
        lines += [f"  {name:<22}{count:>10}" for name, count in counts.items()]
    return "\n".join(lines)
