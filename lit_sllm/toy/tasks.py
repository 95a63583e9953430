"""Toy text tasks: each reads one sentence and has one answer that can be computed and checked from it alone.

A task has training phrasings (`phrasings`) and phrasings never used in any training data (`held_out_phrasings`);
a held-out task (`held_out=True`) is never trained at all. Besides single questions there are pair tasks that ask
two questions at once ("what colour are the things? where does this happen?" -> "red ; in the garden"). Every
question is trained inside some pairs, in either position, but the held-out pairs are never trained together, so a
model answers them only by generalising: that is what the MTBI generalisation benchmark measures. Samples use the
suite's schema, `{"key", "task", "turns"}`, with the user turn [prompt, sentence] and the assistant turn [answer],
exactly as the MTBI teacher lays out a task.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from lit_sllm.data.tasks import Task, TaskSet, task_turns
from lit_sllm.metrics.normalize import normalize_text, number_to_words
from lit_sllm.toy.language import VERBS, Sentence, second_language, sentence_stream

# Speech-only instructions (ASR); they are not text tasks, but the toy tokenizer must know their words.
ASR_PROMPTS = ("transcribe the audio.", "write down what is said.", "what does the speaker say?")

# Copying a sentence: the toy LLM learns it in pre-training (with the sentence as pseudo-speech), as a real LLM can
# repeat what it reads, so that ASR through the frozen LLM is reachable. Not an MTBI benchmark task.
COPY_PROMPTS = (*ASR_PROMPTS, "repeat the sentence.", "say the sentence again.", "repeat after me.")

QUESTIONS = ("colour", "count", "place", "agent", "action", "continuation", "keywords")  # the tasks that pair up
HELD_OUT_PAIRS = (("keywords", "colour"), ("place", "action"), ("continuation", "count"))
BENCHMARK_PAIRS = (("colour", "keywords"), ("action", "place"), ("count", "continuation"))  # trained mirrors
PAIR_SEPARATOR = " ; "


def exact(answer: str, reference: str) -> bool:
    """The answer equals the reference after text normalisation (digits count as number words)."""
    return normalize_text(answer) == normalize_text(reference)


def same_words(answer: str, reference: str) -> bool:
    """The answer has the reference's words in any order (for lists: keywords, colours)."""
    return sorted(normalize_text(answer).split()) == sorted(normalize_text(reference).split())


@dataclass(frozen=True)
class ToyTask:
    """One task: its phrasings, its answer and how an answer is checked.

    Attributes:
        name: task name, stored as the sample's `task`.
        phrasings: prompts used in training data (for a held-out task: its regular prompts, still never trained).
        held_out_phrasings: prompts never used in any training data (prompt generalisation).
        answer: the reference answer to a sentence.
        check: `(answer, reference) -> bool`.
        held_out: the task itself is never trained (task generalisation).
    """

    name: str
    phrasings: tuple[str, ...]
    held_out_phrasings: tuple[str, ...]
    answer: Callable[[Sentence], str]
    check: Callable[[str, str], bool] = exact
    held_out: bool = False


def _colour(sentence: Sentence) -> str:
    return " and ".join(thing.colour for thing in sentence.things)


def _count(sentence: Sentence) -> str:
    return number_to_words(sum(thing.count for thing in sentence.things))


def _place(sentence: Sentence) -> str:
    return f"{sentence.place[0]} the {sentence.place[1]}" if sentence.place else "unknown"


def _agent(sentence: Sentence) -> str:
    return " ".join(sentence.agent.words)


def _action(sentence: Sentence) -> str:
    return sentence.verb


def _continuation(sentence: Sentence) -> str:
    """What the agent does next with the things: "then the cat takes them"."""
    pronoun = "it" if sum(thing.count for thing in sentence.things) == 1 else "them"
    return " ".join(["then", *sentence.agent.short_words, VERBS[sentence.verb], pronoun])


def _keywords(sentence: Sentence) -> str:
    """The nouns in order, singular: who, the things, the place."""
    places = [sentence.place[1]] if sentence.place else []
    return " ".join([sentence.agent.noun, *(thing.noun for thing in sentence.things), *places])


def _translate(sentence: Sentence) -> str:
    return " ".join(second_language().translate(sentence.words))


_BASE_TASKS = (
    ToyTask(
        "colour",
        (
            "what colour are the things?",
            "name the colour of the things.",
            "which colour do the things have?",
            "tell me the colour of the things.",
            "what is the colour of the things?",
        ),
        ("say the colour of the things.", "the things have which colour?"),
        _colour,
        same_words,
    ),
    ToyTask(
        "count",
        (
            "how many things are there?",
            "count the things.",
            "what is the number of things?",
            "tell me how many things there are.",
            "how many things does it name?",
        ),
        ("say how many things there are.", "give the number of things."),
        _count,
    ),
    ToyTask(
        "place",
        (
            "where does this happen?",
            "where is this?",
            "name the place.",
            "tell me where this happens.",
            "what is the place?",
        ),
        ("say where this happens.", "which place is it?"),
        _place,
    ),
    ToyTask(
        "agent",
        ("who does it?", "who is in the sentence?", "name who does it.", "tell me who does it.", "who is it about?"),
        ("say who does it.", "who is the sentence about?"),
        _agent,
    ),
    ToyTask(
        "action",
        ("what does it do?", "what is the action?", "name the action.", "tell me the action.", "which action is it?"),
        ("say the action.", "what action happens?"),
        _action,
    ),
    ToyTask(
        "continuation",
        (
            "what happens next?",
            "continue the story.",
            "what comes next?",
            "tell me what happens next.",
            "go on with the story.",
        ),
        ("say what happens next.", "how does the story go on?"),
        _continuation,
    ),
    ToyTask(
        "keywords",
        (
            "give the keywords.",
            "what are the keywords?",
            "list the keywords.",
            "name the keywords.",
            "tell me the keywords.",
        ),
        ("say the keywords.", "the keywords are what?"),
        _keywords,
        same_words,
    ),
    ToyTask(
        "translate",
        (
            "translate into tova.",
            "say this in tova.",
            "what is this in tova?",
            "give this in tova.",
            "tell me this in tova.",
        ),
        ("translate this sentence into tova.", "how does this go in tova?"),
        _translate,
    ),
)


def _pair(first: ToyTask, second: ToyTask, held_out: bool) -> ToyTask:
    """Both questions at once; the answer gives both answers in order, joined by `PAIR_SEPARATOR`."""

    def answer(sentence: Sentence) -> str:
        return first.answer(sentence) + PAIR_SEPARATOR + second.answer(sentence)

    def check(answer: str, reference: str) -> bool:
        parts, expected = answer.split(PAIR_SEPARATOR.strip()), reference.split(PAIR_SEPARATOR.strip())
        return len(parts) == 2 and first.check(parts[0], expected[0]) and second.check(parts[1], expected[1])

    unseen = itertools.chain(
        itertools.product(first.phrasings + first.held_out_phrasings, second.held_out_phrasings),
        itertools.product(first.held_out_phrasings, second.phrasings),
    )
    return ToyTask(
        f"{first.name}+{second.name}",
        tuple(f"{p} {q}" for p, q in itertools.product(first.phrasings, second.phrasings)),
        tuple(f"{p} {q}" for p, q in unseen),
        answer,
        check,
        held_out,
    )


def _registry() -> dict[str, ToyTask]:
    singles = {task.name: task for task in _BASE_TASKS}
    pairs = [_pair(singles[a], singles[b], (a, b) in HELD_OUT_PAIRS) for a, b in itertools.permutations(QUESTIONS, 2)]
    return singles | {task.name: task for task in pairs}


TASKS: dict[str, ToyTask] = _registry()


def single_tasks() -> list[ToyTask]:
    """The one-question tasks (all trained)."""
    return [task for name, task in TASKS.items() if "+" not in name]


def trained_pairs() -> list[ToyTask]:
    return [task for name, task in TASKS.items() if "+" in name and not task.held_out]


def held_out_tasks() -> list[ToyTask]:
    return [task for task in TASKS.values() if task.held_out]


def benchmark_tasks() -> list[ToyTask]:
    """The tasks of the MTBI task set: every single task, the trained mirrors of the held-out pairs, the held-out
    pairs."""
    pairs = [f"{a}+{b}" for a, b in BENCHMARK_PAIRS + HELD_OUT_PAIRS]
    return single_tasks() + [TASKS[name] for name in pairs]


def check_answer(task: str, answer: str, reference: str) -> bool:
    """`(task, answer, reference) -> bool` with each task's own checker (the forgetting callback's signature)."""
    if task not in TASKS:
        raise KeyError(f"'{task}' is not a toy task; known tasks: {sorted(TASKS)}.")
    return TASKS[task].check(answer, reference)


def task_sample(task: ToyTask, sentence: Sentence, key: str, prompt: str) -> dict:
    """A one-exchange text sample: user [prompt, sentence] -> assistant [answer]."""
    return {
        "key": key,
        "task": task.name,
        "turns": task_turns(prompt, [{"text": sentence.text}], task.answer(sentence)),
    }


def chat_sample(sentences: Iterator[Sentence], key: str, rng: random.Random) -> dict:
    """A text chat of 2-3 exchanges over single tasks and their trained phrasings.

    A later exchange asks about the previous sentence (prompt only) or, half the time, brings a new one.
    """
    turns: list[dict] = []
    sentence = next(sentences)
    for index, task in enumerate(rng.sample(single_tasks(), rng.choice((2, 3)))):
        follow_up = index > 0 and rng.random() < 0.5
        if index and not follow_up:
            sentence = next(sentences)
        content = [] if follow_up else [{"text": sentence.text}]
        turns += task_turns(rng.choice(task.phrasings), content, task.answer(sentence))
    return {"key": key, "task": "chat", "turns": turns}


def copy_sample(sentence: Sentence, key: str, rng: random.Random) -> dict:
    """user [prompt, sentence] or [sentence, prompt] -> the sentence (the orders of MTBI's and the ASR sets' turns)."""
    parts = [{"text": rng.choice(COPY_PROMPTS)}, {"text": sentence.text}]
    if rng.random() < 0.5:
        parts.reverse()
    turns = [{"role": "user", "parts": parts}, {"role": "assistant", "parts": [{"text": sentence.text}]}]
    return {"key": key, "task": "copy", "turns": turns}


def all_prompts() -> frozenset[str]:
    """Every prompt text any sample uses (task phrasings, held out too, and copy prompts): the user text parts that
    are not sentences."""
    return frozenset(p for task in TASKS.values() for p in task.phrasings + task.held_out_phrasings) | set(COPY_PROMPTS)


def training_samples(
    seed: int, chat_fraction: float = 0.25, pair_fraction: float = 0.35, copy_fraction: float = 0.0
) -> Iterator[dict]:
    """Endless LLM training samples: "train"-split sentences, trained tasks and trained phrasings only.

    Args:
        seed: picks sentences, tasks and phrasings.
        chat_fraction: share of multi-turn chats.
        pair_fraction: share of trained pair tasks among the one-exchange task samples (the rest are single tasks).
        copy_fraction: share of copy samples (`copy_sample`).
    """
    rng = random.Random(f"toy-training/{seed}")
    sentences = sentence_stream(seed, "train")
    singles, pairs = single_tasks(), trained_pairs()
    for index in itertools.count():
        key = f"toy-text-{seed}-{index:08d}"
        draw = rng.random()
        if draw < chat_fraction:
            yield chat_sample(sentences, key, rng)
            continue
        if draw < chat_fraction + copy_fraction:
            yield copy_sample(next(sentences), key, rng)
            continue
        task = rng.choice(pairs if rng.random() < pair_fraction else singles)
        yield task_sample(task, next(sentences), key, rng.choice(task.phrasings))


def text_chats(count: int, seed: int) -> list[dict]:
    """`count` multi-turn text chats (trained tasks and phrasings), for the text-only batches of joint SFT."""
    rng = random.Random(f"toy-chats/{seed}")
    sentences = sentence_stream(seed, "train")
    return [chat_sample(sentences, f"toy-chat-{seed}-{i:06d}", rng) for i in range(count)]


def eval_samples(
    tasks: list[ToyTask], per_task: int, seed: int, split: str = "test", held_out_phrasings: bool = False
) -> list[dict]:
    """`per_task` one-exchange samples per task on sentences of `split`, phrasings drawn from the chosen pool."""
    rng = random.Random(f"toy-eval/{seed}/{split}/{held_out_phrasings}")
    sentences = sentence_stream(seed, split)
    samples = []
    for task in tasks:
        pool = task.held_out_phrasings if held_out_phrasings else task.phrasings
        for i in range(per_task):
            key = f"toy-{split}-{task.name}-{'reworded-' if held_out_phrasings else ''}{i:05d}"
            samples.append(task_sample(task, next(sentences), key, rng.choice(pool)))
    return samples


def text_eval_set(per_task: int, seed: int) -> list[dict]:
    """The text-only eval set of the forgetting callback: single tasks, trained phrasings, "val" sentences."""
    return eval_samples(single_tasks(), per_task, seed, split="val")


def task_set() -> TaskSet:
    """The benchmark tasks as an MTBI task set (for `lit-sllm teacher` and the generalisation benchmark)."""
    tasks = {
        task.name: Task(task.name, list(task.phrasings), list(task.held_out_phrasings), task.held_out)
        for task in benchmark_tasks()
    }
    return TaskSet(tasks, "lit_sllm.toy.tasks")


def write_task_set(path: str | Path) -> Path:
    """Writes `task_set()` as the YAML that `TaskSet.load` reads."""
    spec = {
        name: {"prompts": task.prompts, "held_out_prompts": task.held_out_prompts, "held_out": task.held_out}
        for name, task in task_set().tasks.items()
    }
    path = Path(path)
    OmegaConf.save(OmegaConf.create({"tasks": spec}), path)
    return path
