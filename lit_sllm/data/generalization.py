"""The generalisation benchmark's questions, as an eval-set expansion: each utterance becomes one prompt per task and
category (seen phrasing, unseen phrasing of a seen task, unseen task).

Each question asks about the speech; its transcript-only twin (`teacher_turns`) is what the LLM answers from text,
the reference the speech LLM is scored against (`lit_sllm.metrics.generalization`).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from lit_sllm.data.schema import Sample
from lit_sllm.data.tasks import Task, TaskSet, task_turns, teacher_turns

CATEGORIES = ("seen", "unseen_prompt", "unseen_task")


def prompts_by_category(task: Task) -> dict[str, list[str]]:
    """The phrasings a task is asked with in each benchmark category it has."""
    if task.held_out:
        return {"unseen_task": task.prompts + task.held_out_prompts}
    return {"seen": task.prompts, "unseen_prompt": task.held_out_prompts}


class GeneralizationRequests:
    """`(sample, rng) -> questions`, set as an eval set's `expand`.

    Args:
        tasks: the MTBI task set YAML (with held-out phrasings and tasks).
    """

    def __init__(self, tasks: str | Path) -> None:
        self.tasks_path = str(tasks)
        self.tasks = TaskSet.load(tasks)

    def __call__(self, sample: Sample, rng: random.Random) -> list[Sample]:
        if len(sample.audio) != 1 or not sample.transcript:
            raise ValueError(
                f"Sample {sample.key} (from {sample.source}): the generalisation benchmark needs one clip and its "
                f"transcript, got {len(sample.audio)} clips and transcript {sample.transcript!r}."
            )
        ((name, _),) = sample.audio.items()
        questions = []
        for task in self.tasks.tasks.values():
            for category, prompts in prompts_by_category(task).items():
                if not prompts:
                    continue
                prompt = rng.choice(prompts)
                questions.append(
                    dataclasses.replace(
                        sample,
                        key=f"{sample.key}/{category}/{task.name}",
                        task=task.name,
                        turns=task_turns(prompt, [{"audio": name}]),
                        teacher_turns=teacher_turns(prompt, sample.transcript),
                        group=category,
                    )
                )
        return questions
