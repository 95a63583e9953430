"""Batched greedy answers from a plain causal LM reading text prompts (the MTBI teacher's view)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_sllm.data.prompts import ChatFormatter


@torch.no_grad()
def answer_text_prompts(
    llm: PreTrainedModel,
    formatter: ChatFormatter,
    conversations: Sequence[list[dict]],
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers of `llm` to text-only conversations (each ends with a user turn), in order."""
    answers: list[str] = []
    for start in range(0, len(conversations), batch_size):
        prompts = [formatter.encode_prompt(turns)[0].input_ids for turns in conversations[start : start + batch_size]]
        answers += answer_token_prompts(llm, formatter.tokenizer, prompts, max_new_tokens)
    return answers


@torch.no_grad()
def answer_token_prompts(
    llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[list[int]], max_new_tokens: int = 64
) -> list[str]:
    """Greedy answers of `llm` to one batch of encoded text prompts (left padded here), in order."""
    device = next(llm.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    output = llm.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    return [t.strip() for t in tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)]
