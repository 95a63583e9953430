"""Scores a toy LLM by greedy generation on fresh "test" sentences, per task, with each task's own checker.

Three groups over the benchmark tasks (`benchmark_tasks`) tell trained skill from generalisation:
- `trained`: trained tasks asked with trained phrasings;
- `held_out_phrasings`: the same tasks asked with phrasings never trained on;
- `held_out_tasks`: tasks never trained on (asked with their regular phrasings).
The first two groups ask about the same sentences, so their difference is the phrasing alone.
Answers come from `answer_text_prompts`, the very path the MTBI teacher takes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.metrics import score
from lit_sllm.models.splice import splice_audio
from lit_sllm.models.text_generation import answer_text_prompts
from lit_sllm.toy.language import generate_sentences
from lit_sllm.toy.pseudo_speech import encode_with_sentences, fixed_plan, plan_frames
from lit_sllm.toy.tasks import TASKS, all_prompts, benchmark_tasks, copy_sample, eval_samples


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


# The robustness table: how the LLM reads sentences given as pseudo-speech (`lit_sllm.toy.pseudo_speech`).
PSEUDO_SPEECH_VARIANTS: dict[str, dict[str, float]] = {
    "exact": {},
    "each token x2": {"repeat": 2},
    "each token x3": {"repeat": 3},
    "each token x4": {"repeat": 4},
    "neighbours mixed 0.5": {"mix": 0.5},
    "gain x3": {"gain": 3.0},
    "gain x0.3": {"gain": 0.3},
    "noise 0.3 rms": {"noise": 0.3},
}


@torch.no_grad()
def answer_pseudo_speech(
    llm: PreTrainedModel,
    formatter: ChatFormatter,
    conversations: list[list[dict]],
    variant: dict[str, float],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers with every sentence of the prompts given as `fixed_plan(**variant)` pseudo-speech."""
    embedding, tokenizer, audio_id = llm.get_input_embeddings(), formatter.tokenizer, formatter.audio_token_id
    generator = torch.Generator().manual_seed(0)
    answers: list[str] = []
    for start in range(0, len(conversations), batch_size):
        encoded, plans = [], []
        for turns in conversations[start : start + batch_size]:
            dialog, sentences = encode_with_sentences(formatter, turns, all_prompts(), add_generation_prompt=True)
            encoded.append(dialog.input_ids)
            plans += [fixed_plan(tokens, **variant) for tokens in sentences]
        width = max(len(ids) for ids in encoded)
        ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in encoded])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in encoded])
        frames, lengths = plan_frames(plans, embedding, generator)
        token_embeds = embedding(ids.masked_fill(ids == audio_id, 0))
        spliced = splice_audio(token_embeds, ids, mask, torch.full_like(ids, -100), frames, lengths, audio_id, "left")
        output = llm.generate(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
        )
        answers += [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]
    return answers


def pseudo_speech_table(
    llm: PreTrainedModel | str | Path, per_task: int = 20, seed: int = 0, batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Per variant: mean accuracy over the trained tasks (trained phrasings, test sentences) and the WER of copying
    the sentence, with every sentence given as that variant of pseudo-speech."""
    if isinstance(llm, str | Path):
        tokenizer, llm = AutoTokenizer.from_pretrained(str(llm)), AutoModelForCausalLM.from_pretrained(str(llm))
    else:
        raise TypeError("pseudo_speech_table reads a saved toy LLM folder (its tokenizer lives there).")
    formatter = ChatFormatter(tokenizer)
    llm.eval()
    tasks = evaluation_groups(per_task, seed)["trained"]
    copies = [
        copy_sample(s, f"copy-{i}", random.Random(i))
        for i, s in enumerate(generate_sentences(per_task * 2, seed, "test"))
    ]
    table = {}
    for name, variant in PSEUDO_SPEECH_VARIANTS.items():
        answers = answer_pseudo_speech(llm, formatter, [t["turns"][:-1] for t in tasks], variant, batch_size=batch_size)
        hits: dict[str, list[bool]] = {}
        for sample, answer in zip(tasks, answers):
            reference = sample["turns"][-1]["parts"][0]["text"]
            hits.setdefault(sample["task"], []).append(TASKS[sample["task"]].check(answer, reference))
        copied = answer_pseudo_speech(llm, formatter, [c["turns"][:-1] for c in copies], variant, batch_size=batch_size)
        references = [c["turns"][-1]["parts"][0]["text"] for c in copies]
        table[name] = {
            "task_accuracy": round(sum(sum(h) / len(h) for h in hits.values()) / len(hits), 4),
            "copy_wer": round(score("wer", copied, references)["wer"], 4),
        }
    return table
