"""Labelled-only chunked losses against the full-logits path: the same CE, KD and gradients, the output head equal
to the LM's own (LoRA, Gemma 2 soft-capping), batches without labels, and generation that agrees with `forward`."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch
from model_helpers import TRANSCRIPTS, make_batch

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.batch import IGNORE_INDEX, Batch, TeacherTopK
from lit_sllm.models.adapters import FrameStackMLP
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.freezing import Trainable
from lit_sllm.models.llm import LLMSpec, LoraSpec
from lit_sllm.models.lm_head import decoder_hidden_states, output_logits
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.modules.losses import labelled_losses
from lit_sllm.modules.mtbi import MTBI

CHUNK_SIZES = [1, 4, 7, 1024]  # 4 and 7 do not divide the batch's labelled-token count


def _modules(cls, llm_dir, whisper_dir, **kwargs):
    torch.manual_seed(0)
    common = dict(
        llm=LLMSpec(str(llm_dir)), encoder=HFSpeechEncoder(str(whisper_dir)), adapter=partial(FrameStackMLP, stack=2)
    )
    module = cls(**common, **kwargs)
    module.eval()  # no dropout: both paths see the same network
    return module


def _text_view(batch: Batch, audio_token_id: int) -> Batch:
    """The batch without its audio placeholders: same rows and answer tokens, text only."""
    keep = batch.input_ids != audio_token_id
    rows = [batch.input_ids[b][keep[b]] for b in range(batch.size)]
    lengths = torch.tensor([len(r) for r in rows])
    return dataclasses.replace(
        batch,
        input_ids=torch.nn.utils.rnn.pad_sequence(rows, batch_first=True),
        labels=torch.nn.utils.rnn.pad_sequence(
            [batch.labels[b][keep[b]] for b in range(batch.size)], batch_first=True, padding_value=IGNORE_INDEX
        ),
        attention_mask=(torch.arange(max(lengths))[None] < lengths[:, None]).long(),
        audio=torch.zeros(0, 0),
        audio_lengths=torch.zeros(0, dtype=torch.long),
    )


def _terms_and_grads(module, batch, mode: str, chunk_size: int = 1024):
    module.loss_logits, module.loss_chunk_size = mode, chunk_size
    module.model.zero_grad(set_to_none=True)
    terms = module._loss(batch)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.requires_grad and p.grad is not None}
    return {k: v.detach() for k, v in terms.items()}, grads


def _assert_same(expected, got):
    (terms, grads), (other_terms, other_grads) = expected, got
    assert terms.keys() == other_terms.keys()
    for name in terms:
        torch.testing.assert_close(other_terms[name], terms[name], rtol=0, atol=1e-5)
    assert grads.keys() == other_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(other_grads[name], grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_joint_sft_labelled_chunks_give_the_full_logits_loss_and_gradients(tiny_llm_dir, tiny_whisper_dir):
    module = _modules(JointSFT, tiny_llm_dir, tiny_whisper_dir, lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    assert module.loss_logits == "labelled"  # the recipe default
    batch = make_batch(module.model, TRANSCRIPTS)
    assert batch.num_target_tokens() % 4 and batch.num_target_tokens() % 7
    full = _terms_and_grads(module, batch, "full")
    assert any("lora" in name for name in full[1]) and any("encoder" in name for name in full[1])
    for chunk_size in CHUNK_SIZES:
        _assert_same(full, _terms_and_grads(module, batch, "labelled", chunk_size))


def test_mtbi_kd_and_asr_weight_match_the_full_logits_path(tiny_llm_dir, tiny_whisper_dir):
    module = _modules(MTBI, tiny_llm_dir, tiny_whisper_dir, kd_weight=0.7, kd_temperature=2.0, asr_weight=0.3)
    batch = make_batch(module.model, TRANSCRIPTS)
    batch.tasks = ["asr", "sqa", "asr", "dialog"]
    batch.teacher = _text_view(batch, module.model.audio_token_id)
    full = _terms_and_grads(module, batch, "full")
    assert float(full[0]["kd"]) > 0.01 and set(full[0]) == {"loss", "ce", "kd"}
    for chunk_size in CHUNK_SIZES:
        _assert_same(full, _terms_and_grads(module, batch, "labelled", chunk_size))
    module.asr_weight = 1.0  # the weight takes effect on both paths alike
    unweighted = _terms_and_grads(module, batch, "labelled", 3)[0]["ce"]
    assert abs(float(unweighted) - float(full[0]["ce"])) > 1e-4


def _stored_teacher(module, batch: Batch, k: int) -> TeacherTopK:
    """The online teacher's top-k at the batch's labelled tokens, as `lit-sllm teacher --topk` stores them."""
    with torch.no_grad():
        hidden = module.teacher_hidden(batch)
        rows, positions = (batch.teacher.labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
        top = module.model.lm_head(hidden[rows, positions]).float().log_softmax(-1).topk(k, dim=-1)
    return TeacherTopK(top.indices, top.values)


def test_stored_teacher_distributions_give_the_online_kd_and_both_loss_paths_agree(tiny_llm_dir, tiny_whisper_dir):
    module = _modules(MTBI, tiny_llm_dir, tiny_whisper_dir, kd_weight=0.7, kd_temperature=2.0)
    batch = make_batch(module.model, TRANSCRIPTS)
    batch.teacher = _text_view(batch, module.model.audio_token_id)
    online = _terms_and_grads(module, batch, "labelled", 4)
    vocab = module.model.llm.config.vocab_size
    stored = dataclasses.replace(batch, teacher=None, teacher_topk=_stored_teacher(module, batch, vocab))
    _assert_same(online, _terms_and_grads(module, stored, "full"))  # the whole distribution: the same KD
    _assert_same(online, _terms_and_grads(module, stored, "labelled", 4))
    top4 = dataclasses.replace(stored, teacher_topk=_stored_teacher(module, batch, 4))
    full = _terms_and_grads(module, top4, "full")
    assert abs(float(full[0]["kd"]) - float(online[0]["kd"])) > 1e-3  # renormalised over 4 tokens: another KL
    for chunk_size in CHUNK_SIZES:
        _assert_same(full, _terms_and_grads(module, top4, "labelled", chunk_size))
    short = dataclasses.replace(
        top4, teacher_topk=TeacherTopK(top4.teacher_topk.ids[1:], top4.teacher_topk.log_probs[1:])
    )
    with pytest.raises(ValueError, match="answer logits differ"):
        module._loss(short)


def test_a_batch_without_labels_has_zero_loss_and_gradients(tiny_llm_dir, tiny_whisper_dir):
    module = _modules(JointSFT, tiny_llm_dir, tiny_whisper_dir, lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    batch = make_batch(module.model, TRANSCRIPTS[:2])
    batch.labels = torch.full_like(batch.labels, IGNORE_INDEX)
    for mode in ("full", "labelled"):
        terms, grads = _terms_and_grads(module, batch, mode, 3)
        assert float(terms["loss"]) == 0.0
        assert grads and all(float(g.abs().max()) == 0.0 for g in grads.values())


def test_labelled_losses_reject_a_teacher_with_other_answers_and_a_bad_chunk_size():
    hidden, head = torch.randn(2, 6, 4), torch.nn.Linear(4, 9)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[:, 3:] = 1
    fewer = labels.clone()
    fewer[0, 3] = IGNORE_INDEX
    with pytest.raises(ValueError, match="same response tokens"):
        labelled_losses(hidden, labels, head, 2, teacher=(hidden, fewer))
    with pytest.raises(ValueError, match="loss_chunk_size"):
        labelled_losses(hidden, labels, head, 0)


def test_the_module_names_the_key_for_an_unknown_loss_mode(tiny_llm_dir, tiny_whisper_dir):
    with pytest.raises(ConfigError, match="model.init_args.loss_logits"):
        _modules(JointSFT, tiny_llm_dir, tiny_whisper_dir, loss_logits="everything")


def test_the_output_head_gives_the_lms_own_logits_through_lora_and_gemma2_softcapping():
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, final_logit_softcapping=0.5, initializer_range=0.5,
    )  # fmt: skip
    gemma = Gemma2ForCausalLM(config).eval()
    lora = get_peft_model(Gemma2ForCausalLM(config).eval(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for layer in lora.modules():  # LoRA B starts at zero; make it count
        if hasattr(layer, "lora_B"):
            torch.nn.init.normal_(layer.lora_B["default"].weight)
    embeds, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    for llm in (gemma, lora):
        with torch.no_grad():
            expected = llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
            got = output_logits(llm, decoder_hidden_states(llm, embeds, mask))
        assert float(expected.abs().max()) <= 0.5  # capped, so the cap had to be applied
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with torch.no_grad(), lora.disable_adapter():
        base = output_logits(lora, decoder_hidden_states(lora, embeds, mask))
    assert float((base - got).abs().max()) > 1e-4  # the LoRA layers took part


def test_forward_and_generation_agree_with_the_lms_own_forward(tiny_llm_dir, tiny_whisper_dir):
    module = _modules(JointSFT, tiny_llm_dir, tiny_whisper_dir, lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    model = module.model
    inputs = model.prepare_inputs(make_batch(model, TRANSCRIPTS[:2]))
    with torch.no_grad():
        own = model.llm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask).logits
        torch.testing.assert_close(model(inputs), own, rtol=0, atol=1e-6)
    prompt = make_batch(model, TRANSCRIPTS[:1], prompt_only=True)
    prompt_inputs = model.prepare_inputs(prompt, padding_side="left")
    embeds, greedy = prompt_inputs.inputs_embeds, []
    stop = set(torch.tensor(model.llm.generation_config.eos_token_id).reshape(-1).tolist())
    with torch.no_grad():
        for _ in range(4):  # greedy decoding by hand through `forward`'s head
            mask = torch.ones(embeds.shape[:2], dtype=torch.long)
            token = model.lm_head(model.hidden_states(embeds, mask))[:, -1].argmax(-1)  # (1,)
            greedy.append(int(token))
            if int(token) in stop:
                break
            embeds = torch.cat([embeds, model.llm.get_input_embeddings()(token)[:, None]], dim=1)
    expected = model.tokenizer.decode(greedy, skip_special_tokens=True).strip()
    assert model.generate(prompt, max_new_tokens=4) == [expected]


@pytest.mark.parametrize("llm_trains", [False, True])
def test_frozen_heads_take_chunk_gradients_in_the_forward_pass_and_training_heads_are_checkpointed(
    tiny_llm_dir, tiny_whisper_dir, monkeypatch, llm_trains
):
    """Either way the CE, the KD term and every gradient (the head's own, when it trains) are the full-logits path's;
    a frozen head is applied once per chunk for the student (no recomputation in the backward pass)."""
    trainable = Trainable(encoder=False, adapter=True, llm=llm_trains, lora=False)
    module = _modules(MTBI, tiny_llm_dir, tiny_whisper_dir, kd_weight=0.5, trainable=trainable)
    batch = make_batch(module.model, TRANSCRIPTS)
    batch.teacher = _text_view(batch, module.model.audio_token_id)
    full = _terms_and_grads(module, batch, "full")
    head = module.model.llm.get_output_embeddings()
    assert any(p.grad is not None for p in head.parameters()) == llm_trains
    calls = []
    head.register_forward_hook(lambda layer, args, out: calls.append(torch.is_grad_enabled()))
    chunked = _terms_and_grads(module, batch, "labelled", 4)
    _assert_same(full, chunked)
    chunks = -(-batch.num_target_tokens() // 4)
    student_calls = sum(calls)  # the teacher's logits run under no_grad
    assert student_calls == (2 * chunks if llm_trains else chunks)  # checkpointing runs the head again in backward
