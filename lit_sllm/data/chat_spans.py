"""Where the assistant's answers lie in a rendered conversation, and which tokens that makes trainable.

Pure functions on strings and token offsets, kept apart from any template so the label rule can be read and tested
on its own: an answer is its text, found in order in the rendering, plus the end-of-turn token the template puts
after it (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, `</s>`, ...); the role header before it is never trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lit_sllm.data.batch import IGNORE_INDEX


class LabelError(ValueError):
    """A conversation whose assistant answers cannot be located in its rendering; the message says why."""


# What a template writes right after an answer's text (whitespace aside).
MARKER, TEXT, NOTHING = "marker", "text", "nothing"


@dataclass(frozen=True)
class AnswerSpan:
    """Character positions of one assistant answer in a rendering.

    Attributes:
        start: first character of the answer's text.
        text_end: one past its last character.
        end: one past the end-of-turn token after it; `text_end` when there is none.
        followed_by: MARKER (an end-of-turn token), TEXT (the template goes on with plain text, as plain-text formats
            such as `### User:` do) or NOTHING (the rendering ends).
    """

    start: int
    text_end: int
    end: int
    followed_by: str


def common_prefix_length(a: str, b: str) -> int:
    """Number of leading characters `a` and `b` share."""
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


def _shared_tail(rendering: str, at: int, text: str) -> int:
    """Largest k such that the k characters before `at` are the first k of `text`."""
    return next((k for k in range(min(at, len(text)), 0, -1) if rendering[at - k : at] == text[:k]), 0)


def follow_answer(rendering: str, text_end: int, markers: Sequence[str]) -> tuple[int, str]:
    """(end, what follows) for an answer ending at `text_end`: its end-of-turn token is the first of `markers` (the
    tokenizer's special and added tokens, longest first) after whitespace only."""
    at = text_end
    while at < len(rendering) and rendering[at].isspace():
        at += 1
    if at == len(rendering):
        return text_end, NOTHING
    for marker in markers:  # longest first, so `<|end|>` never shadows `<|endoftext|>`
        if rendering.startswith(marker, at):
            return at + len(marker), MARKER
    return text_end, TEXT


def locate_answers(
    rendering: str, messages: Sequence[tuple[str, str]], lower_bounds: Sequence[int], markers: Sequence[str]
) -> list[AnswerSpan]:
    """Finds every assistant answer of `messages` in `rendering`, in order.

    Each message's text is searched from where the previous one ended, so an answer that repeats words of the
    question is found after the question, not inside it. A user or system text the template rewrote is not found
    and moves nothing; an assistant text must be found.

    Args:
        rendering: the whole conversation as the chat template renders it.
        messages: (role, text) of every message, in order.
        lower_bounds: per message, where its text can start at the earliest (0 where unknown), e.g. how far the
            rendering agrees with the answer's generation prompt. The bound gives way by as many characters as the
            text shares with what precedes it (a template that writes its header only in the generation prompt).
        markers: candidate end-of-turn tokens, longest first.

    Returns:
        One span per assistant message, in order.

    Raises:
        LabelError: an answer's text is not in the rendering.
    """
    spans, cursor = [], 0
    for index, (role, text) in enumerate(messages):
        text, bound = text.strip(), lower_bounds[index]
        start = rendering.find(text, max(cursor, bound - _shared_tail(rendering, bound, text)))
        if role != "assistant":
            cursor = start + len(text) if start >= 0 and text else cursor
            continue
        if start < 0:
            raise LabelError(
                f"assistant answer {len(spans) + 1} ({text[:40]!r}) does not appear verbatim in the rendering "
                "(the template rewrites or drops answers)"
            )
        end, followed_by = follow_answer(rendering, start + len(text), markers)
        spans.append(AnswerSpan(start, start + len(text), end, followed_by))
        cursor = end
    return spans


def token_labels(
    input_ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[int]:
    """Labels of a tokenized rendering: a token's id where its characters overlap a span, else `IGNORE_INDEX`.

    A token that straddles a span's start (e.g. `▁Hello`, whose space belongs to the header) is trained: the model
    has to emit it to begin the answer.

    Args:
        input_ids: (L,) token ids of the rendering.
        offsets: (L,) character (start, end) of each token in the rendering.
        spans: character (start, end) ranges to train, in order.
    """
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, ((first, last), token) in enumerate(zip(offsets, input_ids)):
        for start, end in spans:
            if (first < end and last > start) or (first == last and start <= first < end):
                labels[position] = token
                break
    return labels


def last_run_start(labels: Sequence[int]) -> int | None:
    """Index where the last run of trained labels begins (None when nothing is trained).

    Each answer is one run (its text and end-of-turn token), so this is where the final trained answer begins.
    """
    position = len(labels) - 1
    while position >= 0 and labels[position] == IGNORE_INDEX:
        position -= 1
    if position < 0:
        return None
    while position > 0 and labels[position - 1] != IGNORE_INDEX:
        position -= 1
    return position
