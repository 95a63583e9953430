"""Random-init benchmark models: a word-level tokenizer, a Llama-shaped LLM and a Whisper-shaped encoder.

Only configs and the tokenizer are written to a folder; the modules are built from them with `load_weights=False`,
exactly as a real run builds its LLM and encoder from a path, but without downloading or saving any weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast, WhisperConfig

from lit_sllm.data.prompts import FALLBACK_CHAT_TEMPLATE
from lit_sllm.models.adapters import FrameStackMLP
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.llm import LLMSpec, LoraSpec
from lit_sllm.modules.base import SpeechLLMModule
from lit_sllm.modules.optim import OptimSpec

SPECIALS = ["<|pad|>", "<|unk|>", "<|bos|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


@dataclass(frozen=True)
class ModelSize:
    """Shapes of a benchmark speech LLM.

    Attributes:
        llm_hidden: LLM hidden size.
        llm_layers: LLM decoder layers.
        llm_heads: LLM attention heads.
        llm_kv_heads: LLM key/value heads (grouped-query attention).
        llm_intermediate: LLM MLP width.
        vocab_size: LLM vocabulary (the tokenizer fills it with synthetic words).
        encoder_dim: Whisper-shaped encoder width (d_model).
        encoder_layers: encoder layers.
        encoder_heads: encoder attention heads.
        encoder_ffn: encoder feed-forward width.
        n_mels: mel bins of the encoder input.
        encoder_positions: encoder frames (50 per second of audio) it can take: 1500 is Whisper's 30 s.
        adapter_stack: frames the adapter stacks into one (50 Hz encoder frames -> 12.5 Hz LLM frames at 4).
        lora_rank: LoRA rank (and alpha) on every attention and MLP projection.
    """

    llm_hidden: int
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    llm_intermediate: int
    vocab_size: int
    encoder_dim: int
    encoder_layers: int
    encoder_heads: int
    encoder_ffn: int
    n_mels: int = 80
    encoder_positions: int = 1500
    adapter_stack: int = 4
    lora_rank: int = 8


def word(index: int) -> str:
    """The synthetic vocabulary's `index`-th word; every word is one token."""
    return f"w{index}"


def num_words(size: ModelSize) -> int:
    """Words the tokenizer holds: the vocabulary minus the special tokens and the audio placeholder."""
    return size.vocab_size - len(SPECIALS) - 1


def build_tokenizer(words: int) -> PreTrainedTokenizerFast:
    """A word-level chat tokenizer over `word(0) .. word(words - 1)` with the suite's fallback chat template."""
    vocab = {token: i for i, token in enumerate(SPECIALS + [word(i) for i in range(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        bos_token="<|bos|>",
        eos_token="<|end|>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def llm_config(size: ModelSize) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=size.vocab_size,
        hidden_size=size.llm_hidden,
        intermediate_size=size.llm_intermediate,
        num_hidden_layers=size.llm_layers,
        num_attention_heads=size.llm_heads,
        num_key_value_heads=size.llm_kv_heads,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )


def encoder_config(size: ModelSize) -> WhisperConfig:
    """Whisper encoder shapes; the decoder (dropped when the encoder is loaded) is kept to one small layer."""
    return WhisperConfig(
        num_mel_bins=size.n_mels,
        d_model=size.encoder_dim,
        encoder_layers=size.encoder_layers,
        encoder_attention_heads=size.encoder_heads,
        encoder_ffn_dim=size.encoder_ffn,
        max_source_positions=size.encoder_positions,
        decoder_layers=1,
        decoder_attention_heads=1,
        decoder_ffn_dim=8,
        max_target_positions=8,
        vocab_size=8,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


def write_model_folders(root: str | Path, size: ModelSize) -> tuple[Path, Path]:
    """Writes `<root>/llm` (config + tokenizer) and `<root>/encoder` (config); returns (llm folder, encoder folder)."""
    llm_dir, encoder_dir = Path(root) / "llm", Path(root) / "encoder"
    build_tokenizer(num_words(size)).save_pretrained(llm_dir)
    llm_config(size).save_pretrained(llm_dir)
    encoder_config(size).save_pretrained(encoder_dir)
    return llm_dir, encoder_dir


def build_module(
    recipe: type[SpeechLLMModule],
    llm_dir: Path,
    encoder_dir: Path,
    size: ModelSize,
    lora: bool = True,
    llm_dtype: str | None = None,
    **kw: Any,
) -> SpeechLLMModule:
    """A recipe module on the random-init models: frame-stack MLP adapter, LoRA on every projection, AdamW 1e-4.

    Args:
        recipe: `JointSFT`, `MTBI`, ... (its default trainable set applies).
        llm_dir: folder from `write_model_folders`.
        encoder_dir: folder from `write_model_folders`.
        size: the shapes the folders were written with.
        lora: put LoRA on the LLM (JointSFT trains it; MTBI has none).
        llm_dtype: dtype of the frozen LLM weights ("bfloat16" on GPU); None keeps float32.
        **kw: further recipe arguments (e.g. MTBI's `kd_weight`).
    """
    return recipe(
        llm=LLMSpec(str(llm_dir), load_weights=False, dtype=llm_dtype),
        encoder=HFSpeechEncoder(str(encoder_dir), load_weights=False),
        adapter=partial(FrameStackMLP, stack=size.adapter_stack),
        lora=LoraSpec(r=size.lora_rank, alpha=size.lora_rank, dropout=0.0) if lora else None,
        optimizer=OptimSpec(lr=1e-4, weight_decay=0.0),
        **kw,
    )
