"""The toy world's report: what each set and model holds, the measured figures, and the world's README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_sllm.toy.tasks import held_out_tasks, single_tasks

SPLITS = ("train", "val", "test")


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _set_order(name: str) -> tuple[str, int]:
    """ "asr/train" -> ("asr", 0): sets by name, splits in train, val, test order."""
    set_name, split = name.split("/")
    return set_name, SPLITS.index(split)


def world_report(
    out: Path, seed: int, sets: dict[str, dict], models: dict[str, dict], figures: dict, clock: Any
) -> dict[str, Any]:
    """The report of a build: what each set and model holds, what was measured, how long each stage took."""
    set_rows = {
        name: {"samples": index["samples"], "hours": round(index["hours"], 4), "bytes": folder_bytes(out / name)}
        for name, index in sorted(sets.items(), key=lambda item: _set_order(item[0]))
    }
    for name, model in models.items():
        model["bytes"] = folder_bytes(out / "models" / name)
    return {
        "seed": seed,
        "sets": set_rows,
        "models": models,
        **figures,
        "seconds": clock.seconds | {"total": round(sum(clock.seconds.values()), 1)},
        "cpu_seconds": clock.cpu_seconds | {"total": round(sum(clock.cpu_seconds.values()), 1)},
        "total_bytes": folder_bytes(out),
    }


SET_DESCRIPTIONS = {
    "asr": "user [speech, ASR prompt] -> transcript; train and val also carry the toy LLM's answers to every seen "
    "MTBI task (`responses`, `prompts`: lit-sllm teacher)",
    "st": "user [speech, translation prompt] -> the sentence in tova",
    "sqa": "user [speech, question of a trained task] -> answer (`toy_task` names the task)",
    "dialog": "2-3 exchanges; the first sentence is speech, later sentences and prompts are text",
    "text": "text-only chats of 2-3 exchanges over trained tasks (joint SFT text batches)",
    "text_eval": "text-only questions on trained tasks, task = toy task (forgetting callback)",
}


def format_figures(figures: dict[str, Any]) -> str:
    """The LLM's accuracy per group and task, and the encoder's WER, as aligned text lines."""
    lines = ["toy LLM accuracy (greedy answers to test sentences):"]
    for group, result in figures["llm_accuracy"].items():
        lines.append(f"  {group:<28}{result['mean']:>8.1%}")
        lines += [f"    {task:<26}{value:>8.1%}" for task, value in result["tasks"].items()]
    if "pseudo_speech" in figures:
        lines.append("toy LLM reading each test sentence as pseudo-speech (task accuracy, copy WER):")
        lines += [
            f"  {variant:<28}{row['task_accuracy']:>8.1%}{row['copy_wer']:>9.1%}"
            for variant, row in figures["pseudo_speech"].items()
        ]
    wer = figures["encoder_wer"]
    lines.append(f"toy encoder greedy CTC WER on asr/test ({wer['samples']} utterances): {wer['wer']:.2%}")
    return "\n".join(lines)


def world_readme(report: dict[str, Any]) -> str:
    """The world's README: what it is, its sets and models with sizes, its figures and build times."""
    rows = [
        f"| {name} | {row['samples']} | {row['hours'] * 60:.1f} | {row['bytes'] / 1e6:.2f} | "
        f"{SET_DESCRIPTIONS[name.split('/')[0]]} |"
        for name, row in report["sets"].items()
    ]
    models = report["models"]
    cpu = report["cpu_seconds"]
    stages = [f"| {stage} | {seconds:.0f} | {cpu[stage]:.0f} |" for stage, seconds in report["seconds"].items()]
    voices = ", ".join(f"{v['name']} ({v['rate']} wpm, pitch {v['pitch']})" for v in report["voices"])
    return f"""# The toy world

A complete, tiny world for trying the whole suite on a CPU in minutes, with results that can be checked exactly.
Built by `lit-sllm toy build --seed {report["seed"]}` in {report["seconds"]["total"] / 60:.1f} min; rebuild it with
the same command, and re-measure the figures below with `lit-sllm toy report`. Total size
{report["total_bytes"] / 1e6:.1f} MB.

## Language and tasks

Every sentence follows `AGENT VERB THING [and THING] [PREP the PLACE]`, e.g. "the big cat finds two blue balls in
the garden" (`lit_sllm/toy/language.py`); a sentence's split (train/val/test) is fixed by its text. Tova, the second
language, is word for word with its own word order. Text tasks (`lit_sllm/toy/tasks.py`; the MTBI task set is
`tasks.yaml`) have answers computed from the sentence alone, so every answer can be checked: single questions
({", ".join(task.name for task in single_tasks())}) and pairs of questions asked at once. The pairs
{", ".join(task.name for task in held_out_tasks())} are never trained, and every task has phrasings that are never
trained.

## Speech

espeak-ng speaks every word once per voice ({voices}); utterances join the cached words with random pauses, tempo
(0.9-1.1x), word gains, level and light white noise, so word times (`words`) are exact. Clips are 16 kHz 8-bit FLAC
(about 6 kB/s).

## Sets

| set/split | samples | minutes | MB | content |
|---|---|---|---|---|
{chr(10).join(rows)}

## Models

- `models/llm`: a tiny Llama ({models["llm"]["parameters"]:,} parameters) and its word-level tokenizer, pre-trained on
  the trained tasks and on copying a sentence, with every sentence read as pseudo-speech (its token embeddings
  repeated 1-4 times per word, mixed with neighbours, rescaled and noised, `lit_sllm/toy/pseudo_speech.py`) so that,
  like a real LLM, it reads a connector's off-manifold, variable-rate output and can repeat what it hears;
  `AutoModelForCausalLM.from_pretrained("models/llm")`. {models["llm"]["bytes"] / 1e6:.1f} MB.
- `models/encoder`: a tiny Whisper ({models["encoder"]["parameters"]:,} encoder parameters, a one-layer decoder only so
  it loads like any Whisper) pre-trained with CTC over characters; `HFSpeechEncoder("models/encoder")`. The CTC
  head and its characters are `ctc_head.safetensors` and `ctc_vocab.json`. {models["encoder"]["bytes"] / 1e6:.1f} MB.

## Figures

```
{format_figures(report)}
```

## Build times (2 CPU threads)

| stage | wall s | CPU s |
|---|---|---|
{chr(10).join(stages)}
"""
