"""Builds the toy world from one seed: speech and text shard sets, the toy LLM and encoder, MTBI teacher labels.

Layout of the output folder:

    asr/ st/ sqa/ dialog/ <split>/   speech sets, splits train, val and test
    text/train/                      text-only chats (the text batches of joint SFT)
    text_eval/val/                   text-only questions on trained tasks (the forgetting callback)
    mtbi/train/ mtbi/val/            asr/train and asr/val with the toy LLM's teacher answers
    models/llm/ models/encoder/      loaded with `from_pretrained(path)` like hub models
    tasks.yaml                       the MTBI task set of the toy tasks
    report.json README.md            measured figures and build times

Sentences, speech and samples are drawn from seeded generators keyed by sample, so a rebuild with the same seed
writes the same shards.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lit_sllm.data.shards import Sample as ShardSample
from lit_sllm.data.shards import ShardSetWriter
from lit_sllm.data.teacher import TeacherSpec, label_shards
from lit_sllm.toy.encoder import ToyEncoderConfig, ctc_wer, train_encoder
from lit_sllm.toy.evaluate_llm import evaluate_llm
from lit_sllm.toy.language import Sentence, english_words, generate_sentences, sentence_stream
from lit_sllm.toy.pretrain_llm import ToyLLMConfig, train_llm
from lit_sllm.toy.speech import VOICES, ToySpeech, Utterance, Voice
from lit_sllm.toy.tasks import (
    ASR_PROMPTS,
    QUESTIONS,
    TASKS,
    chat_sample,
    held_out_tasks,
    single_tasks,
    text_chats,
    text_eval_set,
    write_task_set,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _split_counts(train: int, val: int, test: int) -> Callable[[], dict[str, int]]:
    return lambda: {"train": train, "val": val, "test": test}


@dataclass
class WorldSizes:
    """How many samples each set holds (the defaults keep the committed world under 60 MB with its models).

    Attributes:
        asr: ASR utterances per split.
        st: speech translation (into tova) utterances per split.
        sqa: spoken question answering utterances per split.
        dialog: mixed-modal dialogues (first user sentence spoken) per split.
        text: text-only chats (train only).
        text_eval_per_task: text-only eval questions per trained task (val only).
        shard_size: samples per shard file.
    """

    asr: dict[str, int] = field(default_factory=_split_counts(720, 64, 64))
    st: dict[str, int] = field(default_factory=_split_counts(128, 32, 32))
    sqa: dict[str, int] = field(default_factory=_split_counts(128, 32, 32))
    dialog: dict[str, int] = field(default_factory=_split_counts(128, 32, 32))
    text: int = 2000
    text_eval_per_task: int = 6
    shard_size: int = 250


def _spoken(key: str, task: str, sentence: Sentence, utterance: Utterance, turns: list[dict]) -> ShardSample:
    """A one-clip speech sample with its transcript, exact word times and duration."""
    meta = {
        "key": key,
        "task": task,
        "transcript": sentence.text,
        "words": [list(word) for word in utterance.words],
        "duration": round(utterance.duration, 5),
        "turns": turns,
    }
    return meta, {"flac": utterance.flac()}


def _audio_first(prompt: str, answer: str) -> list[dict]:
    """user [audio, prompt] -> assistant [answer]."""
    return [
        {"role": "user", "parts": [{"audio": "flac"}, {"text": prompt}]},
        {"role": "assistant", "parts": [{"text": answer}]},
    ]


def asr_sample(sentence: Sentence, utterance: Utterance, key: str, rng: random.Random, _: Iterator) -> ShardSample:
    """user [speech, ASR prompt] -> the transcript."""
    return _spoken(key, "asr", sentence, utterance, _audio_first(rng.choice(ASR_PROMPTS), sentence.text))


def st_sample(sentence: Sentence, utterance: Utterance, key: str, rng: random.Random, _: Iterator) -> ShardSample:
    """user [speech, translation prompt] -> the sentence in tova."""
    task = TASKS["translate"]
    turns = _audio_first(rng.choice(task.phrasings), task.answer(sentence))
    return _spoken(key, "st", sentence, utterance, turns)


def sqa_sample(sentence: Sentence, utterance: Utterance, key: str, rng: random.Random, _: Iterator) -> ShardSample:
    """user [speech, a question about it] -> the answer; `toy_task` names the question's task, for checking."""
    task = TASKS[rng.choice(QUESTIONS)]
    meta, audio = _spoken(
        key, "sqa", sentence, utterance, _audio_first(rng.choice(task.phrasings), task.answer(sentence))
    )
    return meta | {"toy_task": task.name}, audio


def dialog_sample(
    sentence: Sentence, utterance: Utterance, key: str, rng: random.Random, more: Iterator[Sentence]
) -> ShardSample:
    """A 2-3 exchange chat whose first sentence is spoken; later sentences and all prompts are text."""
    turns = chat_sample(itertools.chain([sentence], more), key, rng)["turns"]
    first = turns[0]["parts"]
    turns[0]["parts"] = [{"audio": "flac"} if part == {"text": sentence.text} else part for part in first]
    return _spoken(key, "dialog", sentence, utterance, turns)


SpeechSampleBuilder = Callable[[Sentence, Utterance, str, random.Random, Iterator[Sentence]], ShardSample]
SPEECH_SETS: dict[str, SpeechSampleBuilder] = {
    "asr": asr_sample,
    "st": st_sample,
    "sqa": sqa_sample,
    "dialog": dialog_sample,
}


def speech_sentences(sizes: WorldSizes, seed: int) -> dict[tuple[str, str], list[Sentence]]:
    """(set, split) -> distinct sentences of that split; no sentence is spoken in two speech sets."""
    allocated = {}
    for split in SPLITS:
        counts = {name: getattr(sizes, name).get(split, 0) for name in SPEECH_SETS}
        sentences = iter(generate_sentences(sum(counts.values()), seed, split))
        allocated |= {(name, split): list(itertools.islice(sentences, count)) for name, count in counts.items()}
    return allocated


def write_set(folder: Path, name: str, samples: Iterator[ShardSample], shard_size: int) -> dict[str, Any]:
    """Writes one shard set; returns its index."""
    with ShardSetWriter(folder, name, shard_size) as writer:
        for meta, audio in samples:
            writer.write(meta, audio)
    return writer.index


def _speech_samples(
    name: str, split: str, sentences: list[Sentence], speech: ToySpeech, seed: int
) -> Iterator[ShardSample]:
    more = sentence_stream(seed + 1, split)  # later sentences of dialogues
    for index, sentence in enumerate(sentences):
        key = f"toy-{name}-{split}-{index:06d}"
        rng = random.Random(f"toy-world/{seed}/{key}")
        yield SPEECH_SETS[name](sentence, speech.speak(sentence.words, rng), key, rng, more)


def write_speech_sets(out: Path, speech: ToySpeech, sizes: WorldSizes, seed: int) -> dict[str, dict]:
    """Writes every speech set under `out/<set>/<split>/`; returns "<set>/<split>" -> index."""
    indexes = {}
    for (name, split), sentences in speech_sentences(sizes, seed).items():
        if sentences:
            samples = _speech_samples(name, split, sentences, speech, seed)
            indexes[f"{name}/{split}"] = write_set(out / name / split, f"{name}-{split}", samples, sizes.shard_size)
    return indexes


def write_text_sets(out: Path, sizes: WorldSizes, seed: int) -> dict[str, dict]:
    """Writes `text/train` (chats, task "text") and `text_eval/val` (one question per sample, task = toy task)."""
    chats = ((chat | {"task": "text"}, {}) for chat in text_chats(sizes.text, seed))
    questions = ((sample, {}) for sample in text_eval_set(sizes.text_eval_per_task, seed))
    return {
        "text/train": write_set(out / "text" / "train", "text-train", chats, sizes.shard_size),
        "text_eval/val": write_set(out / "text_eval" / "val", "text_eval-val", questions, sizes.shard_size),
    }


def run_teacher(out: Path, seed: int) -> dict[str, dict]:
    """Labels asr/train and asr/val with the toy LLM's answers to every seen task into mtbi/train and mtbi/val."""
    spec = TeacherSpec(str(out / "models" / "llm"), str(out / "tasks.yaml"), 64, 32, seed, "cpu")
    return {f"mtbi/{split}": label_shards(str(out / "asr" / split), out / "mtbi" / split, spec) for split in SPLITS[:2]}


def measure_world(world: str | Path, seed: int = 0, per_task: int = 50) -> dict[str, Any]:
    """The world's figures: the LLM's accuracy per text task (test sentences) and the encoder's WER on asr/test."""
    world = Path(world)
    missing = [p for p in ("models/llm", "models/encoder", "asr/test") if not (world / p).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{world / missing[0]} does not exist: {world} is not a toy world; build one with `lit-sllm toy build`."
        )
    return {
        "llm_accuracy": evaluate_llm(world / "models" / "llm", per_task=per_task, seed=seed),
        "encoder_wer": ctc_wer(world / "models" / "encoder", str(world / "asr" / "test")),
    }


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class StageClock:
    """Runs build stages and records the wall-clock and CPU seconds (this process, all threads) each took.

    CPU seconds tell a stage's cost apart from the machine's load: on an idle 2-core machine a stage's wall time is
    about its CPU time divided by the threads it keeps busy.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        log.info("toy build: %s ...", stage)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        self.seconds[stage] = round(time.perf_counter() - start, 1)
        self.cpu_seconds[stage] = round(time.process_time() - cpu_start, 1)
        log.info("toy build: %s done in %.1f s (%.1f CPU s)", stage, self.seconds[stage], self.cpu_seconds[stage])
        return result


def _log_like_parent(level: int) -> None:
    """Gives a spawned worker the parent's log level and format, so its progress lines show too."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")


def _check_empty(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: delete it (or pass another --out) to build the toy world there.")


def build_world(
    out: str | Path,
    seed: int = 0,
    sizes: WorldSizes | None = None,
    llm_config: ToyLLMConfig | None = None,
    encoder_config: ToyEncoderConfig | None = None,
    voices: tuple[Voice, ...] = VOICES,
    eval_per_task: int = 50,
) -> dict[str, Any]:
    """Builds the whole toy world into `out` (which must be empty or absent) and returns its report.

    Args:
        out: the world's folder.
        seed: seeds every sentence, utterance, sample and model.
        sizes: samples per set and split.
        llm_config: size and schedule of the toy LLM.
        encoder_config: size and schedule of the toy encoder.
        voices: espeak-ng voice settings of the speech.
        eval_per_task: test questions per task when the LLM's accuracy is measured.

    Returns:
        The report also written to `out/report.json`: sets, model figures, measured figures, seconds per stage.
    """
    out, sizes, clock = Path(out), sizes or WorldSizes(), StageClock()
    _check_empty(out)
    # The LLM trains in a process of its own (one core) while this one writes the sets and trains the encoder.
    with ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_log_like_parent,
        initargs=(logging.getLogger().level,),
    ) as pool:
        llm_start = time.perf_counter()
        llm_job = pool.submit(train_llm, out / "models" / "llm", seed, llm_config)
        speech = clock.run("speech", ToySpeech, english_words(), voices)
        sets = clock.run("speech_sets", write_speech_sets, out, speech, sizes, seed)
        sets |= clock.run("text_sets", write_text_sets, out, sizes, seed)
        write_task_set(out / "tasks.yaml")
        encoder = clock.run("encoder", train_encoder, out / "models" / "encoder", speech, seed, encoder_config)
        llm = clock.run("llm_wait", llm_job.result)  # what the LLM still needed once the encoder was done
        llm["parallel_seconds"] = round(time.perf_counter() - llm_start, 1)
    sets |= clock.run("teacher", run_teacher, out, seed)
    figures = clock.run("measure", measure_world, out, seed, eval_per_task)
    report = world_report(out, seed, sets, {"llm": llm, "encoder": encoder}, figures, clock)
    report["voices"] = [asdict(voice) for voice in voices]
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "README.md").write_text(world_readme(report))
    return report


def _set_order(name: str) -> tuple[str, int]:
    """ "asr/train" -> ("asr", 0): sets by name, splits in train, val, test order."""
    set_name, split = name.split("/")
    return set_name, SPLITS.index(split)


def world_report(
    out: Path, seed: int, sets: dict[str, dict], models: dict[str, dict], figures: dict, clock: StageClock
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
        "llm_accuracy": figures["llm_accuracy"],
        "encoder_wer": figures["encoder_wer"],
        "seconds": clock.seconds | {"total": round(sum(clock.seconds.values()), 1)},
        "cpu_seconds": clock.cpu_seconds | {"total": round(sum(clock.cpu_seconds.values()), 1)},
        "total_bytes": folder_bytes(out),
    }


SET_DESCRIPTIONS = {
    "asr": "user [speech, ASR prompt] -> transcript",
    "st": "user [speech, translation prompt] -> the sentence in tova",
    "sqa": "user [speech, question of a trained task] -> answer (`toy_task` names the task)",
    "dialog": "2-3 exchanges; the first sentence is speech, later sentences and prompts are text",
    "text": "text-only chats of 2-3 exchanges over trained tasks (joint SFT text batches)",
    "text_eval": "text-only questions on trained tasks, task = toy task (forgetting callback)",
    "mtbi": "asr with the toy LLM's answers to every seen task in `responses` (lit-sllm teacher)",
}


def format_figures(figures: dict[str, Any]) -> str:
    """The LLM's accuracy per group and task, and the encoder's WER, as aligned text lines."""
    lines = ["toy LLM accuracy (greedy answers to test sentences):"]
    for group, result in figures["llm_accuracy"].items():
        lines.append(f"  {group:<28}{result['mean']:>8.1%}")
        lines += [f"    {task:<26}{value:>8.1%}" for task, value in result["tasks"].items()]
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
  the trained tasks; `AutoModelForCausalLM.from_pretrained("models/llm")`. {models["llm"]["bytes"] / 1e6:.1f} MB.
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
