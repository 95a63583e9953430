"""Word error rate as a local `evaluate` module: `evaluate.load("<path>/wer")` works offline, no hub lookup.

The module scores the strings it is given; normalisation is the caller's choice (`lit_sllm.metrics.scoring`
applies `lit_sllm.metrics.normalize.normalize_text` first by default).
"""

from __future__ import annotations

import evaluate
import jiwer

from lit_sllm.metrics.modules.text_pairs import text_pair_info

_DESCRIPTION = """Corpus-level word error rate from jiwer: (substitutions + deletions + insertions) summed over all
pairs, divided by the total number of reference words. Words are split on whitespace. A fraction (0.05 = 5%)."""

_INPUTS = """
Args:
    predictions: hypotheses, one string per utterance.
    references: reference transcripts, one string per utterance.
Returns:
    {"wer": float}
"""

_CITATION = """@inproceedings{morris2004wer,
  title={From WER and RIL to MER and WIL: improved evaluation measures for connected speech recognition},
  author={Morris, Andrew Cameron and Maier, Viktoria and Green, Phil},
  booktitle={Interspeech},
  year={2004}
}"""


class WordErrorRate(evaluate.Metric):
    """Corpus WER via `jiwer.wer`."""

    def _info(self) -> evaluate.MetricInfo:
        return text_pair_info(_DESCRIPTION, _CITATION, _INPUTS, "https://github.com/jitsi/jiwer")

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return {"wer": float(jiwer.wer(list(references), list(predictions)))}
