"""MTBI's generalisation benchmark: does the speech LLM answer from speech what its LLM answers from text?

Three kinds of request per utterance: seen tasks with seen phrasings, seen tasks with unseen phrasings (prompt
generalisation) and unseen tasks (task generalisation). The reference for each is the LLM's own answer (LoRA
disabled) to the same prompt about the transcript; scores are their agreement (exact match after normalisation,
ROUGE-L, BLEU) and, where the task can be checked, the task accuracy of both.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lit_sllm.data.batch import Batch
from lit_sllm.data.collate import SampleEncoder, collate
from lit_sllm.data.schema import Sample
from lit_sllm.data.tasks import Task, TaskSet, task_turns
from lit_sllm.metrics.scoring import exact_match, score
from lit_sllm.models.speech_llm import SpeechLLM
from lit_sllm.models.text_generation import answer_text_prompts

CATEGORIES = ("seen", "unseen_prompt", "unseen_task")
# (task, transcript, answer) -> the answer is right; for worlds whose tasks can be checked (the toy world).
TaskChecker = Callable[[str, str, str], bool]


@dataclass
class Request:
    """One benchmark question about one utterance."""

    category: str
    task: str
    prompt: str
    sample: Sample


def _prompts_by_category(task: Task) -> dict[str, list[str]]:
    if task.held_out:
        return {"unseen_task": task.prompts + task.held_out_prompts}
    return {"seen": task.prompts, "unseen_prompt": task.held_out_prompts}


def build_requests(samples: Sequence[Sample], tasks: TaskSet, seed: int = 0) -> list[Request]:
    """Every (utterance, task) pair once per category that task has, with a phrasing drawn per pair (seeded)."""
    rng = random.Random(seed)
    requests = []
    for sample in samples:
        for task in tasks.tasks.values():
            for category, prompts in _prompts_by_category(task).items():
                if prompts:
                    requests.append(Request(category, task.name, rng.choice(prompts), sample))
    return requests


def _speech_batch(requests: Sequence[Request], encoder: SampleEncoder) -> Batch:
    items = []
    for request in requests:
        ((name, _),) = request.sample.audio.items()
        turns = task_turns(request.prompt, [{"audio": name}])
        sample = Sample(request.sample.key, request.task, turns, audio=request.sample.audio)
        items.append(encoder(sample, random.Random(0)))
    return collate(items, "generalization", encoder.formatter.tokenizer.pad_token_id)


@torch.no_grad()
def answer_requests(
    model: SpeechLLM, requests: Sequence[Request], batch_size: int = 16, max_new_tokens: int = 32
) -> tuple[list[str], list[str]]:
    """(speech LLM's answers from speech, its LLM's answers from the transcript with LoRA disabled)."""
    formatter = model.formatter
    encoder = SampleEncoder(formatter, model.sample_rate, generate=True)
    device = next(model.parameters()).device
    speech: list[str] = []
    for start in range(0, len(requests), batch_size):
        batch = _speech_batch(requests[start : start + batch_size], encoder)
        speech += model.generate(batch.to(device), max_new_tokens=max_new_tokens)
    conversations = [task_turns(r.prompt, [{"text": r.sample.transcript or ""}]) for r in requests]
    with model.without_lora():
        text = answer_text_prompts(model.llm, formatter, conversations, max_new_tokens, batch_size)
    return speech, text


def score_requests(
    requests: Sequence[Request], speech: Sequence[str], text: Sequence[str], checker: TaskChecker | None = None
) -> dict[str, dict[str, float]]:
    """Category -> {n, exact, rougeL, bleu[, accuracy, teacher_accuracy]}."""
    table = {}
    for category in CATEGORIES:
        rows = [i for i, r in enumerate(requests) if r.category == category]
        if not rows:
            continue
        ours, theirs = [speech[i] for i in rows], [text[i] for i in rows]
        entry = {
            "n": float(len(rows)),
            "exact": exact_match(ours, theirs),
            "rougeL": score("rouge", ours, theirs)["rougeL"],
            "bleu": score("bleu", ours, theirs)["bleu"],
        }
        if checker is not None:
            right = [checker(requests[i].task, requests[i].sample.transcript or "", speech[i]) for i in rows]
            teacher = [checker(requests[i].task, requests[i].sample.transcript or "", text[i]) for i in rows]
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
