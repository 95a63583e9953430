"""The LLM tokenizer and chat formatter the data layer encodes with, loaded from the settings linked from the model."""

from __future__ import annotations

from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lit_sllm.config_errors import load_pretrained
from lit_sllm.data.chat_template import set_chat_template
from lit_sllm.data.prompts import ChatFormatter

LLM_KEY = "model.init_args.llm"


def load_data_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The LLM tokenizer at `path`, with an error naming `data.tokenizer` when it cannot be loaded."""
    return load_pretrained(
        f"data.tokenizer (linked from {LLM_KEY})",
        "tokenizer",
        path,
        lambda: AutoTokenizer.from_pretrained(path),
    )


def load_formatter(
    path: str,
    audio_token: str,
    chat_template: str | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> ChatFormatter:
    """The chat formatter on the tokenizer at `path`, with the run's template (a file or the text) and its kwargs."""
    tokenizer = set_chat_template(load_data_tokenizer(path), chat_template, f"{LLM_KEY}.chat_template")
    return ChatFormatter(tokenizer, audio_token, chat_template_kwargs=chat_template_kwargs, key=LLM_KEY)
