"""ROUGE as a local `evaluate` module: `evaluate.load("<path>/rouge")` works offline, no hub lookup.

Each key is the mean over pairs of rouge-score's F-measure (0-1). The hub `rouge` module's default reports the
median of bootstrap resamples instead, which is random and only close to this mean; the mean is exact and
reproducible.
"""

from __future__ import annotations

import evaluate
from rouge_score import rouge_scorer

from lit_sllm.metrics.modules.text_pairs import text_pair_info

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_DESCRIPTION = """ROUGE-1/2 (unigram/bigram overlap), ROUGE-L (longest common subsequence) and ROUGE-Lsum (LCS
over newline-split sentences) from Google's rouge-score. Its tokenizer lower-cases and keeps only [a-z0-9] runs,
so text in other scripts scores 0; use BLEU with a fitting tokenizer there."""

_INPUTS = """
Args:
    predictions: generated texts, one string per sample (sentences separated by newlines for rougeLsum).
    references: one reference string per sample.
    use_stemmer: Porter-stem words before matching (default False, as the hub module).
Returns:
    {"rouge1": float, "rouge2": float, "rougeL": float, "rougeLsum": float}
"""

_CITATION = """@inproceedings{lin-2004-rouge,
  title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  year={2004},
  pages={74--81}
}"""


class Rouge(evaluate.Metric):
    """Mean ROUGE F-measures via rouge-score."""

    def _info(self) -> evaluate.MetricInfo:
        return text_pair_info(
            _DESCRIPTION, _CITATION, _INPUTS, "https://github.com/google-research/google-research/tree/master/rouge"
        )

    def _compute(self, predictions: list[str], references: list[str], use_stemmer: bool = False) -> dict[str, float]:
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
        pairs = [scorer.score(target=ref, prediction=pred) for pred, ref in zip(predictions, references)]
        return {name: sum(pair[name].fmeasure for pair in pairs) / len(pairs) for name in ROUGE_TYPES}
