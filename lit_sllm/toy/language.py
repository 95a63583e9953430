"""The toy language: an English lexicon, a sentence generator and a made-up second language, "tova".

Every sentence follows one template, `AGENT VERB THING [and THING] [PREP the PLACE]`, e.g. "the big cat finds two
blue balls in the garden": 5 to 11 plain lower-case English words that espeak-ng speaks clearly. Because the
template is fixed, task answers can be computed from the sentence alone, and `parse_sentence` recovers a sentence
from its transcript.

Tova is word for word: each English word has one tova word (names stay as they are, plural nouns share the
singular's word) and three order rules apply: modifiers and numbers follow their noun, prepositions follow their
noun phrase, and the verb goes last. Its words are coined from syllables, deterministically from a seed.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from lit_sllm.metrics.normalize import number_to_words

COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "pink", "purple", "grey", "gold", "silver")
SIZES = ("big", "small", "little", "tall", "old", "young")
ANIMALS = (
    "cat dog bird horse cow fox bear duck frog goat pig lion tiger owl wolf rabbit sheep monkey zebra mouse"
).split()
NAMES = "anna tom lisa ben sara max emma sam leo mia nina paul rosa jack lucy dan".split()
THINGS = {  # singular -> plural
    **{noun: noun + "s" for noun in "ball cup hat book shoe key apple car chair bag pen plate spoon coin".split()},
    **{noun: noun + "s" for noun in "stone flower kite drum bell lamp clock sock fork ring toy bottle".split()},
    **{noun: noun + "s" for noun in "candle shirt bucket basket boat".split()},
    **{noun: noun + "es" for noun in ("box", "brush", "glass")},
}
PLACES = (
    "garden kitchen park house school forest river shop street room yard field tent lake hall town market barn station "
    "cave"
).split()
PREPOSITIONS = ("in", "near", "behind")
VERBS = {  # verb -> what the agent does next (the continuation task)
    "sees": "wants",
    "wants": "buys",
    "buys": "carries",
    "carries": "drops",
    "drops": "finds",
    "finds": "takes",
    "takes": "hides",
    "hides": "forgets",
    "forgets": "finds",
    "paints": "washes",
    "washes": "dries",
    "dries": "folds",
    "folds": "packs",
    "packs": "sends",
    "sends": "forgets",
    "catches": "throws",
    "throws": "catches",
    "counts": "sorts",
    "sorts": "packs",
    "makes": "sells",
    "sells": "counts",
    "holds": "drops",
    "cleans": "dries",
    "keeps": "hides",
}
MAX_COUNT = 6  # sums of two counts stay within twelve: the count task stays learnable in minutes
LANGUAGE_NAME = "tova"
LANGUAGE_SEED = 0
CONSONANTS = "bdgklmnprstvz"
VOWELS = "aiou"
_SPLIT_BUCKETS = {0: "test", 1: "val"}  # crc32(text) % 20; every other bucket is "train"


def _lexicon() -> dict[str, tuple[str, str]]:
    """English word -> (category, lemma); categories drive tova's order rules."""
    entries = {"the": ("det", "the"), "a": ("number", "a"), "and": ("other", "and"), "then": ("other", "then")}
    entries |= {"unknown": ("other", "unknown"), "it": ("noun", "it"), "them": ("noun", "them")}
    entries |= {number_to_words(n): ("number", number_to_words(n)) for n in range(1, 2 * MAX_COUNT + 1)}
    entries |= {word: ("size", word) for word in SIZES} | {word: ("colour", word) for word in COLOURS}
    entries |= {word: ("noun", word) for word in (*ANIMALS, *NAMES, *PLACES, *THINGS)}
    entries |= {plural: ("noun", singular) for singular, plural in THINGS.items()}
    entries |= {word: ("prep", word) for word in PREPOSITIONS} | {word: ("verb", word) for word in VERBS}
    return entries


LEXICON = _lexicon()
COUNT_OF = {number_to_words(n): n for n in range(1, 2 * MAX_COUNT + 1)} | {"a": 1}


def english_words() -> list[str]:
    """Every English word a sentence or an answer can use, sorted."""
    return sorted(LEXICON)


@dataclass(frozen=True)
class Agent:
    """Who acts: a name ("anna") or an animal with an optional size ("the big cat")."""

    noun: str
    size: str | None = None

    @property
    def words(self) -> list[str]:
        return [self.noun] if self.noun in NAMES else ["the", *([self.size] if self.size else []), self.noun]

    @property
    def short_words(self) -> list[str]:
        """How the agent is named again later: without its size."""
        return [self.noun] if self.noun in NAMES else ["the", self.noun]


@dataclass(frozen=True)
class Thing:
    """A counted, coloured object: "a red ball" (count 1) or "three blue cups"."""

    count: int
    colour: str
    noun: str

    @property
    def words(self) -> list[str]:
        if self.count == 1:
            return ["a", self.colour, self.noun]
        return [number_to_words(self.count), self.colour, THINGS[self.noun]]


@dataclass(frozen=True)
class Sentence:
    """One toy sentence; `place` is (preposition, place noun) or None."""

    agent: Agent
    verb: str
    things: tuple[Thing, ...]
    place: tuple[str, str] | None = None

    @property
    def words(self) -> list[str]:
        words = self.agent.words + [self.verb]
        for index, thing in enumerate(self.things):
            words += (["and"] if index else []) + thing.words
        return words + ([self.place[0], "the", self.place[1]] if self.place else [])

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def split(self) -> str:
        """ "train", "val" or "test", fixed by the text alone, so every builder assigns a sentence the same split."""
        return _SPLIT_BUCKETS.get(zlib.crc32(self.text.encode()) % 20, "train")


def generate_sentence(rng: random.Random) -> Sentence:
    """One random sentence: one or two things, and a place only with one thing (so at most 11 words)."""
    if rng.random() < 0.4:
        agent = Agent(rng.choice(NAMES))
    else:
        agent = Agent(rng.choice(ANIMALS), rng.choice(SIZES) if rng.random() < 0.5 else None)
    verb = rng.choice(sorted(VERBS))
    nouns = rng.sample(sorted(THINGS), 2 if rng.random() < 0.35 else 1)
    things = tuple(
        Thing(1 if rng.random() < 0.3 else rng.randint(2, MAX_COUNT), rng.choice(COLOURS), noun) for noun in nouns
    )
    place = (rng.choice(PREPOSITIONS), rng.choice(PLACES)) if len(things) == 1 and rng.random() < 0.75 else None
    return Sentence(agent, verb, things, place)


def sentence_stream(seed: int, split: str = "train") -> Iterator[Sentence]:
    """Endless random sentences of one split ("train", "val" or "test"), the same on every run with one seed."""
    if split not in {"train", *_SPLIT_BUCKETS.values()}:
        raise ValueError(f"Unknown split '{split}'; use 'train', 'val' or 'test'.")
    rng = random.Random(f"toy-sentences/{seed}")
    while True:
        sentence = generate_sentence(rng)
        if sentence.split == split:
            yield sentence


def generate_sentences(count: int, seed: int, split: str = "train") -> list[Sentence]:
    """`count` distinct sentences of one split, in a fixed order for a given seed."""
    seen: dict[str, Sentence] = {}
    stream = sentence_stream(seed, split)
    while len(seen) < count:
        sentence = next(stream)
        seen.setdefault(sentence.text, sentence)
    return list(seen.values())


class _Reader:
    """Cursor over the words of a transcript, with errors that say where parsing failed."""

    def __init__(self, text: str) -> None:
        self.text, self.words, self.index = text, text.split(), 0

    def peek(self) -> str | None:
        return self.words[self.index] if self.index < len(self.words) else None

    def take(self, allowed: Sequence[str] | dict, what: str) -> str:
        word = self.peek()
        if word not in allowed:
            raise ValueError(
                f"Not a toy sentence: expected {what} at word {self.index + 1} of {self.text!r}, got {word!r}. "
                "Toy sentences read AGENT VERB THING [and THING] [PREP the PLACE] (see lit_sllm/toy/language.py)."
            )
        self.index += 1
        return word

    def thing(self) -> Thing:
        count_word = self.take(["a", *(number_to_words(n) for n in range(2, MAX_COUNT + 1))], "'a' or a number")
        colour = self.take(COLOURS, "a colour")
        if count_word == "a":
            return Thing(1, colour, self.take(THINGS, "a singular thing"))
        plurals = {plural: singular for singular, plural in THINGS.items()}
        return Thing(COUNT_OF[count_word], colour, plurals[self.take(plurals, "a plural thing")])


def parse_sentence(text: str) -> Sentence:
    """The sentence a transcript spells, so answers can be recomputed from a transcript alone.

    Raises:
        ValueError: naming the word where `text` leaves the toy template.
    """
    reader = _Reader(text)
    if reader.peek() in NAMES:
        agent = Agent(reader.take(NAMES, "a name"))
    else:
        reader.take(["the"], "a name or 'the'")
        size = reader.take(SIZES, "a size") if reader.peek() in SIZES else None
        agent = Agent(reader.take(ANIMALS, "an animal"), size)
    verb = reader.take(VERBS, "a verb")
    things = [reader.thing()]
    while reader.peek() == "and":
        reader.take(["and"], "'and'")
        things.append(reader.thing())
    place = None
    if reader.peek() is not None:
        preposition = reader.take(PREPOSITIONS, "a preposition or the end")
        reader.take(["the"], "'the'")
        place = (preposition, reader.take(PLACES, "a place"))
    if reader.peek() is not None:
        reader.take([], "the end of the sentence")
    return Sentence(agent, verb, tuple(things), place)


_NP_SLOT = {"det": 0, "number": 0, "size": 1, "colour": 2, "noun": 3}  # English order inside a noun phrase
_TOVA_SLOT = {"det": 0, "noun": 1, "size": 2, "colour": 3, "number": 4}  # tova order: modifiers follow the noun


def chunks(words: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Groups English words into (kind, words): kind "np" for a noun phrase (or a bare modifier), else the word's
    category ("prep", "verb", "other").

    Raises:
        ValueError: for a word outside the toy lexicon.
    """
    out: list[tuple[str, list[str]]] = []
    for word in words:
        if word not in LEXICON:
            raise ValueError(f"'{word}' is not a toy word; the toy lexicon is in lit_sllm/toy/language.py.")
        category = LEXICON[word][0]
        slot = _NP_SLOT.get(category)
        if slot is not None and out and out[-1][0] == "np" and slot > _NP_SLOT[LEXICON[out[-1][1][-1]][0]]:
            out[-1][1].append(word)
        else:
            out.append(("np" if slot is not None else category, [word]))
    return out


@dataclass(frozen=True)
class SecondLanguage:
    """A word-for-word language with its own order rules (see the module docstring)."""

    name: str
    vocabulary: dict[str, str]  # English lemma -> word

    def word(self, english: str) -> str:
        return self.vocabulary[LEXICON[english][1]]

    def translate(self, words: Sequence[str]) -> list[str]:
        """English words (a sentence or an answer such as "in the garden") -> words of this language."""
        ordered, verbs, prepositions = [], [], []
        for kind, group in chunks(words):
            if kind == "verb":
                verbs += group
            elif kind == "prep":
                prepositions += group
            elif kind == "np":
                ordered += sorted(group, key=lambda w: _TOVA_SLOT[LEXICON[w][0]]) + prepositions
                prepositions = []
            else:
                ordered += prepositions + group
                prepositions = []
        return [self.word(w) for w in ordered + prepositions + verbs]


@lru_cache(maxsize=4)
def second_language(seed: int = LANGUAGE_SEED) -> SecondLanguage:
    """Tova: every English lemma but names gets a distinct coined word of 2-3 consonant-vowel syllables."""
    rng = random.Random(f"toy-language/{seed}")
    lemmas = sorted({lemma for _, lemma in LEXICON.values()} - set(NAMES))
    taken = set(LEXICON) | {LANGUAGE_NAME}
    vocabulary = {name: name for name in NAMES}
    for lemma in lemmas:
        word = ""
        while not word or word in taken:
            word = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.choice((2, 2, 3))))
        taken.add(word)
        vocabulary[lemma] = word
    return SecondLanguage(LANGUAGE_NAME, vocabulary)
