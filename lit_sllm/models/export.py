"""Saving and loading a whole SpeechLLM as a folder that plain transformers + peft can also read.

Layout of an export folder:
    speech_llm.json         the model config (components by class_path), pointing at the files below
    chat_template.jinja     the chat template the model was trained with (`llm.chat_template` points here)
    speech.safetensors      encoder and adapter weights
    encoder/                the encoder's own config files (HF encoders)
    tokenizer/              the tokenizer, audio token included
    llm_adapter/            the LLM's LoRA as a standard PEFT adapter folder (unless merged)
    llm/                    the LLM with LoRA merged into its weights (with merge=True)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from peft import PeftModel
from safetensors.torch import load_file, save_file

from lit_sllm.models.freezing import apply_trainable
from lit_sllm.models.llm import LoraSpec
from lit_sllm.models.speech_llm import SpeechLLM

CONFIG_FILE = "speech_llm.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SPEECH_WEIGHTS = "speech.safetensors"
LORA_FOLDER = "llm_adapter"


def save_pretrained(model: SpeechLLM, folder: str | Path, merge_lora: bool = False) -> Path:
    """Writes `model` to `folder` (layout in the module docstring) and returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config()
    config["encoder"]["init_args"] = model.encoder.portable_init_args(folder / "encoder")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    config["llm"]["tokenizer"] = str(folder / "tokenizer")
    (folder / CHAT_TEMPLATE_FILE).write_text(model.formatter.template)
    config["llm"]["chat_template"] = str(folder / CHAT_TEMPLATE_FILE)
    if model.has_lora and merge_lora:
        copy.deepcopy(model.llm).merge_and_unload().save_pretrained(folder / "llm")  # `model` stays as it is
        model.tokenizer.save_pretrained(folder / "llm")
        config["llm"].update(name_or_path=str(folder / "llm"), load_weights=True)
        config["lora"] = None
        config["trainable"]["lora"] = False
    elif model.has_lora:
        model.llm.save_pretrained(folder / LORA_FOLDER)
    speech = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    speech |= {f"adapter.{k}": v for k, v in model.adapter.state_dict().items()}
    save_file({k: v.detach().contiguous().cpu() for k, v in speech.items()}, str(folder / SPEECH_WEIGHTS))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return folder


def load_pretrained(folder: str | Path) -> SpeechLLM:
    """Rebuilds a SpeechLLM written by `save_pretrained`; the LLM base comes from its own path, as PEFT expects."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}; export a checkpoint with `lit-sllm export` first.")
    config = json.loads((folder / CONFIG_FILE).read_text())
    lora = config.pop("lora")
    model = SpeechLLM.from_config({**config, "lora": None})
    if lora is not None:
        model.llm = PeftModel.from_pretrained(model.llm, folder / LORA_FOLDER)
        model.lora_spec = LoraSpec(**lora)
        apply_trainable(model, model.trainable)
    missing, unexpected = model.load_state_dict(load_file(str(folder / SPEECH_WEIGHTS)), strict=False)
    speech_missing = [k for k in missing if k.startswith(("encoder.", "adapter."))]
    if speech_missing or unexpected:
        raise KeyError(
            f"{folder / SPEECH_WEIGHTS} does not fit {CONFIG_FILE}: missing {speech_missing[:3]}, "
            f"unexpected {unexpected[:3]}. Re-export the checkpoint."
        )
    return model
