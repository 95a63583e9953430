"""Metrics: the shipped `evaluate` modules load offline and give the same numbers as jiwer/sacrebleu/rouge-score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from lit_sllm.metrics import METRICS, exact_match, load_metric, normalize_text, score
from lit_sllm.metrics.normalize import number_to_words
from lit_sllm.metrics.scoring import MODULES_DIR

# (prediction, reference): punctuation, case, numbers, an apostrophe, an empty hypothesis.
PAIRS = [
    ("The cat sat on the mat.", "the cat sat on the mat"),
    ("Hello, World! How are you?", "hello world how are you"),
    ("I have 42 apples and 3 pears", "i have forty two apples and three pears"),
    ("", "this hypothesis is empty"),
    ("It's a dog-friendly place", "it is a dog friendly place"),
    ("She bought 105 red balls", "she bought one hundred and five red balls"),
]
PREDICTIONS = [pred for pred, _ in PAIRS]
REFERENCES = [ref for _, ref in PAIRS]
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def _direct_rouge(predictions: list[str], references: list[str], use_stemmer: bool = False) -> dict[str, float]:
    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=use_stemmer)
    pairs = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return {name: sum(pair[name].fmeasure for pair in pairs) / len(pairs) for name in ROUGE_TYPES}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello,  WORLD!!", "hello world"),
        ("It's 42°C -- isn't it?", "it's forty two c isn't it"),
        ("'quoted' students’ rock ’n’ roll", "quoted students rock n roll"),
        ("forty-two e.g. snake_case", "forty two e g snake case"),
        ("1,000 or 3.5 or 007 or 1st", "1000 or three point five or 007 or 1st"),
        ("10:30, $5, 50%", "ten thirty five fifty"),
        ("Ça va? 你好。", "ça va 你好"),
        ("  \t\n ", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (105, "one hundred five"),
        (342, "three hundred forty two"),
        (999, "nine hundred ninety nine"),
    ],
)
def test_number_to_words(number: int, words: str) -> None:
    assert number_to_words(number) == words


def test_number_to_words_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="0..999"):
        number_to_words(1000)


def test_wer_is_jiwer_on_normalised_text() -> None:
    normalised = score("wer", PREDICTIONS, REFERENCES)
    direct = jiwer.wer([normalize_text(r) for r in REFERENCES], [normalize_text(p) for p in PREDICTIONS])
    # 4 deletions (empty hypothesis) + it's/it, is (2) + "and" (1) over 6+5+8+4+6+8 reference words.
    assert normalised == {"wer": direct} == {"wer": 7 / 37}
    assert score("wer", PREDICTIONS, REFERENCES, normalize=False) == {"wer": jiwer.wer(REFERENCES, PREDICTIONS)}


def test_bleu_is_sacrebleu_on_raw_text() -> None:
    assert score("bleu", PREDICTIONS, REFERENCES) == {"bleu": sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score}
    char_bleu = sacrebleu.metrics.BLEU(tokenize="char").corpus_score(PREDICTIONS, [REFERENCES]).score
    assert score("bleu", PREDICTIONS, REFERENCES, tokenize="char") == {"bleu": char_bleu}
    normalised = sacrebleu.corpus_bleu(
        [normalize_text(p) for p in PREDICTIONS], [[normalize_text(r) for r in REFERENCES]]
    )
    assert score("bleu", PREDICTIONS, REFERENCES, normalize=True) == {"bleu": normalised.score}


def test_rouge_is_rouge_score_mean_on_raw_text() -> None:
    result = score("rouge", PREDICTIONS, REFERENCES)
    assert result == _direct_rouge(PREDICTIONS, REFERENCES)
    assert set(result) == set(ROUGE_TYPES)
    stemmed = score("rouge", PREDICTIONS, REFERENCES, use_stemmer=True)
    assert stemmed == _direct_rouge(PREDICTIONS, REFERENCES, use_stemmer=True)


OFFLINE_LOAD = """
import json, socket, sys
import evaluate

def refuse(*args, **kwargs):
    raise OSError("network is off in this test")

socket.socket.connect = refuse
results = {}
for folder in sys.argv[1:]:
    name = folder.rsplit("/", 1)[-1]
    by_folder = evaluate.load(folder, keep_in_memory=True)
    by_file = evaluate.load(f"{folder}/{name}.py", keep_in_memory=True)
    pair = {"predictions": ["a b c"], "references": ["a b d"]}
    results[name] = [by_folder.compute(**pair), by_file.compute(**pair)]
print(json.dumps(results))
"""


def test_modules_load_by_path_offline_from_a_fresh_cache(tmp_path: Path) -> None:
    """A new process with sockets refused, HF_HUB_OFFLINE=1 and an empty HF_HOME loads every module by path."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_MODULES_CACHE", None)
    env.pop("PYTHONPATH", None)  # the modules need only evaluate and their library, not lit_sllm
    folders = [str(MODULES_DIR / spec.folder) for spec in METRICS.values()]
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD, *folders], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["wer"] == [{"wer": 1 / 3}] * 2
    assert results["bleu"][0] == results["bleu"][1] == {"bleu": sacrebleu.corpus_bleu(["a b c"], [["a b d"]]).score}
    assert results["rouge"][0] == results["rouge"][1] == _direct_rouge(["a b c"], ["a b d"])
    written = [path for path in (tmp_path / "hf").rglob("*") if path.is_file() and "modules" not in path.parts]
    assert written == [], "keep_in_memory loads must not write Arrow caches"


def test_layout_matches_package_data() -> None:
    """setup.cfg ships `metrics/modules/*/*.py`: each module must sit at `<folder>/<folder>.py`."""
    for spec in METRICS.values():
        assert (MODULES_DIR / spec.folder / f"{spec.folder}.py").is_file()


def test_load_metric_is_cached_and_names_unknown() -> None:
    assert load_metric("wer") is load_metric("wer")
    with pytest.raises(KeyError, match="choose one of \\['bleu', 'rouge', 'wer'\\]"):
        load_metric("cer")


def test_score_rejects_misaligned_and_empty() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score("wer", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="Nothing to score"):
        score("bleu", [], [])


def test_exact_match_after_normalisation() -> None:
    predictions = ["Yes.", "no", "Forty-two", "", "The cat"]
    references = ["yes", "No!", "42", "x", "the dog"]
    assert exact_match(predictions, references) == 3 / 5
