"""Frame-level interleaving: seconds -> encoder frames -> adapter frames, and the splice of clip spans (by hand)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from model_helpers import make_batch, tiny_speech_llm
from torch import nn

from lit_sllm.config_errors import ConfigError
from lit_sllm.data.batch import IGNORE_INDEX, Batch
from lit_sllm.data.collate import EncodedSample, collate
from lit_sllm.data.prompts import ChatFormatter
from lit_sllm.models.adapters import FrameStackMLP, stride_frame_map
from lit_sllm.models.ctc_compression import segment_frame_map
from lit_sllm.models.encoders import HFSpeechEncoder
from lit_sllm.models.frame_spans import frame_ranges
from lit_sllm.models.llm import LLMSpec
from lit_sllm.models.speech_llm import SpeechLLM
from lit_sllm.models.splice import splice_audio
from lit_sllm.modules.listening import audio_from_other_rows

INF = float("inf")


def test_splice_of_clip_spans_by_hand():
    p = 99  # placeholder id
    # row 0: t1 A t2 A t3 (two spans of clip 0); row 1: A t4 t5 (frames 1..3 of clip 1)
    ids = torch.tensor([[11, p, 12, p, 13], [p, 14, 15, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, -100, 13], [-100, 14, 15, -100, -100]])
    token_embeds = ids[..., None].float().expand(2, 5, 2).clone()
    audio = torch.stack([torch.arange(4.0) + 100 * (c + 1) for c in range(2)])[..., None].expand(2, 4, 2)
    ranges = torch.tensor([[0, 0, 2], [0, 2, 3], [1, 1, 3]])
    spliced = splice_audio(token_embeds, ids, mask, labels, audio, torch.tensor([3, 4]), p, frame_ranges=ranges)
    assert spliced.inputs_embeds[:, :, 0].tolist() == [[11, 100, 101, 12, 102, 13], [201, 202, 14, 15, 0, 0]]
    assert spliced.audio_mask.long().tolist() == [[0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 0]]
    assert spliced.labels.tolist() == [[IGNORE_INDEX] * 5 + [13], [IGNORE_INDEX] * 2 + [14, 15] + [IGNORE_INDEX] * 2]
    assert spliced.attention_mask.tolist() == [[1] * 6, [1] * 4 + [0] * 2]
    with pytest.raises(ValueError, match="ends after its clip"):
        splice_audio(token_embeds, ids, mask, labels, audio, torch.tensor([2, 4]), p, frame_ranges=ranges)


def test_stride_and_ctc_frame_maps_by_hand():
    # stack 2: clip 0 has 5 encoder frames (3 outputs), clip 1 has 3 (2 outputs); T = 5
    lengths = torch.tensor([5, 3])
    assert stride_frame_map(lengths, (lengths + 1) // 2, 5, 2).tolist() == [[0, 0, 1, 1, 2, 3], [0, 0, 1, 2, 2, 2]]
    # word segments of the CTC-segment test: a segment counts from the boundary after its first frame
    segments = torch.tensor(
        [[-1, 0, 0, 0, -1, -1, -1, 1, 1, -1, -1, -1, -1, 2, -1, -1], [-1, -1, 0, 0, 0, 0, 0] + [-1] * 9]
    )
    table = segment_frame_map(segments, torch.tensor([16, 8]))
    assert table[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3]
    assert table[1].tolist() == [0, 0, 0, 1, 1, 1, 1, 1] + [1] * 9
    silent = segment_frame_map(torch.full((1, 4), -1), torch.tensor([4]))  # nothing heard: one output frame
    assert silent.tolist() == [[0, 0, 0, 0, 1]]


def test_frame_ranges_map_seconds_through_both_strides_by_hand():
    # 100 Hz samples, an encoder at 10 frames/s (samples // 10), a stack-2 adapter
    audio_lengths, encoder_lengths = torch.tensor([100, 60]), torch.tensor([10, 6])
    out_lengths = (encoder_lengths + 1) // 2  # [5, 3]
    frame_map = stride_frame_map(encoder_lengths, out_lengths, 10, 2)
    clips = torch.tensor([0, 0, 1])
    times = torch.tensor([[0.0, 0.45], [0.45, 1.0], [0.0, INF]])  # 0.45 s = encoder frame 4 = adapter frame 2

    def frames_at(samples):
        return samples // 10

    ranges = frame_ranges(clips, times, audio_lengths, out_lengths, 100, frames_at, frame_map)
    assert ranges.tolist() == [[0, 0, 2], [0, 2, 5], [1, 0, 3]]
    late = frame_ranges(torch.tensor([1]), torch.tensor([[0.2, 9.0]]), audio_lengths, out_lengths, 100, frames_at,
                        frame_map)  # fmt: skip
    assert late.tolist() == [[1, 1, 3]]  # an end past the clip stops at its last frame
    with pytest.raises(ConfigError, match="interleave_level: clips"):
        frame_ranges(clips, times, audio_lengths, out_lengths, 100, frames_at, None)
    whole = frame_ranges(clips[2:], times[2:], audio_lengths, out_lengths, 100, frames_at, None)
    assert whole.tolist() == [[1, 0, 3]]  # whole clips need no map


def test_encoder_frames_at_matches_the_frames_it_returns(tiny_whisper_dir, tiny_hubert_dir):
    lengths = torch.tensor([16000, 12345, 4801, 800])
    audio = torch.randn(4, 16000) * 0.1
    for folder in (tiny_whisper_dir, tiny_hubert_dir):
        encoder = HFSpeechEncoder(str(folder)).eval()
        with torch.no_grad():
            _, frames = encoder(audio, lengths)
        assert encoder.frames_at(lengths).tolist() == frames.tolist()
        cuts = encoder.frames_at(torch.arange(0, 16001, 160))
        assert (cuts.diff() >= 0).all() and cuts[0] == 0  # monotone from 0


def _span_batch(model: SpeechLLM, cut: float) -> Batch:
    """Row 0: its clip as two spans, 0..cut and cut..end, around a text part; row 1: one whole clip."""
    formatter = ChatFormatter(model.tokenizer)
    clips = make_batch(model, ["x", "y"])
    split = [{"audio": "flac", "end": cut}, {"text": "and"}, {"audio": "flac", "start": cut}, {"text": "say it"}]
    items = []
    for row, parts in enumerate([split, [{"audio": "flac"}, {"text": "say it"}]]):
        turns = [{"role": "user", "parts": parts}, {"role": "assistant", "parts": [{"text": "ok"}]}]
        dialog, (prompt, _) = formatter.encode(turns), formatter.encode_prompt(turns)
        clip = clips.audio[row, : int(clips.audio_lengths[row])]
        item = EncodedSample(f"u{row}", "asr", dialog.input_ids, dialog.labels, [clip], "ok", 0.0)
        item.prompt = EncodedSample(f"u{row}", "asr", prompt.input_ids, prompt.labels, [clip], "ok", 0.0)
        item.spans = item.prompt.spans = [(0, *times) for times in dialog.audio_times]
        items.append(item)
    return collate(items, "asr", model.tokenizer.pad_token_id)


def test_prepare_inputs_cuts_one_encoded_clip_into_its_spans(tiny_llm_dir, tiny_whisper_dir):
    model = tiny_speech_llm(tiny_llm_dir, tiny_whisper_dir, lora=False).eval()
    batch = _span_batch(model, cut=0.1)  # 0.1 s = 5 Whisper frames = adapter frame 2 (stack 2)
    with torch.no_grad():
        whole, lengths = model.embed_audio(batch.audio, batch.audio_lengths)  # (2, T, H)
        inputs = model.prepare_inputs(batch)
    row0 = inputs.inputs_embeds[0][inputs.audio_mask[0]]
    torch.testing.assert_close(row0, whole[0, : int(lengths[0])])  # both spans: the clip's frames, each once
    first = int(inputs.audio_mask[0].long().argmax())
    assert inputs.audio_mask[0, first : first + 3].tolist() == [True, True, False]  # 2 frames, then the text token
    torch.testing.assert_close(inputs.inputs_embeds[1][inputs.audio_mask[1]], whole[1, : int(lengths[1])])
    # the listening check swaps whole spans between rows; generation keeps every span before the answer
    foreign = audio_from_other_rows(batch, model.audio_token_id)
    assert foreign.span_clips.tolist() == [1, 1, 0] and foreign.span_times[:2, 1].isinf().all()
    prompts = batch.generation_view()
    assert prompts.span_clips.tolist() == [0, 0, 1] and prompts.clip_rows(model.audio_token_id) == [[0], [1]]


class _NoMap(nn.Module):
    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, output_dim)

    def forward(self, frames, lengths):
        return self.proj(frames), lengths


def test_an_adapter_without_a_frame_map_is_refused_only_for_partial_spans(tiny_llm_dir, tiny_whisper_dir):
    model = SpeechLLM(LLMSpec(str(tiny_llm_dir)), HFSpeechEncoder(str(tiny_whisper_dir)), _NoMap)
    model.prepare_inputs(make_batch(model, ["the red cat"]))  # whole clips: no map needed
    with pytest.raises(ConfigError, match="has no `frame_map"):
        model.prepare_inputs(_span_batch(model, cut=0.1))
    stack = SpeechLLM(LLMSpec(str(tiny_llm_dir)), HFSpeechEncoder(str(tiny_whisper_dir)), partial(FrameStackMLP))
    assert stack.prepare_inputs(_span_batch(stack, cut=0.1)).audio_mask.any()
