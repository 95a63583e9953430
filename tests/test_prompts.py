"""Assistant labels from the whole rendering: the label rule, templates it accepts and refuses, the template settings,
prompts that are the training rendering cut at the answer, and the toy world's encodings kept exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from template_helpers import ANSWERS, TURNS, template_text, template_tokenizer
from test_chat_templates import labelled_runs
from transformers import AutoTokenizer

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.batch import IGNORE_INDEX
from lit_sllm.data.chat_spans import MARKER, NOTHING, TEXT, follow_answer, last_run_start, locate_answers, token_labels
from lit_sllm.data.chat_template import FALLBACK_CHAT_TEMPLATE
from lit_sllm.data.collate import SampleEncoder, collate
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.data.schema import Sample
from lit_sllm.models.llm import LLMSpec, load_tokenizer

GOLDEN = Path(__file__).parent / "golden"


def read_labels(formatter: ChatFormatter, turns: list[dict]) -> list[str]:
    encoded = formatter.encode(turns)
    return [formatter.tokenizer.decode(encoded.input_ids[a:b]).lstrip() for a, b in labelled_runs(encoded.labels)]


# --- the label rule on strings ------------------------------------------------------------------------------------


def test_an_answer_repeating_its_question_is_found_after_the_question():
    rendering = "<u>say the cat<e><a>the cat<e>"
    (span,) = locate_answers(rendering, [("user", "say the cat"), ("assistant", "the cat")], [0, 0], ["<e>"])
    assert (rendering[span.start : span.text_end], rendering[span.text_end : span.end]) == ("the cat", "<e>")
    assert span.followed_by == MARKER


def test_what_follows_an_answer():
    markers = ["<|endoftext|>", "<|end|>"]
    assert follow_answer("hi \n<|endoftext|>x", 2, markers) == (len("hi \n<|endoftext|>"), MARKER)  # longest first
    assert follow_answer("hi \n", 2, markers) == (2, NOTHING)
    assert follow_answer("hi\nUser: more", 2, markers) == (2, TEXT)


def test_a_generation_prompt_sharing_the_answers_first_letters_does_not_hide_it():
    # the template writes " Assistant:" only in the generation prompt, so the prompt agrees with "User: q A" up to "A"
    rendering = "User: q ANSWER<e>"
    bound = len("User: q A")
    (span,) = locate_answers(rendering, [("user", "q"), ("assistant", "ANSWER")], [0, bound], ["<e>"])
    assert rendering[span.start : span.end] == "ANSWER<e>"


def test_a_token_straddling_the_answer_start_is_trained_and_the_header_is_not():
    offsets = [(0, 7), (7, 13), (13, 17), (17, 21)]  # "[/INST]", " Hello", "</s>", "[INS"
    assert token_labels([5, 6, 7, 8], offsets, [(8, 17)]) == [IGNORE_INDEX, 6, 7, IGNORE_INDEX]


def test_last_run_start():
    assert last_run_start([IGNORE_INDEX, 4, 5, IGNORE_INDEX, 6, 7, IGNORE_INDEX]) == 4
    assert last_run_start([1, 2]) == 0
    assert last_run_start([IGNORE_INDEX]) is None


# --- templates accepted, and how --------------------------------------------------------------------------------

OPEN_LAST_ANSWER = (  # GLM-style: a turn ends where the next header begins, so nothing follows the final answer
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
PLAIN_TEXT = (
    "{% for m in messages %}{{ 'User: ' if m['role'] == 'user' else 'Assistant: ' }}{{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
PARTS_ONLY = (  # iterates content parts: a string renders nothing, so only list-of-parts content works
    "{% for m in messages %}<|{{ m['role'] }}|>\n{% for p in m['content'] %}{{ p['text'] }}{% endfor %}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def test_a_final_answer_left_open_ends_with_the_token_written_after_earlier_answers():
    formatter = ChatFormatter(template_tokenizer(OPEN_LAST_ANSWER))
    assert read_labels(formatter, TURNS) == [ANSWERS[0] + "<|user|>", ANSWERS[1] + "<|user|>"]


def test_a_plain_text_format_trains_the_final_answer_to_end_with_eos():
    formatter = ChatFormatter(template_tokenizer(PLAIN_TEXT))
    assert read_labels(formatter, TURNS) == [ANSWERS[0], ANSWERS[1] + "</s>"]


def test_a_template_taking_only_lists_of_parts_gets_one_placeholder_per_audio_part():
    formatter = ChatFormatter(template_tokenizer(PARTS_ONLY))
    assert formatter.parts_content
    encoded = formatter.encode(TURNS)
    assert encoded.input_ids.count(formatter.audio_token_id) == 3 and encoded.audio_refs == ["a0", "a1", "a2"]
    assert read_labels(formatter, TURNS) == [answer + "<|end|>" for answer in ANSWERS]


def test_thinking_template_trains_and_prompts_with_the_empty_think_block():
    tokenizer = template_tokenizer(template_text("Qwen-Qwen3-0.6B"))
    for kwargs in (None, {"enable_thinking": False}):
        formatter = ChatFormatter(tokenizer, chat_template_kwargs=kwargs)
        unanswered = tokenizer.decode(formatter.encode_prompt(TURNS[:-1])[0].input_ids)
        assert unanswered.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert read_labels(formatter, TURNS) == [answer + "<|im_end|>" for answer in ANSWERS]


def test_template_kwargs_reach_the_template():
    template = "{% if greeting is defined %}<|system|>\n{{ greeting }}<|end|>\n{% endif %}" + FALLBACK_CHAT_TEMPLATE
    formatter = ChatFormatter(template_tokenizer(template), chat_template_kwargs={"greeting": "Hello there."})
    assert formatter.tokenizer.decode(formatter.encode(TURNS).input_ids).startswith("<|system|>\nHello there.<|end|>")


# --- templates refused, saying why ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "why"),
    [
        (
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | upper }}<|end|>{% endfor %}",
            "does not appear verbatim in the rendering",
        ),
        (
            "<|user|>Rate this chat:{% for m in messages %}\n{{ m['role'] }}: {{ m['content'] }}{% endfor %}"
            "\nIs it safe?<|end|>",
            "after the final answer instead of ending the turn",
        ),
        (
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'user' %} "
            "{{ m['content'] }}{% endif %}<|end|>{% endfor %}",
            "the template renders 2 audio placeholders for 1 audio parts",
        ),
        ("{% for m in messages %}{{ raise_exception('no chats here') }}{% endfor %}", "it raised TemplateError"),
    ],
)
def test_a_template_that_cannot_be_trained_on_is_refused_at_start(template, why):
    with pytest.raises(ConfigError, match="model.init_args.llm.chat_template: the chat template cannot") as err:
        ChatFormatter(template_tokenizer(template))
    assert why in str(err.value)


def test_a_plain_text_format_without_an_eos_token_is_refused():
    tokenizer = template_tokenizer(PLAIN_TEXT)
    tokenizer.eos_token = None
    with pytest.raises(ConfigError, match="no EOS token, so the model could not learn to stop"):
        ChatFormatter(tokenizer)


def test_a_template_kwarg_the_template_does_not_read_is_an_error():
    with pytest.raises(ConfigError, match=r"chat_template_kwargs\.enable_thinking is not read by the chat template"):
        ChatFormatter(template_tokenizer(FALLBACK_CHAT_TEMPLATE), chat_template_kwargs={"enable_thinking": False})


# --- llm.chat_template ------------------------------------------------------------------------------------------


def test_llm_chat_template_is_a_file_or_the_text(tiny_llm_dir, tmp_path):
    template = "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}<|end|>{% endfor %}"
    (tmp_path / "chat.jinja").write_text(template)
    assert (
        load_tokenizer(LLMSpec(str(tiny_llm_dir), chat_template=str(tmp_path / "chat.jinja"))).chat_template == template
    )
    assert load_tokenizer(LLMSpec(str(tiny_llm_dir), chat_template=template)).chat_template == template
    with pytest.raises(ConfigError, match="model.init_args.llm.chat_template: 'nope.jinja' is neither a file nor"):
        load_tokenizer(LLMSpec(str(tiny_llm_dir), chat_template="nope.jinja"))


# --- prompts are the training rendering cut at the answer ---------------------------------------------------------

DIALOGUE = [
    {"role": "user", "parts": [{"audio": "a0"}, {"text": "what colour is the ball"}]},
    {"role": "assistant", "parts": [{"text": "blue"}]},
    {"role": "user", "parts": [{"text": "and the box"}]},
    {"role": "assistant", "parts": [{"text": "red"}]},
    {"role": "user", "parts": [{"text": "say the cat"}]},
    {"role": "assistant", "parts": [{"text": "the cat"}]},
]


def _formatters() -> dict[str, ChatFormatter]:
    toy = AutoTokenizer.from_pretrained(GOLDEN / "toy_tokenizer")
    named = [
        "Qwen-Qwen3-0.6B",
        "meta-llama-Llama-3.1-8B-Instruct",
        "google-gemma-2-2b-it",
        "mistralai-Mistral-7B-Instruct-v0.3",
    ]
    return {"fallback": ChatFormatter(toy)} | {n: ChatFormatter(template_tokenizer(template_text(n))) for n in named}


@pytest.mark.parametrize(
    "name",
    [
        "fallback",
        "Qwen-Qwen3-0.6B",
        "meta-llama-Llama-3.1-8B-Instruct",
        "google-gemma-2-2b-it",
        "mistralai-Mistral-7B-Instruct-v0.3",
    ],
)
def test_training_and_evaluation_prompts_agree_on_multi_turn_dialogues(name):
    formatter = _formatters()[name]
    trained = formatter.encode(DIALOGUE)
    before_answer = trained.input_ids[: last_run_start(trained.labels)]
    prompt, reference = formatter.encode_prompt(DIALOGUE)
    assert prompt.input_ids == before_answer and reference == "the cat"
    assert formatter.encode_prompt(DIALOGUE[:-1])[0].input_ids == before_answer  # no answer yet: a stand-in is cut
    assert formatter.encode(DIALOGUE[:-1], add_generation_prompt=True).input_ids == before_answer
    sample = Sample("k", "dialog", DIALOGUE, audio={"a0": (torch.zeros(160), 16000)})
    encoded = SampleEncoder(formatter, 16000, prompt_view=True)(sample, random.Random(0))
    batch = collate([encoded], "dialog", 0)
    assert batch.input_ids[0].tolist() == trained.input_ids and batch.num_target_tokens() > 0
    prompts = batch.generation_view()
    assert prompts.input_ids[0].tolist() == before_answer and prompts.references == ["the cat"]
    assert prompts.num_target_tokens() == 0 and prompts.audio.shape[0] == 1  # the clip sits in the prompt


# --- the toy world keeps its encodings --------------------------------------------------------------------------


def test_fallback_template_encodes_toy_conversations_exactly_as_before():
    formatter = ChatFormatter(AutoTokenizer.from_pretrained(GOLDEN / "toy_tokenizer"))
    rows = json.loads((GOLDEN / "fallback_encodings.json").read_text())
    assert len(rows) == 24 and sum(len(row["turns"]) > 2 for row in rows) >= 4
    for row in rows:
        for train_on in ("assistant", "last"):
            encoded = formatter.encode(row["turns"], train_on=train_on)
            assert [encoded.input_ids, encoded.labels, encoded.audio_refs] == list(row[train_on].values())
        prompt, reference = formatter.encode_prompt(row["turns"])
        assert [prompt.input_ids, prompt.audio_refs, reference] == list(row["prompt"].values())
        history = row["turns"][:-1] if row["turns"][-1]["role"] == "assistant" else row["turns"]
        encoded = formatter.encode(history, add_generation_prompt=True)
        assert [encoded.input_ids, encoded.labels, encoded.audio_refs] == list(row["history_prompt"].values())
