"""The data layer: shards -> streaming pipeline -> bucketing and mixing -> typed batches.

The data module is imported on first use, so that light modules (`lit_sllm.data.batch`, `.schema`) stay cheap to
import and free of import cycles.
"""

from typing import Any

from lit_sllm.data.batch import IGNORE_INDEX, Batch

_LAZY = {"SpeechTextDataModule", "SourceSpec", "EvalSetSpec"}

__all__ = ["IGNORE_INDEX", "Batch", "EvalSetSpec", "SourceSpec", "SpeechTextDataModule"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lit_sllm.data import datamodule  # lazy: see the module docstring

        return getattr(datamodule, name)
    raise AttributeError(f"module 'lit_sllm.data' has no attribute {name!r}")
