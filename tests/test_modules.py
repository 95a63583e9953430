"""Recipe modules under a real Trainer: loss falls, lean checkpoints, frozen weights, non-finite steps, KD."""

from __future__ import annotations

import dataclasses
from functools import partial

import lightning as L
import pytest
import torch
from model_helpers import TRANSCRIPTS, BatchListDataModule, make_batch

from lit_sllm.models.adapters import FrameStackMLP
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.freezing import component_of
from lit_sllm.models.llm import LLMSpec, LoraSpec
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.modules.losses import check_same_answers, token_kl
from lit_sllm.modules.mtbi import MTBI
from lit_sllm.modules.optim import OptimSpec, ScheduleSpec


def _joint_sft(llm_dir, whisper_dir, **kwargs) -> JointSFT:
    torch.manual_seed(0)
    return JointSFT(
        llm=LLMSpec(str(llm_dir)),
        encoder=HFSpeechEncoder(str(whisper_dir)),
        adapter=partial(FrameStackMLP, stack=2),
        lora=LoraSpec(r=4, alpha=8, dropout=0.0),
        optimizer=OptimSpec(lr=2e-2, weight_decay=0.0),
        schedule=ScheduleSpec(warmup_steps=2),
        **kwargs,
    )


def _trainer(tmp_path, steps: int, **kwargs) -> L.Trainer:
    defaults = dict(
        default_root_dir=tmp_path,
        max_steps=steps,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return L.Trainer(**(defaults | kwargs))


def test_joint_sft_fit_loss_falls_and_checkpoint_is_lean(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    module = _joint_sft(tiny_llm_dir, tiny_whisper_dir)
    frozen = {n: p.detach().clone() for n, p in module.model.named_parameters() if component_of(n) == "llm"}
    batch = make_batch(module.model, TRANSCRIPTS)
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, *args):
            losses.append(float(outputs["loss"]))

    trainer = _trainer(tmp_path, steps=30, callbacks=[Record()])
    trainer.fit(module, BatchListDataModule([batch] * 30))
    assert losses[-1] < 0.2 * losses[0], losses
    for name, param in module.model.named_parameters():
        if name in frozen:
            assert torch.equal(frozen[name], param.detach()), name
    trainer.save_checkpoint(tmp_path / "lean.ckpt")
    state = torch.load(tmp_path / "lean.ckpt", weights_only=True)["state_dict"]
    assert state and {component_of(k.removeprefix("model.")) for k in state} == {"encoder", "adapter", "lora"}
    fresh = JointSFT.load_from_checkpoint(tmp_path / "lean.ckpt")  # rebuilt from hparams alone
    module.eval(), fresh.eval()
    with torch.no_grad():
        expected = module.model(module.model.prepare_inputs(batch))
        torch.testing.assert_close(fresh.model(fresh.model.prepare_inputs(batch)), expected, rtol=0, atol=0)


def test_nonfinite_losses_skip_steps_then_stop_with_a_clear_message(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    module = _joint_sft(tiny_llm_dir, tiny_whisper_dir, max_nonfinite_steps=3)
    batch = make_batch(module.model, TRANSCRIPTS[:2])
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    module.compute_loss = lambda *args: {"loss": torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(RuntimeError, match="3 training steps in a row had a non-finite loss"):
        _trainer(tmp_path, steps=10).fit(module, BatchListDataModule([batch] * 10))
    assert module.nonfinite_total == 3
    assert all(torch.equal(before[n], p.detach()) for n, p in module.model.named_parameters() if p.requires_grad)


def test_token_kl_is_zero_when_logits_agree_and_positive_otherwise():
    logits = torch.randn(5, 11)
    assert float(token_kl(logits, logits.clone()).abs().max()) == pytest.approx(0.0, abs=1e-6)
    assert float(token_kl(logits, torch.randn(5, 11)).min()) > 0.0
    with pytest.raises(ValueError, match="same response tokens"):
        check_same_answers(5, 4)


def test_mtbi_trains_only_the_adapter_and_kd_vanishes_for_identical_inputs(tiny_llm_dir, tiny_whisper_dir):
    torch.manual_seed(0)
    module = MTBI(kd_weight=1.0, llm=LLMSpec(str(tiny_llm_dir)), encoder=HFSpeechEncoder(str(tiny_whisper_dir)))
    trainable = {component_of(n) for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {"adapter"}
    # a text-only student input that equals the teacher input: the frozen LLM is its own teacher, KD must be 0
    text = make_batch(module.model, TRANSCRIPTS[:2])
    keep = text.input_ids != module.model.audio_token_id
    rows = [text.input_ids[b][keep[b]] for b in range(2)]
    text.input_ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    text.labels = torch.nn.utils.rnn.pad_sequence(
        [text.labels[b][keep[b]] for b in range(2)], batch_first=True, padding_value=-100
    )
    text.attention_mask = (
        torch.arange(text.input_ids.shape[1])[None] < torch.tensor([len(r) for r in rows])[:, None]
    ).long()
    text.audio, text.audio_lengths = torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    text.teacher = dataclasses.replace(text)
    module.eval()
    inputs = module.model.prepare_inputs(text)
    terms = module.compute_loss(text, inputs, module.model.hidden_states(inputs.inputs_embeds, inputs.attention_mask))
    assert float(terms["kd"]) == pytest.approx(0.0, abs=1e-5)
    assert float(terms["loss"]) == pytest.approx(float(terms["ce"]), abs=1e-5)


def test_checkpoint_filter_sees_through_fsdp_and_compile_wrappers(tiny_llm_dir, tiny_whisper_dir):
    module = _joint_sft(tiny_llm_dir, tiny_whisper_dir)
    full = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    wrapped = {k.replace("model.llm.", "model._fsdp_wrapped_module.llm._orig_mod."): v for k, v in full.items()}
    checkpoint = {"state_dict": wrapped}
    module.on_save_checkpoint(checkpoint)
    expected = {f"model.{k}" for k in module.model.trainable_state_dict()}
    assert set(checkpoint["state_dict"]) == expected
    module.on_load_checkpoint(checkpoint)  # fits
    module.on_save_checkpoint(no_weights := {"optimizer_states": []})
    assert "state_dict" not in no_weights  # DeepSpeed-style checkpoints are left to the strategy


def test_compile_option_compiles_in_place_and_keeps_checkpoint_names(tiny_llm_dir, tiny_whisper_dir):
    plain = _joint_sft(tiny_llm_dir, tiny_whisper_dir)
    compiled = _joint_sft(tiny_llm_dir, tiny_whisper_dir, compile=True)
    # nn.Module.compile wraps the call, not the module: names (and so lean checkpoints) stay as they are
    assert compiled.model.llm._compiled_call_impl is not None and compiled.model.encoder._compiled_call_impl is not None
    assert plain.model.llm._compiled_call_impl is None
    assert set(compiled.model.trainable_state_dict()) == set(plain.model.trainable_state_dict())
