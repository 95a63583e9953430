"""Metrics comparable with papers: WER (normalised), sacrebleu BLEU and rouge-score ROUGE as local `evaluate`
modules, plus the documented text normaliser.

`import evaluate` costs seconds, so the scoring API is imported on first use only.
"""

from typing import Any

from lit_sllm.metrics.normalize import normalize_text

_LAZY = ("METRICS", "exact_match", "load_metric", "score")
__all__ = [*_LAZY, "normalize_text"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lit_sllm.metrics import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'lit_sllm.metrics' has no attribute '{name}'")
