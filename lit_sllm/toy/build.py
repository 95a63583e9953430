"""Builds the toy world from one seed: speech and text shard sets, the toy LLM and encoder, MTBI teacher labels.

Layout of the output folder:

    asr/ st/ sqa/ dialog/ <split>/   speech sets, splits train, val and test; asr/train and asr/val also carry
                                     the toy LLM's teacher answers for MTBI (lit-sllm teacher, labelled in place)
    text/train/                      text-only chats (the text batches of joint SFT)
    text_eval/val/                   text-only questions on trained tasks (the forgetting callback)
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

from lit_sllm.data.shards import ShardSetWriter, StoredSample
from lit_sllm.data.teacher import TeacherSpec, label_shards
from lit_sllm.models.llm import LLMSpec
from lit_sllm.toy.encoder import ToyEncoderConfig, ctc_wer, train_encoder
from lit_sllm.toy.evaluate_llm import evaluate_llm, pseudo_speech_table
from lit_sllm.toy.language import Sentence, english_words, generate_sentences, sentence_stream
from lit_sllm.toy.pretrain_llm import ToyLLMConfig, train_llm
from lit_sllm.toy.report import SPLITS, world_readme, world_report
from lit_sllm.toy.speech import VOICES, ToySpeech, Utterance, Voice
from lit_sllm.toy.tasks import (
    ASR_PROMPTS,
    QUESTIONS,
    TASKS,
    chat_sample,
    text_chats,
    text_eval_set,
    write_task_set,
)

log = logging.getLogger(__name__)


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

    asr: dict[str, int] = field(default_factory=_split_counts(1600, 64, 64))
    st: dict[str, int] = field(default_factory=_split_counts(128, 32, 32))
    sqa: dict[str, int] = field(default_factory=_split_counts(128, 32, 32))
    dialog: dict[str, int] = field(default_factory=_split_counts(128, 32, 32))
    text: int = 2000
    text_eval_per_task: int = 6
    shard_size: int = 250


def _spoken(key: str, task: str, sentence: Sentence, utterance: Utterance, turns: list[dict]) -> StoredSample:
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


def asr_sample(sentence: Sentence, utterance: Utterance, key: str, rng: random.Random, _: Iterator) -> StoredSample:
    """user [speech, ASR prompt] -> the transcript."""
    return _spoken(key, "asr", sentence, utterance, _audio_first(rng.choice(ASR_PROMPTS), sentence.text))


def st_sample(sentence: Sentence, utterance: Utterance, key: str, rng: random.Random, _: Iterator) -> StoredSample:
    """user [speech, translation prompt] -> the sentence in tova."""
    task = TASKS["translate"]
    turns = _audio_first(rng.choice(task.phrasings), task.answer(sentence))
    return _spoken(key, "st", sentence, utterance, turns)


def sqa_sample(sentence: Sentence, utterance: Utterance, key: str, rng: random.Random, _: Iterator) -> StoredSample:
    """user [speech, a question about it] -> the answer; `toy_task` names the question's task, for checking."""
    task = TASKS[rng.choice(QUESTIONS)]
    meta, audio = _spoken(
        key, "sqa", sentence, utterance, _audio_first(rng.choice(task.phrasings), task.answer(sentence))
    )
    return meta | {"toy_task": task.name}, audio


def dialog_sample(
    sentence: Sentence, utterance: Utterance, key: str, rng: random.Random, more: Iterator[Sentence]
) -> StoredSample:
    """A 2-3 exchange chat whose first sentence is spoken; later sentences and all prompts are text."""
    turns = chat_sample(itertools.chain([sentence], more), key, rng)["turns"]
    first = turns[0]["parts"]
    turns[0]["parts"] = [{"audio": "flac"} if part == {"text": sentence.text} else part for part in first]
    return _spoken(key, "dialog", sentence, utterance, turns)


SpeechSampleBuilder = Callable[[Sentence, Utterance, str, random.Random, Iterator[Sentence]], StoredSample]
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


def write_set(folder: Path, name: str, samples: Iterator[StoredSample], shard_size: int) -> dict[str, Any]:
    """Writes one shard set; returns its index."""
    with ShardSetWriter(folder, name, shard_size) as writer:
        for meta, audio in samples:
            writer.write(meta, audio)
    return writer.index


def _speech_samples(
    name: str, split: str, sentences: list[Sentence], speech: ToySpeech, seed: int
) -> Iterator[StoredSample]:
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
    """Labels asr/train and asr/val in place with the toy LLM's answers to every seen task (MTBI's targets), so the
    speech is stored once for ASR and MTBI."""
    spec = TeacherSpec(LLMSpec(str(out / "models" / "llm")), str(out / "tasks.yaml"), 64, 32, seed, "cpu")
    return {f"asr/{split}": label_shards(str(out / "asr" / split), out / "asr" / split, spec) for split in SPLITS[:2]}


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
        "pseudo_speech": pseudo_speech_table(world / "models" / "llm", per_task=max(per_task // 5, 4), seed=seed),
        "encoder_wer": ctc_wer(world / "models" / "encoder", str(world / "asr" / "test")),
    }


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
