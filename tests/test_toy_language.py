"""The toy world's language, tasks, tokenizer and LLM pre-training: deterministic, held-out data never trained on,
exact checkers, a lossless tokenizer and a pre-training loop that learns."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_sllm.data.batch import IGNORE_INDEX
from lit_sllm.data.prompts import FALLBACK_CHAT_TEMPLATE, ChatFormatter
from lit_sllm.data.schema import parse_meta
from lit_sllm.data.tasks import TaskSet
from lit_sllm.toy.language import (
    LEXICON,
    Agent,
    Sentence,
    Thing,
    english_words,
    generate_sentences,
    parse_sentence,
    second_language,
    sentence_stream,
)
from lit_sllm.toy.pretrain_llm import ToyLLMConfig, build_llm, build_model, pretrain, training_batches
from lit_sllm.toy.tasks import (
    ASR_PROMPTS,
    HELD_OUT_PAIRS,
    TASKS,
    benchmark_tasks,
    check_answer,
    held_out_tasks,
    single_tasks,
    text_chats,
    text_eval_set,
    trained_pairs,
    training_samples,
    write_task_set,
)
from lit_sllm.toy.tokenizer import SPECIAL_TOKENS, train_tokenizer

CAT = Sentence(Agent("cat", "big"), "finds", (Thing(2, "blue", "ball"),), ("in", "garden"))
ANNA = Sentence(Agent("anna"), "paints", (Thing(1, "red", "box"), Thing(3, "green", "cup")))


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(seed=0)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _user_prompts(sample: dict) -> list[str]:
    return [turn["parts"][0]["text"] for turn in sample["turns"] if turn["role"] == "user"]


def test_sentences_are_deterministic_short_and_parse_back():
    first, again, other = generate_sentences(300, 3), generate_sentences(300, 3), generate_sentences(300, 4)
    assert [s.text for s in first] == [s.text for s in again]
    assert [s.text for s in first] != [s.text for s in other]
    assert len({s.text for s in first}) == 300
    for sentence in first:
        assert 5 <= len(sentence.words) <= 11
        assert set(sentence.words) <= set(LEXICON)
        assert sentence.text == " ".join(sentence.words)
        assert parse_sentence(sentence.text) == sentence
    assert CAT.text == "the big cat finds two blue balls in the garden"
    assert ANNA.text == "anna paints a red box and three green cups"


def test_parse_sentence_names_the_word_that_breaks_the_template():
    with pytest.raises(ValueError, match=r"expected a colour at word 6 .* got 'happy'"):
        parse_sentence("the big cat finds two happy balls")
    with pytest.raises(ValueError, match="end of the sentence"):
        parse_sentence("tom finds a red ball in the garden today")


def test_splits_are_fixed_by_text_and_disjoint():
    test = generate_sentences(100, 0, "test")
    assert all(s.split == "test" for s in test)
    train = {s.text for s in itertools.islice(sentence_stream(0, "train"), 3000)}
    assert train.isdisjoint(s.text for s in test)
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        next(sentence_stream(0, "dev"))


def test_second_language_is_seeded_and_applies_its_order_rules():
    tova = second_language()
    assert tova.vocabulary == second_language.__wrapped__(0).vocabulary
    assert tova.vocabulary != second_language.__wrapped__(1).vocabulary
    coined = [word for lemma, word in tova.vocabulary.items() if lemma != word]
    assert len(set(coined)) == len(coined) and set(coined).isdisjoint(english_words())
    w = tova.word
    expected = ["the", "cat", "big", "balls", "blue", "two", "the", "garden", "in", "finds"]  # verb last
    assert tova.translate(CAT.words) == [w(word) for word in expected]
    assert tova.translate("then anna drops them".split()) == [w("then"), "anna", w("them"), w("drops")]
    assert w("balls") == w("ball")
    with pytest.raises(ValueError, match="'happy' is not a toy word"):
        tova.translate(["happy"])


def test_answers_follow_from_the_sentence():
    answers = {name: TASKS[name].answer(CAT) for name in ("colour", "count", "place", "agent", "action")}
    assert answers == dict(colour="blue", count="two", place="in the garden", agent="the big cat", action="finds")
    assert TASKS["continuation"].answer(CAT) == "then the cat takes them"
    assert TASKS["keywords"].answer(ANNA) == "anna box cup"
    assert TASKS["count"].answer(ANNA) == "four"
    assert TASKS["colour"].answer(ANNA) == "red and green"
    assert TASKS["place"].answer(ANNA) == "unknown"
    assert TASKS["continuation"].answer(ANNA) == "then anna washes them"
    assert TASKS["keywords+colour"].answer(ANNA) == "anna box cup ; red and green"


def test_checkers_accept_right_answers_and_reject_wrong_ones():
    sentences = generate_sentences(40, 5, "test")
    for task in benchmark_tasks():
        for sentence, other in zip(sentences, sentences[1:]):
            reference, wrong = task.answer(sentence), task.answer(other)
            assert task.check(reference, reference)
            assert task.check(wrong, reference) == (wrong == reference), task.name
    assert check_answer("keywords", "cup anna box", "anna box cup")
    assert check_answer("count", "4", "four") and not check_answer("count", "five", "four")
    assert check_answer("colour", "Red and green.", "red and green")
    assert not check_answer("colour", "red", "red and green")
    assert check_answer("keywords+colour", "box anna cup; green and red", "anna box cup ; red and green")
    assert not check_answer("keywords+colour", "anna box cup red and green", "anna box cup ; red and green")
    with pytest.raises(KeyError, match="'poem' is not a toy task"):
        check_answer("poem", "a", "a")


def test_registry_keeps_held_out_phrasings_apart():
    trained_phrasings = {p for task in TASKS.values() for p in task.phrasings}
    for task in TASKS.values():
        assert task.phrasings and task.held_out_phrasings
        assert trained_phrasings.isdisjoint(task.held_out_phrasings), task.name
    assert {task.name for task in held_out_tasks()} == {f"{a}+{b}" for a, b in HELD_OUT_PAIRS}
    trained = {task.name for task in trained_pairs()}
    for a, b in HELD_OUT_PAIRS:  # each half of a held-out pair is trained in other pairs, in the same position
        assert f"{b}+{a}" in trained
        assert any(name.startswith(f"{a}+") for name in trained) and any(name.endswith(f"+{b}") for name in trained)


def test_training_data_never_holds_held_out_tasks_or_phrasings():
    samples = list(itertools.islice(training_samples(0), 3000)) + text_chats(200, 0)
    trained = {p for task in TASKS.values() if not task.held_out for p in task.phrasings}
    held_out = {p for task in TASKS.values() for p in task.held_out_phrasings}
    held_out |= {p for task in held_out_tasks() for p in task.phrasings}
    assert not {s["task"] for s in samples} & {task.name for task in held_out_tasks()}
    prompts = [p for s in samples for p in _user_prompts(s)]
    assert set(prompts) <= trained and not set(prompts) & held_out
    assert {s["task"] for s in samples} >= {task.name for task in single_tasks()} | {"chat"}
    seen_words = {w for s in samples for turn in s["turns"] for part in turn["parts"] for w in _words(part["text"])}
    unseen_words = {w for p in held_out for w in _words(p)} - seen_words
    assert not unseen_words, "held-out phrasings should only reword known words"


def test_text_sets_follow_the_schema():
    chats, evals = text_chats(30, 1), text_eval_set(3, 1)
    assert chats == text_chats(30, 1)
    assert len(evals) == 3 * len(single_tasks()) and len({s["key"] for s in evals}) == len(evals)
    for sample in chats + evals:
        meta = parse_meta(sample, key=sample["key"])
        assert meta["turns"][-1]["role"] == "assistant"
    assert {len(c["turns"]) for c in chats} == {4, 6}
    for sample in evals:
        sentence = parse_sentence(sample["turns"][0]["parts"][1]["text"])
        assert sentence.split == "val"
        assert TASKS[sample["task"]].answer(sentence) == sample["turns"][1]["parts"][0]["text"]


def test_task_set_yaml_round_trips(tmp_path):
    loaded = TaskSet.load(write_task_set(tmp_path / "toy_tasks.yaml"))
    assert list(loaded.tasks) == [task.name for task in benchmark_tasks()]
    assert {t.name for t in loaded.unseen} == {f"{a}+{b}" for a, b in HELD_OUT_PAIRS}
    assert loaded.tasks["colour"].held_out_prompts == list(TASKS["colour"].held_out_phrasings)


def test_tokenizer_round_trips_toy_text_and_saves(tokenizer, tmp_path):
    assert tokenizer.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token) == ("<|pad|>", "<|end|>", "<|bos|>")
    texts = [s.text for s in generate_sentences(50, 2, "test")] + list(ASR_PROMPTS)
    texts += [t.answer(s) for t in benchmark_tasks() for s in generate_sentences(3, 2, "test")]
    texts += [p for t in single_tasks() for p in t.phrasings + t.held_out_phrasings]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids) == text
    assert tokenizer("Transcribe the Audio.")["input_ids"] == tokenizer("transcribe the audio.")["input_ids"]
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == FALLBACK_CHAT_TEMPLATE
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert train_tokenizer(seed=0).get_vocab() == tokenizer.get_vocab()


def test_chat_template_trains_on_answers_only(tokenizer):
    formatter = ChatFormatter(tokenizer)
    sample = text_eval_set(1, 0)[0]
    encoded = formatter.encode(sample["turns"])
    answer_ids = [i for i in encoded.labels if i != IGNORE_INDEX]
    assert tokenizer.decode(answer_ids, skip_special_tokens=True) == sample["turns"][1]["parts"][0]["text"]
    assert answer_ids[-1] == tokenizer.eos_token_id  # the model learns to stop
    assert formatter.audio_token_id == tokenizer.convert_tokens_to_ids("<|audio|>") < len(tokenizer)
    text = tokenizer.decode(encoded.input_ids)
    assert text.startswith("<|user|> " + sample["turns"][0]["parts"][0]["text"]) and "<|assistant|>" in text


def test_build_llm_lowers_the_loss_saves_a_loadable_llm_and_scores_it(tmp_path):
    config = ToyLLMConfig(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, steps=30, batch_size=16, lr=1e-2
    )
    config.warmup_steps = 3
    figures = build_llm(tmp_path, seed=0, config=config, eval_per_task=1)
    assert figures["final_loss"] < figures["first_loss"] - 1.0
    assert figures["steps"] == 30 and figures["parameters"] < 50_000
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|end|>")
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id == 0
    assert model.config.vocab_size == len(tokenizer)
    report = figures["accuracy"]
    assert 0 < figures["size_mb"] < 1
    assert set(report) == {"trained", "held_out_phrasings", "held_out_tasks"}
    assert set(report["held_out_tasks"]["tasks"]) == {f"{a}+{b}" for a, b in HELD_OUT_PAIRS}
    assert all(0.0 <= value <= 1.0 for group in report.values() for value in group["tasks"].values())


def test_pretraining_repeats_exactly_for_a_seed(tokenizer):
    config = ToyLLMConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, steps=3, batch_size=8)
    runs = [pretrain(build_model(tokenizer, config, 0), ChatFormatter(tokenizer), config, 0) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 3


def test_training_batches_are_deterministic(tokenizer):
    config = ToyLLMConfig(batch_size=8)
    formatter = ChatFormatter(tokenizer)
    first = list(itertools.islice(training_batches(formatter, config, 0), 3))
    again = list(itertools.islice(training_batches(formatter, config, 0), 3))
    for a, b in zip(first, again):
        assert all(torch.equal(a[key], b[key]) for key in a if key != "plans") and a["plans"] == b["plans"]
        assert (a["labels"][a["attention_mask"] == 0] == IGNORE_INDEX).all()
        placeholders = int((a["input_ids"] == formatter.audio_token_id).sum())
        assert placeholders == len(a["plans"]) > 0  # every sentence is read as pseudo-speech
