"""SpeechLLM: encoder/adapter lengths, splicing, training behaviour, lean checkpoints, generation."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import build_llm
from model_helpers import TRANSCRIPTS, make_batch, tiny_speech_llm

from lit_sllm.data.batch import IGNORE_INDEX
from lit_sllm.models.adapters import ConformerAdapter, FrameStackMLP
from lit_sllm.models.encoders import ConformerEncoder, HFSpeechEncoder
from lit_sllm.models.freezing import component_of, parameter_counts
from lit_sllm.models.llm import LLMSpec, LoraSpec
from lit_sllm.models.speech_llm import SpeechLLM
from lit_sllm.models.splice import splice_audio
from lit_sllm.modules.losses import token_cross_entropy

LENGTHS = torch.tensor([16000, 7999, 3201])


def _audio(lengths: torch.Tensor) -> torch.Tensor:
    audio = torch.randn(len(lengths), int(lengths.max()), generator=torch.Generator().manual_seed(0))
    return audio * (torch.arange(audio.shape[1])[None] < lengths[:, None])


@pytest.mark.parametrize("kind", ["whisper", "hubert", "conformer"])
def test_encoder_output_lengths_are_exact_per_clip(kind, tiny_whisper_dir, tiny_hubert_dir):
    encoders = {
        "whisper": lambda: HFSpeechEncoder(str(tiny_whisper_dir)),
        "hubert": lambda: HFSpeechEncoder(str(tiny_hubert_dir)),
        "conformer": lambda: ConformerEncoder(n_mels=16, d_model=16, num_layers=1, num_heads=2, ffn_dim=32),
    }
    encoder = encoders[kind]().eval()
    audio = _audio(LENGTHS)
    with torch.no_grad():
        frames, lengths = encoder(audio, LENGTHS)
        for i, n in enumerate(LENGTHS.tolist()):
            alone, alone_length = encoder(audio[i : i + 1, :n], LENGTHS[i : i + 1])
            assert alone.shape[1] == int(alone_length) == int(lengths[i])
            # padding never leaks into a clip's valid frames (torchaudio's Conformer convolutions do not mask it)
            if kind != "conformer":
                torch.testing.assert_close(frames[i, : int(lengths[i])], alone[0], atol=1e-4, rtol=1e-4)
    mel_frames = LENGTHS // 160
    expected = {"whisper": (mel_frames - 1) // 2 + 1, "conformer": ((mel_frames - 1) // 2) // 2 + 1}
    if kind in expected:
        assert lengths.tolist() == expected[kind].tolist()
    assert frames.shape == (3, int(lengths.max()), encoder.output_dim)


@pytest.mark.parametrize(
    "factory,factor",
    [(partial(FrameStackMLP, stack=3), 3), (partial(ConformerAdapter, d_model=16, num_heads=2, num_layers=1), 2)],
)
def test_adapter_output_length_and_width(factory, factor):
    adapter = factory(12, 20).eval()
    lengths = torch.tensor([7, 9, 1])
    frames = torch.randn(3, 9, 12)
    out, out_lengths = adapter(frames, lengths)
    assert out_lengths.tolist() == [-(-n // factor) for n in (7, 9, 1)]
    assert out.shape == (3, -(-9 // factor), 20)


def test_splice_hand_worked_example():
    p = 99  # placeholder id
    # row 0: t1 A t2 A t3 <pad>; row 1: A t4 t5 <pad> <pad> <pad>
    ids = torch.tensor([[11, p, 12, p, 13, 0], [p, 14, 15, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, -100, 13, -100], [-100, 14, 15, -100, -100, -100]])
    token_embeds = ids[..., None].float().expand(2, 6, 2).clone()
    # clips in reading order: row0/A (2 frames), row0/A (1 frame), row1/A (3 frames); frame values 100+clip
    audio = torch.stack([torch.full((3, 2), 100.0 + c) for c in range(3)])
    spliced = splice_audio(token_embeds, ids, mask, labels, audio, torch.tensor([2, 1, 3]), p)
    first = spliced.inputs_embeds[:, :, 0]
    assert first[0].tolist() == [11, 100, 100, 12, 101, 13]
    assert first[1].tolist() == [102, 102, 102, 14, 15, 0]
    assert spliced.audio_mask.long().tolist() == [[0, 1, 1, 0, 1, 0], [1, 1, 1, 0, 0, 0]]
    assert spliced.labels.tolist() == [[IGNORE_INDEX] * 5 + [13], [IGNORE_INDEX] * 3 + [14, 15, IGNORE_INDEX]]
    assert spliced.attention_mask.tolist() == [[1] * 6, [1] * 5 + [0]]
    left = splice_audio(token_embeds, ids, mask, labels, audio, torch.tensor([2, 1, 3]), p, padding_side="left")
    assert left.inputs_embeds[1, :, 0].tolist() == [0, 102, 102, 102, 14, 15]
    assert left.attention_mask[1].tolist() == [0, 1, 1, 1, 1, 1]
    assert left.labels[1].tolist() == [IGNORE_INDEX] * 4 + [14, 15]


def test_splice_rejects_clip_count_mismatch():
    ids = torch.tensor([[1, 99, 2]])
    with pytest.raises(ValueError, match="2 clips"):
        splice_audio(torch.zeros(1, 3, 2), ids, torch.ones_like(ids), ids, torch.zeros(2, 1, 2), torch.ones(2), 99)


def test_prepare_inputs_masks_labels_to_answer_tokens(tiny_llm_dir, tiny_whisper_dir):
    model = tiny_speech_llm(tiny_llm_dir, tiny_whisper_dir)
    batch = make_batch(model, TRANSCRIPTS[:2])
    inputs = model.prepare_inputs(batch)
    for row, transcript in enumerate(TRANSCRIPTS[:2]):
        targets = inputs.labels[row][inputs.labels[row] != IGNORE_INDEX]
        decoded = model.tokenizer.decode(targets, skip_special_tokens=True)
        assert decoded == transcript
        assert not (inputs.labels[row][inputs.audio_mask[row]] != IGNORE_INDEX).any()
    assert int(inputs.audio_mask.sum()) > 0


def _train(model: SpeechLLM, batch, steps: int, lr: float = 3e-3) -> list[float]:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        inputs = model.prepare_inputs(batch)
        loss_sum, count = token_cross_entropy(model(inputs), inputs.labels)
        loss = loss_sum.sum() / count.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_overfitting_four_samples_makes_loss_fall(tiny_llm_dir, tiny_whisper_dir):
    model = tiny_speech_llm(tiny_llm_dir, tiny_whisper_dir, encoder=True, adapter=True, lora=True)
    losses = _train(model, make_batch(model, TRANSCRIPTS), steps=30, lr=3e-2)
    assert losses[-1] < 0.1 * losses[0], losses


def test_lora_training_changes_only_lora_and_adapter(tiny_llm_dir, tiny_whisper_dir):
    model = tiny_speech_llm(tiny_llm_dir, tiny_whisper_dir, encoder=False, adapter=True, lora=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, make_batch(model, TRANSCRIPTS), steps=3)
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if component_of(name) in ("encoder", "llm"):
            assert not param.requires_grad and not changed, name
        elif name.endswith("weight") and "lora_A" not in name:  # lora_B starts at 0 and moves; lora_A may too
            assert changed, name


def test_trainable_checkpoint_round_trip_gives_identical_logits(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    model = tiny_speech_llm(tiny_llm_dir, tiny_whisper_dir, encoder=False, adapter=True, lora=True)
    batch = make_batch(model, TRANSCRIPTS)
    _train(model, batch, steps=2)
    path = tmp_path / "trainable.pt"
    torch.save(model.trainable_state_dict(), path)
    saved = torch.load(path, weights_only=True)
    assert saved and all(component_of(n) in ("adapter", "lora") for n in saved)
    llm_total = parameter_counts(model)["llm"][1]
    assert sum(t.numel() for t in saved.values()) < llm_total
    fresh = tiny_speech_llm(tiny_llm_dir, tiny_whisper_dir, seed=1, encoder=False, adapter=True, lora=True)
    fresh.load_trainable_state_dict(saved)
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(fresh.prepare_inputs(batch)), model(model.prepare_inputs(batch)), rtol=0, atol=0
        )
    with pytest.raises(KeyError, match="missing trainable"):
        tiny_speech_llm(tiny_llm_dir, tiny_whisper_dir, encoder=True).load_trainable_state_dict(saved)


def test_generation_returns_strings_greedy_and_beam(tiny_llm_dir, tiny_whisper_dir):
    model = tiny_speech_llm(tiny_llm_dir, tiny_whisper_dir).eval()
    batch = make_batch(model, TRANSCRIPTS[:3], prompt_only=True)
    for beams in (1, 2):
        answers = model.generate(batch, max_new_tokens=4, num_beams=beams)
        assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    # greedy generation from a batch equals generation one row at a time (left padding is right)
    single = make_batch(model, TRANSCRIPTS[:1], prompt_only=True)
    assert model.generate(single, max_new_tokens=4)[0] == model.generate(batch, max_new_tokens=4)[0]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma"])
def test_llm_families_train_with_lora(family, tmp_path, tiny_whisper_dir):
    llm_dir = build_llm(tmp_path / family, family)
    model = tiny_speech_llm(llm_dir, tiny_whisper_dir)
    counts = parameter_counts(model)
    assert counts["lora"][0] == counts["lora"][1] > 0 and counts["llm"][0] == 0
    losses = _train(model, make_batch(model, TRANSCRIPTS[:2]), steps=2)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_conformer_encoder_save_and_load(tmp_path):
    encoder = ConformerEncoder(n_mels=16, d_model=16, num_layers=1, num_heads=2, ffn_dim=32).eval()
    encoder.save_pretrained(tmp_path / "enc")
    loaded = ConformerEncoder.from_pretrained(tmp_path / "enc").eval()
    audio = _audio(LENGTHS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(audio, LENGTHS)[0], encoder(audio, LENGTHS)[0])


def test_meta_device_build_counts_without_weights(tiny_llm_dir, tiny_whisper_dir):
    with torch.device("meta"):
        model = SpeechLLM(
            LLMSpec(str(tiny_llm_dir), load_weights=False),
            HFSpeechEncoder(str(tiny_whisper_dir), load_weights=False),
            lora=LoraSpec(r=4),
        )
    assert next(model.llm.parameters()).is_meta
    assert parameter_counts(model)["lora"][1] > 0


def test_features_stay_float32_when_the_encoder_is_cast_to_bfloat16(tiny_whisper_dir):
    encoder = HFSpeechEncoder(str(tiny_whisper_dir)).eval()
    audio = _audio(LENGTHS)
    with torch.no_grad():
        expected, _ = encoder.features(audio, LENGTHS)
        encoder.to(torch.bfloat16)
        assert all(b.dtype == torch.float32 for b in encoder.features.buffers())
        features, _ = encoder.features(audio.to(torch.bfloat16), LENGTHS)
        frames, _ = encoder(audio.to(torch.bfloat16), LENGTHS)
    torch.testing.assert_close(features, expected, atol=2e-2, rtol=0)
    assert frames.dtype == torch.bfloat16 and torch.isfinite(frames).all()
