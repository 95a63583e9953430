"""Tiny random models built locally from HF configs: no downloads anywhere in the suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

WORDS = (
    "the a red blue green cat dog box ball one two three four five is on in under big small what colour "
    "transcribe say answer yes no please hello world"
).split()
SPECIALS = ["<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lit_sllm.data.prompts import FALLBACK_CHAT_TEMPLATE

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        bos_token="<|bos|>",
        eos_token="<|end|>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>", "<|eos|>"],
    )
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def _llm_config(family: str, vocab_size: int):
    from transformers import GemmaConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.3,  # a frozen random head needs room for confident logits
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=7,
    )
    families = {
        "llama": lambda: LlamaConfig(**common),
        "qwen2": lambda: Qwen2Config(**common),
        "gemma": lambda: GemmaConfig(**common, head_dim=8),
    }
    return families[family]()


def build_llm(folder: Path, family: str = "llama", seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_llm_config(family, len(tokenizer)))
    model.save_pretrained(folder)
    return folder


def whisper_config(max_source_positions: int = 400):
    """A tiny Whisper; `max_source_positions` sets its window (positions x 2 mel frames x 160-sample hop)."""
    from transformers import WhisperConfig

    return WhisperConfig(
        num_mel_bins=16,
        d_model=24,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=48,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=16,
        max_source_positions=max_source_positions,
        max_target_positions=16,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


def build_whisper(folder: Path, seed: int = 0) -> Path:
    from transformers import WhisperModel

    torch.manual_seed(seed)
    WhisperModel(whisper_config()).save_pretrained(folder)
    return folder


def wav2vec2_config(config_class, feat_extract_norm: str = "layer"):
    """A tiny wav2vec2-family config (`config_class`: HubertConfig, Wav2Vec2Config, ...)."""
    return config_class(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=feat_extract_norm == "layer",
        mask_time_prob=0.0,
    )


def build_wav2vec2_family(folder: Path, model_type: str = "hubert", seed: int = 0) -> Path:
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    families = {
        "hubert": lambda: HubertModel(wav2vec2_config(HubertConfig)),
        "wav2vec2": lambda: Wav2Vec2Model(wav2vec2_config(Wav2Vec2Config)),
    }
    families[model_type]().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """The tiny word-level chat tokenizer, saved once for the data tests."""
    folder = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_llm(tmp_path_factory.mktemp("tiny_llama"), "llama")


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    return build_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="session")
def tiny_hubert_dir(tmp_path_factory) -> Path:
    return build_wav2vec2_family(tmp_path_factory.mktemp("tiny_hubert"), "hubert")
