"""Metrics comparable with papers: WER (normalised), sacrebleu BLEU and rouge-score ROUGE as local `evaluate`
modules, plus the documented text normaliser.

`import evaluate` costs seconds, so `scoring` imports it when the first metric is loaded, not at import time.
"""

from lit_sllm.metrics.normalize import normalize_text
from lit_sllm.metrics.scoring import METRICS, answer_metrics, exact_match, load_metric, score

__all__ = ["METRICS", "answer_metrics", "exact_match", "load_metric", "normalize_text", "score"]
