"""What the shipped `evaluate` modules share: each scores (prediction, reference) string pairs.

The module files import this by its package path (`evaluate.load` copies a module file alone into its cache, so a
relative import would not resolve there; the installed package does).
"""

from __future__ import annotations

import datasets
import evaluate


def text_pair_info(description: str, citation: str, inputs: str, codebase_url: str) -> evaluate.MetricInfo:
    """The `MetricInfo` of a metric over one prediction string and one reference string per segment."""
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs,
        features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        codebase_urls=[codebase_url],
    )
