"""Chat templates and label masks: turns of the sample schema become token ids with audio placeholders.

The whole conversation is rendered once with the LLM's own chat template; each assistant answer is found in the
rendering, in order, and mapped to tokens through the fast tokenizer's character offsets
(`lit_sllm.data.chat_spans`). Labels cover the answer's text and the end-of-turn token the template writes after
it, never the role header, so any template that renders the answers verbatim works, including templates whose
renderings do not grow by appending (reasoning dropped from earlier turns, the last turn rendered differently, a
generation prompt that is not a prefix of the rendered turn).

- A template that rewrites *earlier* turns (Qwen3 drops reasoning from turns before the last user message) trains
  those turns as it renders them as history; `train_on: last` trains only the final answer, in the form the model
  produces it.
- "Thinking" templates are trained on what they render: Qwen3 writes an empty `<think>\\n\\n</think>\\n\\n` before
  the last answer, and that block is part of the (untrained) header, so the model learns to answer without
  reasoning. Template options such as `enable_thinking: false` pass through `llm.chat_template_kwargs`.
- A template that writes nothing after the final answer gets the end-of-turn token it writes after earlier answers
  (GLM: `<|user|>`), or the tokenizer's EOS where it writes none at all (plain-text `User:`/`Assistant:` formats,
  whose earlier answers then carry no end token), so the model still learns to stop.
- An answer the template rewrites (e.g. Qwen3 splitting `<think>...</think>` out of an answer's text) cannot be
  located: that conversation raises `LabelError`; templates that rewrite every answer are refused at start.
- A prompt for generation is the same rendering cut where the scored answer begins, so training and evaluation
  read the same header (Qwen3's empty think block included).

An audio part becomes one placeholder token in the message text (a text part for templates that take a list of
parts); the model widens it to the clip's frames, or to the frames of seconds `start`..`end` of the clip when the
part names them (`{"audio": "flac", "start": 0.4, "end": 1.2}`: frame-level interleaving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.chat_spans import (
    MARKER,
    NOTHING,
    TEXT,
    AnswerSpan,
    LabelError,
    common_prefix_length,
    last_run_start,
    locate_answers,
    token_labels,
)
from lit_sllm.data.chat_template import FALLBACK_CHAT_TEMPLATE, check_template_kwargs

DEFAULT_AUDIO_TOKEN = "<|audio|>"

# The answer stood in for when a prompt is built for a conversation that has none yet; it is cut off again.
_ANSWER_STAND_IN = {"role": "assistant", "parts": [{"text": "ANSWER"}]}
# Follows the last answer when asking the template what it writes after an answer it does not end.
_NEXT_QUESTION = "NEXT"
# Checked on every new formatter: two exchanges, an audio part, so a template that cannot work fails at start.
_PROBE_TURNS = [
    {"role": "user", "parts": [{"audio": "probe"}, {"text": "What is said in the clip?"}]},
    {"role": "assistant", "parts": [{"text": "Something was said."}]},
    {"role": "user", "parts": [{"text": "Say it once more."}]},
    {"role": "assistant", "parts": [{"text": "It was said again."}]},
]


def ensure_audio_token(tokenizer: PreTrainedTokenizerBase, audio_token: str = DEFAULT_AUDIO_TOKEN) -> int:
    """Registers `audio_token` as a special token (so it never splits) and returns its id.

    The LLM's embedding table is not resized: placeholder positions are overwritten with audio frames before the
    LLM sees them, so the id never reaches an embedding lookup.
    """
    if audio_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([audio_token], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(audio_token)


def end_markers(tokenizer: PreTrainedTokenizerBase, exclude: Sequence[str] = ()) -> list[str]:
    """The tokens that can end a turn: the tokenizer's special and added tokens, longest first."""
    tokens = set(tokenizer.all_special_tokens) | {token.content for token in tokenizer.added_tokens_decoder.values()}
    return sorted((t for t in tokens - set(exclude) if t.strip()), key=lambda t: (-len(t), t))


@dataclass
class EncodedDialog:
    """Token ids of one conversation; `audio_refs` name the audio parts in placeholder order and `audio_times` give
    each part's (start, end) seconds of its clip ((0, inf) for a part without `start`/`end`: the whole clip)."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    audio_refs: list[str] = field(default_factory=list)
    audio_times: list[tuple[float, float]] = field(default_factory=list)


class ChatFormatter:
    """Turns schema `turns` into token ids and labels with the tokenizer's chat template.

    Args:
        tokenizer: the LLM's fast tokenizer (offsets are needed); the audio token is registered on it.
        audio_token: placeholder string for one audio clip.
        part_separator: joins the parts of one turn (text and audio) into the message content.
        chat_template_kwargs: extra variables for the template (e.g. `{"enable_thinking": False}`); each must be
            read by the template.
        key: config key of the LLM section, named in errors.

    Raises:
        ConfigError: at construction, when the tokenizer is slow, a kwarg is unread, or the template cannot be
            trained on (the message says why), found by encoding a two-exchange probe with an audio part.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        audio_token: str = DEFAULT_AUDIO_TOKEN,
        part_separator: str = " ",
        chat_template_kwargs: dict[str, Any] | None = None,
        key: str = "model.init_args.llm",
    ) -> None:
        if not tokenizer.is_fast:
            raise ConfigError(
                f"{key}.tokenizer: {type(tokenizer).__name__} is a slow tokenizer; assistant labels need a fast "
                "one's character offsets. Point it at a folder with a tokenizer.json."
            )
        self.tokenizer = tokenizer
        self.audio_token = audio_token
        self.audio_token_id = ensure_audio_token(tokenizer, audio_token)
        self.part_separator = part_separator
        self.template = tokenizer.get_chat_template() if tokenizer.chat_template else FALLBACK_CHAT_TEMPLATE
        self.template_kwargs = dict(chat_template_kwargs or {})
        check_template_kwargs(self.template, self.template_kwargs, f"{key}.chat_template_kwargs")
        self.markers = end_markers(tokenizer, exclude=[audio_token])
        self.parts_content = self._content_form(key)

    def _content_form(self, key: str) -> bool:
        """False when the template takes message content as a string, True when only as a list of text parts."""
        reasons = []
        for parts in (False, True):
            self.parts_content = parts
            try:
                self.encode(_PROBE_TURNS)
                return parts
            except Exception as err:  # a template may raise anything; the reason is what a user needs
                reasons.append(str(err) if isinstance(err, LabelError) else f"it raised {type(err).__name__}: {err}")
        raise ConfigError(
            f"{key}.chat_template: the chat template cannot be trained on: {reasons[0]}. Set {key}.chat_template "
            "(a .jinja file or the template text) to one that renders each answer verbatim, followed by an "
            "end-of-turn token."
        )

    def _messages(self, turns: Sequence[dict[str, Any]]) -> tuple[list[dict], list[tuple[str, str]], list[dict]]:
        """(chat messages, (role, text) of each, audio parts in order) of schema turns."""
        messages, texts, audio_parts = [], [], []
        for turn in turns:
            pieces = []
            for part in turn["parts"]:
                if "audio" in part:
                    audio_parts.append(part)
                    pieces.append(self.audio_token)
                else:
                    pieces.append(part["text"])
            text = self.part_separator.join(pieces)
            messages.append(self._chat_message(turn["role"], text))
            texts.append((turn["role"], text))
        return messages, texts, audio_parts

    def _chat_message(self, role: str, text: str) -> dict[str, Any]:
        return {"role": role, "content": [{"type": "text", "text": text}] if self.parts_content else text}

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The template's rendering of chat `messages` (with the run's template kwargs)."""
        return self.tokenizer.apply_chat_template(
            list(messages),
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **self.template_kwargs,
        )

    def _prompt_or_empty(self, messages: Sequence[dict]) -> str:
        try:
            return self.render(messages, add_generation_prompt=True) if messages else ""
        except Exception:  # a template may refuse a history (e.g. one that must start with a system turn)
            return ""

    def _locate(self, messages: list[dict], texts: list[tuple[str, str]]) -> tuple[str, list[AnswerSpan]]:
        """(rendering, one span per assistant answer); a final answer the template leaves open gets its closing
        token appended to the rendering."""
        rendering = self.render(messages)
        prompts = {i: self._prompt_or_empty(messages[:i]) for i, (role, _) in enumerate(texts) if role == "assistant"}
        spans = locate_answers(rendering, texts, self._bounds(prompts, rendering, len(texts)), self.markers)
        if not spans or texts[-1][0] != "assistant":
            return rendering, spans
        last = spans[-1]
        if last.followed_by == TEXT:
            raise LabelError(
                f"the template writes {rendering[last.text_end : last.text_end + 40]!r} after the final answer "
                "instead of ending the turn (it embeds the chat in an instruction, as classifier templates do)"
            )
        if last.followed_by == NOTHING:
            closing = self._closing_token(messages, texts, prompts)
            rendering = rendering[: last.text_end] + closing
            spans[-1] = AnswerSpan(last.start, last.text_end, len(rendering), MARKER)
        return rendering, spans

    @staticmethod
    def _bounds(prompts: dict[int, str], rendering: str, count: int) -> list[int]:
        """Per message, where its text can start at the earliest: an answer's generation prompt shares the
        rendering up to that answer."""
        return [common_prefix_length(prompts[i], rendering) if i in prompts else 0 for i in range(count)]

    def _closing_token(self, messages: list[dict], texts: list[tuple[str, str]], prompts: dict[int, str]) -> str:
        """What ends a final answer the template leaves open: the end-of-turn token it writes after an answer when
        the conversation goes on (GLM: `<|user|>`), or the EOS token where it writes none (plain-text formats)."""
        rendering = self.render([*messages, self._chat_message("user", _NEXT_QUESTION)])
        bounds = [*self._bounds(prompts, rendering, len(texts)), 0]
        last = locate_answers(rendering, [*texts, ("user", _NEXT_QUESTION)], bounds, self.markers)[-1]
        if last.followed_by == MARKER:
            return rendering[last.text_end : last.end]
        if self.tokenizer.eos_token is None:
            raise LabelError(
                "the template writes no end-of-turn token after answers and the tokenizer has no EOS token, so the "
                "model could not learn to stop"
            )
        return self.tokenizer.eos_token

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain `text`, no special tokens added."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode(
        self, turns: Sequence[dict[str, Any]], train_on: str = "assistant", add_generation_prompt: bool = False
    ) -> EncodedDialog:
        """Encodes a conversation: the whole rendering's tokens, labels on the trained answers.

        Args:
            turns: schema turns.
            train_on: "assistant" puts labels on every assistant turn, "last" only on the final one.
            add_generation_prompt: end with the header of a next answer, as a prompt for generation (the rendering
                of the conversation with one more answer, cut where that answer begins).

        Raises:
            LabelError: an answer is not in the rendering, is followed by other text than an end-of-turn token, or
                the template renders a different number of audio placeholders than there are audio parts.
        """
        if add_generation_prompt:
            return self._before_last_answer(self._encode([*turns, _ANSWER_STAND_IN], train_on))
        return self._encode(turns, train_on)

    def encode_prompt(self, turns: Sequence[dict[str, Any]]) -> tuple[EncodedDialog, str]:
        """The prompt for generating the final assistant answer: the training rendering cut where that answer begins.

        A conversation that ends with a user turn is rendered with a stand-in answer, cut off the same way, so the
        prompt ends with the header exactly as training renders it.

        Returns:
            The prompt (no labels) and the final assistant turn's text ("" when there is none), the reference.
        """
        if turns and turns[-1]["role"] == "assistant":
            reference = self.part_separator.join(p["text"] for p in turns[-1]["parts"] if "text" in p)
            return self._before_last_answer(self._encode(turns, train_on="last")), reference
        return self._before_last_answer(self._encode([*turns, _ANSWER_STAND_IN], train_on="last")), ""

    def _encode(self, turns: Sequence[dict[str, Any]], train_on: str) -> EncodedDialog:
        if not turns:
            return EncodedDialog()
        messages, texts, audio_parts = self._messages(turns)
        rendering, spans = self._locate(messages, texts)
        if train_on == "last":
            spans = spans[-1:] if turns[-1]["role"] == "assistant" else []
        tokens = self.tokenizer(rendering, add_special_tokens=False, return_offsets_mapping=True)
        input_ids = tokens["input_ids"]
        labels = token_labels(input_ids, tokens["offset_mapping"], [(span.start, span.end) for span in spans])
        placeholders = input_ids.count(self.audio_token_id)
        if placeholders != len(audio_parts):
            raise LabelError(
                f"the template renders {placeholders} audio placeholders for {len(audio_parts)} audio parts"
            )
        refs = [part["audio"] for part in audio_parts]
        times = [(float(part.get("start", 0.0)), float(part.get("end", float("inf")))) for part in audio_parts]
        return EncodedDialog(input_ids, labels, refs, times)

    def _before_last_answer(self, dialog: EncodedDialog) -> EncodedDialog:
        """`dialog` cut where its last trained answer begins; the answers before keep their labels."""
        cut = last_run_start(dialog.labels)
        cut = len(dialog.input_ids) if cut is None else cut
        input_ids = dialog.input_ids[:cut]
        kept = input_ids.count(self.audio_token_id)
        return EncodedDialog(input_ids, dialog.labels[:cut], dialog.audio_refs[:kept], dialog.audio_times[:kept])
