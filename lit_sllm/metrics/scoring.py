"""The metric API the suite calls: load the shipped `evaluate` modules by path and score generated text.

`evaluate.load("wer")` fetches from the hub and fails offline, so each metric is a module file shipped in
`lit_sllm/metrics/modules/<name>/<name>.py` and loaded from there. Rank 0 should score the gathered predictions
of a whole test set once: WER and BLEU are corpus-level, so averaging per-batch scores would change them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_sllm.metrics.normalize import normalize_text

if TYPE_CHECKING:
    import evaluate

MODULES_DIR = Path(__file__).parent / "modules"


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is scored.

    Attributes:
        folder: folder under `lit_sllm/metrics/modules/` holding `<folder>.py`.
        normalize: apply `normalize_text` to both sides by default (WER only: BLEU and ROUGE are reported on raw
            text, as papers do).
    """

    folder: str
    normalize: bool


METRICS: dict[str, MetricSpec] = {
    "wer": MetricSpec(folder="wer", normalize=True),
    "bleu": MetricSpec(folder="bleu", normalize=False),
    "rouge": MetricSpec(folder="rouge", normalize=False),
}


def _spec(name: str) -> MetricSpec:
    if name not in METRICS:
        raise KeyError(f"Unknown metric {name!r}; choose one of {sorted(METRICS)}.")
    return METRICS[name]


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """The shipped `evaluate` module for `name` ("wer", "bleu" or "rouge"), loaded by path once per process.

    Kept in memory, so scoring writes no Arrow cache files; only evaluate's dynamic-module copy of the script
    lands under `HF_MODULES_CACHE`.
    """
    import evaluate  # costs seconds, so it is imported with the first metric, not with the package

    return evaluate.load(str(MODULES_DIR / _spec(name).folder), keep_in_memory=True)


def score(
    name: str,
    predictions: Sequence[str],
    references: Sequence[str],
    normalize: bool | None = None,
    **options: Any,
) -> dict[str, float]:
    """Scores predictions against references with one metric.

    Args:
        name: "wer", "bleu" or "rouge".
        predictions: generated texts, one per sample.
        references: reference texts, aligned with `predictions`.
        normalize: apply `normalize_text` to both sides first; None takes the metric's default (True for WER only).
        **options: passed to the module's compute, e.g. `tokenize="zh"` for BLEU or `use_stemmer=True` for ROUGE.

    Returns:
        {"wer": ...}, {"bleu": ...} or {"rouge1", "rouge2", "rougeL", "rougeLsum"}: floats, ready to log.

    Raises:
        ValueError: when the two lists differ in length or are empty.
    """
    spec = _spec(name)
    _check_aligned(predictions, references)
    if spec.normalize if normalize is None else normalize:
        predictions = [normalize_text(text) for text in predictions]
        references = [normalize_text(text) for text in references]
    result = load_metric(name).compute(predictions=list(predictions), references=list(references), **options)
    return {key: float(value) for key, value in result.items()}


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of pairs whose texts are equal after `normalize_text` (0-1), e.g. for short-answer tasks."""
    _check_aligned(predictions, references)
    hits = sum(normalize_text(pred) == normalize_text(ref) for pred, ref in zip(predictions, references))
    return hits / len(predictions)


def answer_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """What a test set of generated answers is scored by: corpus WER and BLEU, ROUGE-L and exact match."""
    metrics = score("wer", predictions, references) | score("bleu", predictions, references)
    metrics["rougeL"] = score("rouge", predictions, references)["rougeL"]
    metrics["exact_match"] = exact_match(predictions, references)
    return metrics


def _check_aligned(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references; pass one reference per "
            "prediction, in the same order."
        )
    if not predictions:
        raise ValueError("Nothing to score: predictions and references are empty; skip metrics for an empty set.")
