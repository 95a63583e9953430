"""The export folder of a whole SpeechLLM, which plain transformers + peft can also read.

Layout of an export folder:
    speech_llm.json         the model config (components by class_path), pointing at the files below
    chat_template.jinja     the chat template the model was trained with (`llm.chat_template` points here)
    speech.safetensors      encoder and adapter weights
    encoder/                the encoder's own config files (HF encoders)
    tokenizer/              the tokenizer, audio token included
    llm_adapter/            the LLM's LoRA as a standard PEFT adapter folder (unless merged)
    llm/                    the LLM with LoRA merged into its weights (with merge=True)

`SpeechLLM.save_pretrained` and `SpeechLLM.from_pretrained` write and read it with the helpers here, which know the
files but not the model class, so this module does not import `lit_sllm.models.speech_llm`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

CONFIG_FILE = "speech_llm.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SPEECH_WEIGHTS = "speech.safetensors"
ENCODER_FOLDER = "encoder"
TOKENIZER_FOLDER = "tokenizer"
LORA_FOLDER = "llm_adapter"
MERGED_LLM_FOLDER = "llm"
SPEECH_PREFIXES = ("encoder.", "adapter.")


def save_tokenizer(folder: Path, tokenizer: PreTrainedTokenizerBase, chat_template: str) -> dict[str, str]:
    """Writes the tokenizer and the chat template; returns the `llm` config entries that point at them."""
    tokenizer.save_pretrained(folder / TOKENIZER_FOLDER)
    (folder / CHAT_TEMPLATE_FILE).write_text(chat_template)
    return {"tokenizer": str(folder / TOKENIZER_FOLDER), "chat_template": str(folder / CHAT_TEMPLATE_FILE)}


def save_merged_llm(folder: Path, llm: PeftModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Writes the LLM with its LoRA folded in (`llm` itself stays as it is); returns the `llm` config entries."""
    copy.deepcopy(llm).merge_and_unload().save_pretrained(folder / MERGED_LLM_FOLDER)
    tokenizer.save_pretrained(folder / MERGED_LLM_FOLDER)
    return {"name_or_path": str(folder / MERGED_LLM_FOLDER), "load_weights": True}


def save_lora(folder: Path, llm: PeftModel) -> None:
    """Writes the LLM's LoRA as a standard PEFT adapter folder."""
    llm.save_pretrained(folder / LORA_FOLDER)


def load_lora(folder: Path, llm: PreTrainedModel) -> PeftModel:
    """`llm` with the LoRA of an export folder on top."""
    return PeftModel.from_pretrained(llm, folder / LORA_FOLDER)


def save_speech_weights(folder: Path, encoder: nn.Module, adapter: nn.Module) -> None:
    """Writes the encoder and adapter weights into one safetensors file, keyed as in the model's state dict."""
    speech = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    speech |= {f"adapter.{k}": v for k, v in adapter.state_dict().items()}
    save_file({k: v.detach().contiguous().cpu() for k, v in speech.items()}, str(folder / SPEECH_WEIGHTS))


def load_speech_weights(folder: Path, model: nn.Module) -> None:
    """Loads the encoder and adapter weights into `model`; raises a KeyError when they do not fit its config."""
    missing, unexpected = model.load_state_dict(load_file(str(folder / SPEECH_WEIGHTS)), strict=False)
    speech_missing = [k for k in missing if k.startswith(SPEECH_PREFIXES)]
    if speech_missing or unexpected:
        raise KeyError(
            f"{folder / SPEECH_WEIGHTS} does not fit {CONFIG_FILE}: missing {speech_missing[:3]}, "
            f"unexpected {unexpected[:3]}. Re-export the checkpoint."
        )


def write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def read_config(folder: Path) -> dict[str, Any]:
    """The model config of an export folder.

    Raises:
        FileNotFoundError: when `folder` holds no export.
    """
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}; export a checkpoint with `lit-sllm export` first.")
    return json.loads((folder / CONFIG_FILE).read_text())
