"""The causal LM and its LoRA: loaded by name or path exactly as a real run loads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lit_sllm.config_errors import ConfigError, load_pretrained
from lit_sllm.data.chat_template import set_chat_template

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LLMSpec:
    """Which causal LM to load and how.

    Attributes:
        name_or_path: hub id or local folder of any `AutoModelForCausalLM` checkpoint; its tokenizer is loaded from
            the same place unless `tokenizer` is set.
        tokenizer: hub id or folder of the tokenizer, when it lives apart from the weights.
        load_weights: False builds the architecture from the config alone (random init; on the meta device it only
            counts parameters).
        dtype: "float32", "bfloat16" or "float16" for the LLM's weights; None keeps float32. With a frozen LLM and
            bf16-mixed training, "bfloat16" halves its memory.
        attn_implementation: "sdpa", "eager" or "flash_attention_2"; None lets transformers choose.
        gradient_checkpointing: recompute the LLM's activations in the backward pass to save memory.
        trust_remote_code: run code shipped with the checkpoint; keep off unless it needs it.
        chat_template: the chat template, as the path of a .jinja file or the template text; None keeps the
            tokenizer's own (the suite's fallback when it has none). The template used is saved beside the run's
            config.yaml and in exports as chat_template.jinja.
        chat_template_kwargs: extra variables the template reads, e.g. `{enable_thinking: false}` for Qwen3; a key
            the template does not read is an error.
    """

    name_or_path: str
    tokenizer: str | None = None
    load_weights: bool = True
    dtype: str | None = None
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None


@dataclass
class LoraSpec:
    """PEFT LoRA on the LLM.

    Attributes:
        r: rank (VoiceTextBlender: 32).
        alpha: scaling numerator (VoiceTextBlender: 32).
        dropout: dropout on the LoRA input.
        target_modules: module names to adapt; the default covers attention and FFN of Llama/Qwen2/Gemma-style LMs.
    """

    r: int = 32
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def _dtype(spec: LLMSpec) -> torch.dtype:
    if spec.dtype is None:
        return torch.float32
    if spec.dtype not in _DTYPES:
        raise ConfigError(f"model.init_args.llm.dtype '{spec.dtype}' is unknown; use one of {sorted(_DTYPES)}.")
    return _DTYPES[spec.dtype]


def load_llm(spec: LLMSpec, key: str = "model.init_args.llm") -> PreTrainedModel:
    """The causal LM of `spec`; a path that cannot be loaded is reported under the config key `key`."""
    kwargs = {"trust_remote_code": spec.trust_remote_code, "dtype": _dtype(spec)}
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    path = spec.name_or_path
    if spec.load_weights:
        model = load_pretrained(
            f"{key}.name_or_path", "causal LM", path, lambda: AutoModelForCausalLM.from_pretrained(path, **kwargs)
        )
    else:
        config = load_pretrained(
            f"{key}.name_or_path",
            "causal LM config",
            path,
            lambda: AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code),
        )
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def load_tokenizer(spec: LLMSpec, key: str = "model.init_args.llm") -> PreTrainedTokenizerBase:
    """The tokenizer of `spec` (pad token set to EOS when it has none) with the run's chat template."""
    source = spec.tokenizer or spec.name_or_path
    field = "tokenizer" if spec.tokenizer else "name_or_path"
    tokenizer = load_pretrained(
        f"{key}.{field}",
        "tokenizer",
        source,
        lambda: AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code),
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return set_chat_template(tokenizer, spec.chat_template, f"{key}.chat_template")


def add_lora(llm: PreTrainedModel, spec: LoraSpec) -> PeftModel:
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, config)
