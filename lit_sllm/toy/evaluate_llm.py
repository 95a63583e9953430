"""Scores a toy LLM by greedy generation on fresh "test" sentences, per task, with each task's own checker.

Three groups over the benchmark tasks (`benchmark_tasks`) tell trained skill from generalisation:
- `trained`: trained tasks asked with trained phrasings;
- `held_out_phrasings`: the same tasks asked with phrasings never trained on;
- `held_out_tasks`: tasks never trained on (asked with their regular phrasings).
The first two groups ask about the same sentences, so their difference is the phrasing alone.
Answers come from `answer_text_prompts`, the very path the MTBI teacher takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.models.text_generation import answer_text_prompts
from lit_sllm.toy.tasks import TASKS, benchmark_tasks, eval_samples


def evaluation_groups(per_task: int, seed: int) -> dict[str, list[dict]]:
    """group name -> one-exchange samples on "test" sentences (see the module docstring)."""
    trained = [task for task in benchmark_tasks() if not task.held_out]
    return {
        "trained": eval_samples(trained, per_task, seed),
        "held_out_phrasings": eval_samples(trained, per_task, seed, held_out_phrasings=True),
        "held_out_tasks": eval_samples([task for task in benchmark_tasks() if task.held_out], per_task, seed),
    }


def score_samples(
    llm: PreTrainedModel, formatter: ChatFormatter, samples: list[dict], batch_size: int = 64
) -> dict[str, float]:
    """Accuracy per task of greedy answers to `samples` (each ends with its reference assistant turn)."""
    prompts = [sample["turns"][:-1] for sample in samples]
    answers = answer_text_prompts(llm, formatter, prompts, max_new_tokens=32, batch_size=batch_size)
    hits: dict[str, list[bool]] = {}
    for sample, answer in zip(samples, answers):
        reference = sample["turns"][-1]["parts"][0]["text"]
        hits.setdefault(sample["task"], []).append(TASKS[sample["task"]].check(answer, reference))
    return {task: sum(ok) / len(ok) for task, ok in hits.items()}


def evaluate_llm(
    llm: PreTrainedModel | str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    per_task: int = 100,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Accuracy per task in each group, and each group's mean over its tasks.

    Args:
        llm: a causal LM, or the folder of a saved one (its tokenizer is loaded from there too).
        tokenizer: the LLM's tokenizer; needed when `llm` is a model.
        per_task: samples per task and group.
        seed: picks the sentences and phrasings.
        batch_size: prompts per generation batch.
    """
    if isinstance(llm, str | Path):
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(llm))
        llm = AutoModelForCausalLM.from_pretrained(str(llm))
    if tokenizer is None:
        raise ValueError("evaluate_llm needs the tokenizer when `llm` is a model rather than a folder.")
    formatter = ChatFormatter(tokenizer)
    llm.eval()
    report: dict[str, Any] = {}
    for group, samples in evaluation_groups(per_task, seed).items():
        per_task_accuracy = score_samples(llm, formatter, samples, batch_size)
        report[group] = {
            "mean": round(sum(per_task_accuracy.values()) / len(per_task_accuracy), 4),
            "tasks": {task: round(value, 4) for task, value in per_task_accuracy.items()},
        }
    return report
