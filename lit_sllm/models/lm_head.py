"""The causal LM split in two: its decoder body (final hidden states) and its output head (hidden -> logits).

The loss needs logits only where a token is labelled, so the model runs the body over the whole sequence and the
head over the few positions that are trained (`lit_sllm.modules.losses.labelled_losses`). The head here must give
the same logits as the LM's own forward: besides the output projection some families rescale or soft-cap them in
their `ForCausalLM.forward`, read from the config below.
"""

from __future__ import annotations

from torch import Tensor
from transformers import PreTrainedModel

# config attribute -> how the family's forward applies it to the projected logits (Cohere, Falcon-H1, Granite and
# MiniCPM3; MiniCPM3 divides the hidden states instead, the same thing for a bias-free head)
_MULTIPLIERS = ("logit_scale", "lm_head_multiplier")
_DIVISORS = ("logits_scaling",)


def decoder_hidden_states(llm: PreTrainedModel, inputs_embeds: Tensor, attention_mask: Tensor) -> Tensor:
    """The LM's final (normalised) hidden states, without its output head; through a PEFT wrapper its LoRA layers
    take part, as they do in the LM's own forward.

    Args:
        llm: an HF causal LM, or a PEFT model around one.
        inputs_embeds: (B, L, H) input embeddings.
        attention_mask: (B, L) 1 for real positions.

    Returns:
        (B, L, H) hidden states.
    """
    body = llm.get_decoder()
    return body(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state


def output_logits(llm: PreTrainedModel, hidden: Tensor) -> Tensor:
    """The LM's output head on final hidden states: (..., H) -> (..., V), as the LM's forward computes it (output
    projection, the family's logit scaling, Gemma 2/3's final soft-capping)."""
    logits = llm.get_output_embeddings()(hidden)
    config = llm.config.get_text_config()
    for name in _MULTIPLIERS:
        if getattr(config, name, None) is not None:
            logits = logits * getattr(config, name)
    for name in _DIVISORS:
        if getattr(config, name, None) is not None:
            logits = logits / getattr(config, name)
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is not None:
        logits = (logits / cap).tanh() * cap
    return logits
