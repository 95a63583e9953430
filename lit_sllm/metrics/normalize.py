"""The text normaliser applied before WER and exact match, so scores do not hinge on casing or punctuation.

Rules, in order (`normalize_text`):

1. Lower-case (`str.lower`).
2. Typographic apostrophes (’ ‘ ʼ) become `'`.
3. Numbers: thousands separators between digits are dropped (`1,000` -> `1000`) and a decimal point between
   digits is read out (`3.5` -> `3 point 5`).
4. Every character that is neither a letter, a digit, whitespace nor `'` becomes a space (`_` included), so
   `forty-two` -> `forty two` and `e.g.` -> `e g`.
5. An apostrophe is kept only inside a word (`don't`, `o'clock`); leading or trailing ones become spaces
   (`'hello'` -> `hello`, `students'` -> `students`).
6. A standalone whole number from 0 to 999 written in ASCII digits, without a leading zero, is spelled out in
   words, without "and" or hyphens (`42` -> `forty two`, `105` -> `one hundred five`). Larger numbers,
   zero-padded numbers (`007`) and digits glued to letters (`1st`, `mp3`) stay as they are.
7. Runs of whitespace collapse to one space; leading and trailing whitespace is removed.

Digits become words (not the reverse) because ASR references such as LibriSpeech spell numbers out, while an
LLM tends to answer with digits.
"""

from __future__ import annotations

import re

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
MAX_SPELLED = 999

_APOSTROPHES = re.compile(r"[\u2019\u2018\u02bc]")
_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_PUNCTUATION = re.compile(r"[^\w\s']|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_NUMBER = re.compile(r"\b[0-9]+\b")


def number_to_words(number: int) -> str:
    """Spells out a whole number from 0 to 999 (`342` -> `three hundred forty two`).

    Raises:
        ValueError: when `number` is outside 0..999.
    """
    if not 0 <= number <= MAX_SPELLED:
        raise ValueError(f"number_to_words spells 0..{MAX_SPELLED}; got {number}.")
    hundreds, rest = divmod(number, 100)
    words = [f"{ONES[hundreds]} hundred"] if hundreds else []
    if rest or not hundreds:
        tens, ones = divmod(rest, 10)
        words.append(ONES[rest] if rest < 20 else " ".join([TENS[tens]] + ([ONES[ones]] if ones else [])))
    return " ".join(words)


def _spell_number(match: re.Match[str]) -> str:
    digits = match.group(0)
    if (len(digits) > 1 and digits.startswith("0")) or int(digits) > MAX_SPELLED:
        return digits
    return number_to_words(int(digits))


def normalize_text(text: str) -> str:
    """Normalises one transcript or answer by the rules in this module's docstring.

    Example: `"It's 42°C -- isn't it?"` -> `"it's forty two c isn't it"`.
    """
    text = _APOSTROPHES.sub("'", text.lower())
    text = _DECIMAL_POINT.sub(" point ", _THOUSANDS_SEPARATOR.sub("", text))
    text = _LOOSE_APOSTROPHE.sub(" ", _PUNCTUATION.sub(" ", text))
    text = _NUMBER.sub(_spell_number, text)
    return " ".join(text.split())
