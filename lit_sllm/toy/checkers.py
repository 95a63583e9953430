"""Answer checkers for the suite's callbacks, recomputing the right answer from what the toy world knows."""

from __future__ import annotations

from lit_sllm.toy.language import parse_sentence
from lit_sllm.toy.tasks import TASKS


def spoken_task_checker(task: str, transcript: str, answer: str) -> bool:
    """`(task, transcript, answer) -> bool` for the generalisation benchmark: the toy answer is recomputed from the
    transcript, so the speech LLM's answer is checked, not only its agreement with the teacher."""
    if task not in TASKS:
        raise KeyError(f"'{task}' is not a toy task; known tasks: {sorted(TASKS)}.")
    toy = TASKS[task]
    return toy.check(answer, toy.answer(parse_sentence(transcript)))
