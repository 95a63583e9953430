"""Chat templates and label masks: turns of the sample schema become token ids with audio placeholders.

Each turn is rendered through the tokenizer's own chat template, one prefix at a time, so that the tokens of an
assistant turn are known exactly and only they carry labels. An audio part becomes one placeholder token; the
model widens it to the clip's frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from lit_sllm.data.batch import IGNORE_INDEX

DEFAULT_AUDIO_TOKEN = "<|audio|>"

# Used only when a tokenizer ships no chat template of its own (e.g. a base LM). The end tag is part of the
# assistant's trained tokens so the model learns to stop.
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def ensure_audio_token(tokenizer: PreTrainedTokenizerBase, audio_token: str = DEFAULT_AUDIO_TOKEN) -> int:
    """Registers `audio_token` as a special token (so it never splits) and returns its id.

    The LLM's embedding table is not resized: placeholder positions are overwritten with audio frames before the
    LLM sees them, so the id never reaches an embedding lookup.
    """
    if audio_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([audio_token], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(audio_token)


@dataclass
class EncodedDialog:
    """Token ids of one conversation; `audio_refs` name the audio parts in placeholder order."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    audio_refs: list[str] = field(default_factory=list)

    def extend(self, ids: list[int], trained: bool) -> None:
        self.input_ids.extend(ids)
        self.labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))


class ChatFormatter:
    """Turns schema `turns` into token ids and labels with the tokenizer's chat template.

    Args:
        tokenizer: the LLM's tokenizer; the audio token is registered on it.
        audio_token: placeholder string for one audio clip.
        part_separator: joins the parts of one turn (text and audio) into the message content.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        part_separator: str = " ",
    ) -> None:
        self.tokenizer = tokenizer
        self.audio_token = audio_token
        self.audio_token_id = ensure_audio_token(tokenizer, audio_token)
        self.part_separator = part_separator
        self.template = tokenizer.chat_template or FALLBACK_CHAT_TEMPLATE

    def message(self, turn: dict[str, Any], audio_refs: list[str]) -> dict[str, str]:
        """One schema turn as a chat message; its audio part names are appended to `audio_refs`."""
        pieces = []
        for part in turn["parts"]:
            if "audio" in part:
                audio_refs.append(part["audio"])
                pieces.append(self.audio_token)
            else:
                pieces.append(part["text"])
        return {"role": turn["role"], "content": self.part_separator.join(pieces)}

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(
            list(messages), chat_template=self.template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode(
        self, turns: Sequence[dict[str, Any]], train_on: str = "assistant", add_generation_prompt: bool = False
    ) -> EncodedDialog:
        """Encodes a conversation, one template prefix at a time.

        Args:
            turns: schema turns.
            train_on: "assistant" puts labels on every assistant turn, "last" only on the final one.
            add_generation_prompt: end with the assistant header, as a prompt for generation.
        """
        encoded = EncodedDialog()
        messages: list[dict[str, str]] = []
        rendered = ""
        for index, turn in enumerate(turns):
            message = self.message(turn, encoded.audio_refs)
            trained = turn["role"] == "assistant" and (train_on == "assistant" or index == len(turns) - 1)
            if turn["role"] == "assistant":
                header = self._suffix(rendered, self.render(messages, add_generation_prompt=True))
                encoded.extend(self.tokenize(header), trained=False)
                rendered += header
            messages.append(message)
            body = self._suffix(rendered, self.render(messages))
            encoded.extend(self.tokenize(body), trained=trained)
            rendered += body
        if add_generation_prompt:
            encoded.extend(self.tokenize(self._suffix(rendered, self.render(messages, True))), trained=False)
        return encoded

    def encode_prompt(self, turns: Sequence[dict[str, Any]]) -> tuple[EncodedDialog, str]:
        """Encodes every turn before the final assistant turn, plus the generation prompt.

        Returns:
            The prompt (no labels) and the final assistant turn's text, the reference to score against.
        """
        if not turns or turns[-1]["role"] != "assistant":
            return self.encode(turns, add_generation_prompt=True), ""
        reference = self.part_separator.join(p["text"] for p in turns[-1]["parts"] if "text" in p)
        prompt = self.encode(turns[:-1], add_generation_prompt=True)
        prompt.labels = [IGNORE_INDEX] * len(prompt.input_ids)
        return prompt, reference

    def _suffix(self, prefix: str, full: str) -> str:
        if not full.startswith(prefix):
            raise ValueError(
                "The tokenizer's chat template renders a conversation differently from its own prefix, so assistant "
                "tokens cannot be located. Set `chat_template` on the tokenizer to one whose renderings grow by "
                f"appending.\n  prefix: {prefix[-80:]!r}\n  full:   {full[-120:]!r}"
            )
        return full[len(prefix) :]
