"""The toy tokenizer: one token per word of the toy world, trained with `tokenizers` and saved like any HF tokenizer.

Text is lower-cased, split into words and punctuation marks, and each known word is one token (unknown words become
`<|unk|>`). Decoding joins words with spaces and re-attaches punctuation, so toy text round-trips exactly. The chat
template is the suite's fallback template, whose `<|end|>` tag doubles as end-of-sequence so generation stops at the
end of an assistant turn.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lit_sllm.data.prompts import DEFAULT_AUDIO_TOKEN, FALLBACK_CHAT_TEMPLATE
from lit_sllm.toy.language import english_words, second_language
from lit_sllm.toy.tasks import COPY_PROMPTS, single_tasks, training_samples

PAD, UNK, BOS, EOS, END = "<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>", "<|end|>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, "<|user|>", "<|assistant|>", "<|system|>", END, DEFAULT_AUDIO_TOKEN)


def corpus(seed: int, samples: int = 2000) -> Iterator[str]:
    """The text the tokenizer learns from: every word of both languages, every prompt, and sample texts."""
    yield " ".join(english_words())
    yield " ".join(second_language().vocabulary.values())
    yield from COPY_PROMPTS
    for task in single_tasks():
        yield from task.phrasings + task.held_out_phrasings
    for sample in itertools.islice(training_samples(seed), samples):
        yield " ".join(part["text"] for turn in sample["turns"] for part in turn["parts"])


def train_tokenizer(seed: int = 0) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of the toy world; special tokens take ids 0-8 in `SPECIAL_TOKENS` order."""
    backend = Tokenizer(models.WordLevel(unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    backend.train_from_iterator(corpus(seed), trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=END,
        additional_special_tokens=[token for token in SPECIAL_TOKENS if token not in {PAD, UNK, BOS, END}],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def build_tokenizer(out_dir: str | Path, seed: int = 0) -> PreTrainedTokenizerFast:
    """Trains the toy tokenizer and saves it with `save_pretrained` into `out_dir`."""
    tokenizer = train_tokenizer(seed)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
