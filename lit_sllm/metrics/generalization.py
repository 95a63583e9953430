"""Scores of MTBI's generalisation benchmark: does the speech LLM answer from speech what its LLM answers from text?

Pure functions on answered questions (the questions come from `lit_sllm.data.generalization`). The reference for each
is the LLM's own answer (LoRA disabled) to the same prompt about the transcript; scores are their agreement (exact
match after normalisation, ROUGE-L, BLEU) and, where the task can be checked, the task accuracy of both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lit_sllm.data.generalization import CATEGORIES
from lit_sllm.metrics.scoring import exact_match, score

# (task, transcript, answer) -> the answer is right; for worlds whose tasks can be checked (the toy world).
TaskChecker = Callable[[str, str, str], bool]


@dataclass
class Answered:
    """One benchmark question with both answers."""

    key: str
    category: str
    task: str
    transcript: str
    speech: str
    text: str


def score_answers(answered: Sequence[Answered], checker: TaskChecker | None = None) -> dict[str, dict[str, float]]:
    """Category -> {n, exact, rougeL, bleu[, accuracy, teacher_accuracy]}."""
    table = {}
    for category in CATEGORIES:
        rows = [a for a in answered if a.category == category]
        if not rows:
            continue
        ours, theirs = [a.speech for a in rows], [a.text for a in rows]
        entry = {
            "n": float(len(rows)),
            "exact": exact_match(ours, theirs),
            "rougeL": score("rouge", ours, theirs)["rougeL"],
            "bleu": score("bleu", ours, theirs)["bleu"],
        }
        if checker is not None:
            right = [checker(a.task, a.transcript, a.speech) for a in rows]
            teacher = [checker(a.task, a.transcript, a.text) for a in rows]
            entry |= {"accuracy": sum(right) / len(rows), "teacher_accuracy": sum(teacher) / len(rows)}
        table[category] = entry
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table, one row per category."""
    columns = ["n", "exact", "rougeL", "bleu", "accuracy", "teacher_accuracy"]
    lines = [f"{'category':<14}" + "".join(f"{c:>18}" for c in columns)]
    for category, entry in table.items():
        cells = "".join(f"{entry[c]:>18.3f}" if c in entry else f"{'-':>18}" for c in columns)
        lines.append(f"{category:<14}{cells}")
    return "\n".join(lines)
