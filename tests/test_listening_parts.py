"""The parts that let a speech LLM read its audio: per-component optimisation, CTC compression, embedding-RMS
matching and the toy LLM's pseudo-speech."""

from __future__ import annotations

import csv
import random
from functools import partial

import lightning as L
import pytest
import torch
from model_helpers import TRANSCRIPTS, BatchListDataModule, make_batch
from safetensors.torch import save_file

from lit_sllm.config_errors import ConfigError
from lit_sllm.models.ctc_compression import CTCCompressionAdapter, ctc_segments, pool_segments
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.freezing import Trainable
from lit_sllm.models.llm import LLMSpec, LoraSpec
from lit_sllm.models.speech_llm import SpeechLLM
from lit_sllm.modules.joint_sft import JointSFT
from lit_sllm.modules.optim import GroupSpec, OptimSpec, ScheduleSpec, build_optimizer, build_scheduler
from lit_sllm.toy.pseudo_speech import PseudoSpeech, fixed_plan, plan_frames, random_plan, sentence_parts_as_audio

# --- per-component optimisation -----------------------------------------------------------------------------------


def _joint(llm_dir, whisper_dir, optimizer: OptimSpec, **kwargs) -> JointSFT:
    torch.manual_seed(0)
    return JointSFT(
        llm=LLMSpec(str(llm_dir)),
        encoder=HFSpeechEncoder(str(whisper_dir)),
        lora=LoraSpec(r=4, alpha=8, dropout=0.0),
        optimizer=optimizer,
        schedule=ScheduleSpec(warmup_steps=0, min_lr=0.0),
        **kwargs,
    )


def test_each_component_gets_its_own_group_lr_and_decay(tiny_llm_dir, tiny_whisper_dir):
    spec = OptimSpec(
        lr=1e-3, weight_decay=0.1, groups={"encoder": GroupSpec(lr=1e-5), "lora": GroupSpec(weight_decay=0)}
    )
    module = _joint(tiny_llm_dir, tiny_whisper_dir, spec)
    optimizer = build_optimizer(module.model.named_parameters(), spec, on_cuda=False)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"encoder", "adapter", "lora"}  # the frozen LLM base has no group
    assert (groups["encoder"]["lr"], groups["adapter"]["lr"], groups["lora"]["lr"]) == (1e-5, 1e-3, 1e-3)
    assert (groups["encoder"]["weight_decay"], groups["lora"]["weight_decay"]) == (0.1, 0)
    trainable = {id(p) for p in module.model.parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trainable
    scheduler = build_scheduler(optimizer, ScheduleSpec(decay="cosine"), spec.lr, total_steps=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert groups["encoder"]["lr"] / groups["adapter"]["lr"] == pytest.approx(1e-2)  # one schedule scales all


def test_a_group_that_cannot_take_effect_is_an_error(tiny_llm_dir, tiny_whisper_dir):
    module = _joint(tiny_llm_dir, tiny_whisper_dir, OptimSpec())
    with pytest.raises(ConfigError, match=r"model\.optimizer\.groups\.llm is set but the llm has no trainable"):
        build_optimizer(module.model.named_parameters(), OptimSpec(groups={"llm": GroupSpec(lr=1.0)}), False)
    with pytest.raises(ConfigError, match=r"groups\.decoder is not a component"):
        build_optimizer(module.model.named_parameters(), OptimSpec(groups={"decoder": GroupSpec(lr=1.0)}), False)


def test_group_learning_rates_are_logged_and_a_tiny_encoder_lr_keeps_the_encoder(
    tiny_llm_dir, tiny_whisper_dir, tmp_path
):
    spec = OptimSpec(lr=1e-2, groups={"encoder": GroupSpec(lr=1e-8)})
    module = _joint(tiny_llm_dir, tiny_whisper_dir, spec)
    encoder_before = {k: v.clone() for k, v in module.model.encoder.state_dict().items()}
    adapter_before = {k: v.clone() for k, v in module.model.adapter.state_dict().items()}
    batch = make_batch(module.model, TRANSCRIPTS)
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_checkpointing=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, BatchListDataModule([batch] * 3))
    logged = set(trainer.logged_metrics)
    assert {"train/lr/encoder", "train/lr/adapter", "train/lr/lora"} <= logged
    assert float(trainer.logged_metrics["train/lr/encoder"]) < 1e-7
    moved = lambda before, now: max((now[k] - v).abs().max().item() for k, v in before.items())  # noqa: E731
    assert moved(encoder_before, module.model.encoder.state_dict()) < 1e-5
    assert moved(adapter_before, module.model.adapter.state_dict()) > 1e-3


def test_detail_metrics_reach_the_logger_on_its_steps_with_no_data_count_lost(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    """Per-source terms, group learning rates and data statistics are logged only on the steps the logger writes
    (each `self.log` costs Lightning bookkeeping); skip and augmentation counts add up over the steps between."""
    module = _joint(tiny_llm_dir, tiny_whisper_dir, OptimSpec(lr=1e-3))
    batch = make_batch(module.model, TRANSCRIPTS)
    batch.extras |= {"skipped": {"bad_json": 1}, "augment": {"speed": 2}, "padding_ratio": 0.5}
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=logger, log_every_n_steps=3, enable_progress_bar=False,
                        enable_checkpointing=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, BatchListDataModule([batch] * 6))
    (metrics,) = tmp_path.glob("lightning_logs/version_*/metrics.csv")
    rows = [row for row in csv.DictReader(metrics.open()) if row["train/loss"]]
    assert [int(row["step"]) for row in rows] == [2, 5]  # steps 3 and 6
    for row in rows:
        assert float(row["data/skipped/bad_json"]) == 3 and float(row["data/augment/speed"]) == 6  # 3 steps each
        assert (
            row["train/lr/adapter"] and row[f"train/{batch.source}/loss"] and row[f"data/{batch.source}/padding_ratio"]
        )


# --- CTC compression ------------------------------------------------------------------------------------------------


def test_ctc_segments_by_hand():
    # labels: 0 blank, 1 delimiter (space), 2.. letters; frames past each clip's length are ignored
    labels = torch.tensor(
        [[0, 2, 0, 3, 0, 1, 0, 4, 4, 0, 1, 1, 0, 5, 0, 0], [0, 0, 2, 2, 0, 3, 3, 0, 1, 5, 0, 0, 0, 0, 0, 0]]
    )
    lengths = torch.tensor([16, 8])
    words = ctc_segments(labels, lengths, blank=0, delimiter=1)
    assert words[0].tolist() == [-1, 0, 0, 0, -1, -1, -1, 1, 1, -1, -1, -1, -1, 2, -1, -1]
    assert words[1].tolist() == [-1, -1, 0, 0, 0, 0, 0] + [-1] * 9  # frame 9 ("5") is past the clip's end
    tokens = ctc_segments(labels, lengths, blank=0, delimiter=None)
    assert tokens[0].tolist() == [-1, 0, -1, 1, -1, 2, -1, 3, 3, -1, 4, 4, -1, 5, -1, -1]
    frames = torch.arange(32.0).reshape(2, 16, 1)
    pooled, counts = pool_segments(frames, words, lengths)
    assert counts.tolist() == [3, 1]
    assert pooled[0, :, 0].tolist() == [2.0, 7.5, 13.0] and pooled[1, 0, 0].item() == pytest.approx(20.0)
    silent = torch.zeros(1, 5, dtype=torch.long)  # nothing heard: the whole clip becomes one vector
    pooled, counts = pool_segments(
        torch.ones(1, 5, 2), ctc_segments(silent, torch.tensor([4]), 0, 1), torch.tensor([4])
    )
    assert counts.tolist() == [1] and pooled.shape == (1, 1, 2)


def _toy_ctc_head(folder, width: int, vocab: list[str]):
    torch.manual_seed(0)
    save_file({"proj.weight": torch.randn(len(vocab), width), "proj.bias": torch.zeros(len(vocab))},
              str(folder / "ctc_head.safetensors"))  # fmt: skip
    (folder / "ctc_vocab.json").write_text(__import__("json").dumps(vocab))
    return folder


def test_ctc_compression_adapter_trains_and_leaves_its_head_out_of_checkpoints(
    tiny_llm_dir, tiny_whisper_dir, tmp_path
):
    head = _toy_ctc_head(tmp_path, 24, ["<blank>", " ", "a", "b", "c"])
    torch.manual_seed(0)
    model = SpeechLLM(
        LLMSpec(str(tiny_llm_dir)),
        HFSpeechEncoder(str(tiny_whisper_dir)),
        partial(CTCCompressionAdapter, ctc_head=str(head), merge="token"),
        trainable=Trainable(encoder=True, adapter=True, lora=False),
    )
    batch = make_batch(model, TRANSCRIPTS)
    frames, lengths = model.encoder(batch.audio, batch.audio_lengths)
    out, counts = model.adapter(frames, lengths)
    segments = ctc_segments(model.adapter.head(frames), lengths, 0, None)
    assert counts.tolist() == (segments.max(dim=1).values + 1).clamp(min=1).tolist()
    assert out.shape[:2] == (len(TRANSCRIPTS), int(counts.max())) and (counts < lengths).all()  # compressed
    loss = model(model.prepare_inputs(batch)).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)  # the pooled path
    assert not [n for n in model.trainable_state_dict() if "head" in n]
    with pytest.raises(ConfigError, match="reads 24-wide frames but the encoder gives 32"):
        CTCCompressionAdapter(32, 16, ctc_head=str(head))
    with pytest.raises(ConfigError, match="has no label '|'"):
        CTCCompressionAdapter(24, 16, ctc_head=str(head), merge="word", word_delimiter="|")


def test_adapter_output_is_scaled_to_the_embedding_rms(tiny_llm_dir, tiny_whisper_dir):
    torch.manual_seed(0)
    model = SpeechLLM(LLMSpec(str(tiny_llm_dir)), HFSpeechEncoder(str(tiny_whisper_dir)), match_embedding_rms=True)
    with torch.no_grad():
        model.adapter.down.weight.mul_(1000.0)  # an adapter whose output has grown far off the token scale
    batch = make_batch(model, TRANSCRIPTS)
    embeds, _ = model.embed_audio(batch.audio, batch.audio_lengths)
    table = model.llm.get_input_embeddings().weight
    target = table.pow(2).mean().sqrt()
    torch.testing.assert_close(embeds.pow(2).mean(-1).sqrt(), target.expand(embeds.shape[:2]), rtol=1e-4, atol=0)
    assert SpeechLLM.from_config(model.config()).match_embedding_rms


# --- pseudo-speech ---------------------------------------------------------------------------------------------------


def test_pseudo_speech_plans_and_frames():
    tokens = [5, 6, 7]
    assert fixed_plan(tokens, repeat=2).token == [5, 5, 6, 6, 7, 7]
    embedding = torch.nn.Embedding(10, 4)
    exact, lengths = plan_frames([fixed_plan(tokens)], embedding)
    torch.testing.assert_close(exact[0], embedding.weight[tokens])
    mixed, _ = plan_frames([fixed_plan(tokens, mix=0.5, gain=2.0)], embedding)
    torch.testing.assert_close(mixed[0, 0], embedding.weight[5] + embedding.weight[6])  # 2 x the average
    spec = PseudoSpeech(exact_prob=0.0, repeats=(2, 4), partial_prob=0.0)
    plan = random_plan(tokens, random.Random(0), spec)
    runs = [len(list(group)) for _, group in __import__("itertools").groupby(plan.token)]
    assert plan.token[0] == 5 and all(2 <= r <= 4 for r in runs) and len(runs) == 3
    turns = [{"role": "user", "parts": [{"text": "count the things."}, {"text": "the cat sees a cup"}]}]
    spoken, texts = sentence_parts_as_audio(turns, frozenset({"count the things."}))
    assert spoken[0]["parts"][1] == {"audio": "sentence0"} and texts == ["the cat sees a cup"]


# --- the listening check ----------------------------------------------------------------------------------------------


def test_audio_from_other_rows_gives_every_row_foreign_clips_by_hand():
    from lit_sllm.data.batch import Batch
    from lit_sllm.modules.listening import audio_from_other_rows

    a = 9  # the audio placeholder id; rows hold 1, 0 (text only), 2 and 1 clips
    ids = torch.tensor([[1, a, 2, 0], [1, 2, 3, 4], [a, 2, a, 3], [1, a, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    audio = torch.arange(4.0)[:, None].expand(4, 3).clone()  # clip i is all i's: clips 0 | 1 2 | 3
    batch = Batch(ids, mask, torch.full_like(ids, -100), audio, torch.tensor([3, 2, 3, 1]))
    foreign = audio_from_other_rows(batch, a)
    # row 0 takes row 2's first clip; row 2's two clips come from row 3 (its only clip, twice); row 3 takes row 0's
    assert foreign.span_clips.tolist() == [1, 3, 3, 0] and torch.equal(foreign.audio, audio)  # no clip copied
    assert foreign.span_times.tolist() == [[0.0, float("inf")]] * 4
    single = Batch(ids[:2], mask[:2], torch.full_like(ids[:2], -100), audio[:1], torch.tensor([3]))
    assert audio_from_other_rows(single, a) is None  # one speaking row: nothing to swap with


def test_audio_from_other_rows_moves_spans_of_one_clip_whole_by_hand():
    from lit_sllm.data.batch import Batch
    from lit_sllm.modules.listening import audio_from_other_rows

    a = 9  # each row: two spans of its own clip (frame-level interleaving) around text
    ids = torch.tensor([[a, 2, a, 0], [1, a, 3, a]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    times = torch.tensor([[0.0, 1.0], [1.0, 2.0], [0.0, 0.5], [0.5, 2.0]])
    batch = Batch(ids, mask, torch.full_like(ids, -100), torch.zeros(2, 3), torch.tensor([3, 3]),
                  span_clips=torch.tensor([0, 0, 1, 1]), span_times=times)  # fmt: skip
    foreign = audio_from_other_rows(batch, a)
    assert foreign.span_clips.tolist() == [1, 1, 0, 0]
    assert foreign.span_times.tolist() == [[0.0, 0.5], [0.5, 2.0], [0.0, 1.0], [1.0, 2.0]]
