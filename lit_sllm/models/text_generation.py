"""The MTBI teacher's view: a plain causal LM reading text prompts, answering them (batched greedy decoding) and
giving its most likely next tokens over an answer it is teacher-forced with (the distributions stored for KD)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_sllm.data.batch import IGNORE_INDEX
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.models.lm_head import decoder_hidden_states, output_logits


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


@torch.no_grad()
def answer_top_log_probs(
    llm: PreTrainedModel, formatter: ChatFormatter, conversations: Sequence[list[dict]], k: int, batch_size: int = 16
) -> list[tuple[Tensor, Tensor]]:
    """The `k` most likely tokens and their log-probabilities where each conversation's answer is labelled.

    Each conversation ends with its answer turn and is encoded as training encodes it (`ChatFormatter.encode`), so
    row i of a result belongs to the i-th labelled token of the same conversation in a training batch. The head
    runs at labelled positions only.

    Returns:
        Per conversation, (n_i, k) token ids (long) and (n_i, k) log-probabilities (float32, full-vocabulary
        softmax), most likely first; n_i is the number of labelled tokens.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    device = next(llm.parameters()).device
    pad = formatter.tokenizer.pad_token_id
    out: list[tuple[Tensor, Tensor]] = []
    for start in range(0, len(conversations), batch_size):
        dialogs = [formatter.encode(turns) for turns in conversations[start : start + batch_size]]
        width = max(len(d.input_ids) for d in dialogs)
        ids = torch.tensor([d.input_ids + [pad] * (width - len(d.input_ids)) for d in dialogs], device=device)
        mask = torch.tensor([[1] * len(d.input_ids) + [0] * (width - len(d.input_ids)) for d in dialogs], device=device)
        labels = torch.tensor([d.labels + [IGNORE_INDEX] * (width - len(d.labels)) for d in dialogs], device=device)
        hidden = decoder_hidden_states(llm, llm.get_input_embeddings()(ids), mask)  # (b, L, H)
        for row in range(len(dialogs)):
            positions = (labels[row, 1:] != IGNORE_INDEX).nonzero().squeeze(1)  # (n_i,) predicting labelled tokens
            log_probs = output_logits(llm, hidden[row, positions]).float().log_softmax(-1)  # (n_i, V)
            top = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)
            out.append((top.indices.cpu(), top.values.cpu()))
    return out
