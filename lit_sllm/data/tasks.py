"""MTBI task sets: named tasks, each with the prompt phrasings used in training and phrasings held out of it.

A task set is YAML:

    tasks:
      continuation:
        prompts: ["Continue this sentence.", "How could this sentence go on?"]
        held_out_prompts: ["Write what comes next."]     # prompt generalisation: never trained on
      keywords:
        prompts: [...]
        held_out: true                                    # task generalisation: the whole task is never trained on

The teacher answers seen tasks with seen phrasings only; the generalisation benchmark asks all three kinds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf


@dataclass
class Task:
    """One task and its phrasings."""

    name: str
    prompts: list[str]
    held_out_prompts: list[str] = field(default_factory=list)
    held_out: bool = False


@dataclass
class TaskSet:
    """The tasks of one YAML file, in file order."""

    tasks: dict[str, Task]
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> TaskSet:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), dict) or not raw["tasks"]:
            raise ValueError(f"{path}: a task set needs a non-empty `tasks:` mapping of name -> {{prompts: [...]}}.")
        tasks = {}
        for name, spec in raw["tasks"].items():
            if not isinstance(spec, dict) or not spec.get("prompts"):
                raise ValueError(f"{path}: task '{name}' needs a non-empty `prompts:` list of phrasings.")
            unknown = set(spec) - {"prompts", "held_out_prompts", "held_out"}
            if unknown:
                raise ValueError(f"{path}: task '{name}' has unknown keys {sorted(unknown)}.")
            tasks[name] = Task(
                name, list(spec["prompts"]), list(spec.get("held_out_prompts", [])), spec.get("held_out", False)
            )
        return cls(tasks, str(path))

    @property
    def seen(self) -> list[Task]:
        return [task for task in self.tasks.values() if not task.held_out]

    @property
    def unseen(self) -> list[Task]:
        return [task for task in self.tasks.values() if task.held_out]


def pick_prompt(task: Task, key: str, seed: int = 0) -> str:
    """The training phrasing of `task` for sample `key`: random, but the same on every run with the same seed."""
    return random.Random(f"{seed}/{key}/{task.name}").choice(task.prompts)


def task_turns(prompt: str, content: list[dict[str, str]], answer: str | None = None) -> list[dict]:
    """A one-exchange conversation: user [prompt, content parts...] -> assistant [answer] (omitted when None).

    The same layout serves the teacher (content = the transcript as text) and the student (content = speech,
    or interleaved speech and text), so both see the task the same way.
    """
    turns = [{"role": "user", "parts": [{"text": prompt}, *content]}]
    if answer is not None:
        turns.append({"role": "assistant", "parts": [{"text": answer}]})
    return turns


def teacher_turns(prompt: str, transcript: str, answer: str | None = None) -> list[dict]:
    """The teacher's view of a task: the prompt and the transcript as text. One definition for every place that
    builds it (labelling, the stored distributions, the online KD view, the generalisation benchmark), so stored
    distributions are computed over exactly the conversation the online teacher would read."""
    return task_turns(prompt, [{"text": transcript}], answer)
