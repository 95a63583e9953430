"""VoiceTextBlender's single-stage joint SFT: speech and text-only batches in one stage, LoRA on a frozen LLM.

The recipe lives in its data mix (the DataModule's weighted sources) and its trainable set; the loss is the shared
assistant-token cross-entropy, logged per source (`train/<source>/loss`).
"""

from __future__ import annotations

from lit_sllm.models.freezing import Trainable
from lit_sllm.modules.base import SpeechLLMModule


class JointSFT(SpeechLLMModule):
    """Joint speech/text SFT. Defaults follow the paper: encoder, adapter and LoRA train; the LLM base is frozen."""

    default_trainable = Trainable(encoder=True, adapter=True, llm=False, lora=True)
