"""Corpus BLEU as a local `evaluate` module: `evaluate.load("<path>/bleu")` works offline, no hub lookup.

Scores with sacrebleu's defaults (one reference per hypothesis), so numbers match papers that report sacrebleu:
signature `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp` unless `tokenize` or `lowercase` are passed.
"""

from __future__ import annotations

import evaluate
import sacrebleu

from lit_sllm.metrics.modules.text_pairs import text_pair_info

_DESCRIPTION = """Corpus BLEU from sacrebleu (`sacrebleu.metrics.BLEU().corpus_score`), on a 0-100 scale. Text is
scored as given: sacrebleu tokenises it itself (default `13a`; pass `tokenize="zh"`, `"intl"`, `"char"`,
... for other scripts)."""

_INPUTS = """
Args:
    predictions: hypotheses, one string per segment.
    references: one reference string per segment.
    tokenize: sacrebleu tokenizer name (default "13a").
    lowercase: score case-insensitively (default False).
Returns:
    {"bleu": float}
"""

_CITATION = """@inproceedings{post-2018-call,
  title={A Call for Clarity in Reporting {BLEU} Scores},
  author={Post, Matt},
  booktitle={Proceedings of the Third Conference on Machine Translation: Research Papers},
  year={2018},
  pages={186--191}
}"""


class SacreBleu(evaluate.Metric):
    """Corpus BLEU via sacrebleu."""

    def _info(self) -> evaluate.MetricInfo:
        return text_pair_info(_DESCRIPTION, _CITATION, _INPUTS, "https://github.com/mjpost/sacrebleu")

    def _compute(
        self, predictions: list[str], references: list[str], tokenize: str = "13a", lowercase: bool = False
    ) -> dict[str, float]:
        bleu = sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
        return {"bleu": float(bleu.corpus_score(list(predictions), [list(references)]).score)}
