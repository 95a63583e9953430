"""CTC compression: one adapter vector per token (or word) the encoder's CTC head hears, instead of a fixed rate.

Frame stacking gives the LLM a vector every k frames whatever is said; an encoder with a CTC head already knows
where its tokens are. Averaging the encoder frames of each CTC segment (Gaido et al., "CTC-based compression for
direct speech translation", 2021) gives about one vector per token, the rate an LLM reads text at. Segments come
from the greedy CTC path of the head, which stays frozen; the pooled frames keep their gradient, so the encoder can
still be fine-tuned. `merge="token"` pools runs of one label (blanks dropped); `merge="word"` pools everything from
a word's first label to the next word delimiter (character heads: the space of the toy encoder, wav2vec2's "|").

The head is read from `ctc_head`: a folder with `ctc_head.safetensors` (`proj.weight`, `proj.bias`) and
`ctc_vocab.json` (the labels, index 0 the blank), as the toy encoder ships it, or a Hugging Face `*ForCTC`
checkpoint (its `lm_head`; blank = the tokenizer's pad token).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from lit_sllm.config_errors import ConfigError
from lit_sllm.models.adapters import SwiGLU
from lit_sllm.models.config import init_args_of
from lit_sllm.models.features import lengths_to_mask


class CTCHeadWeights(nn.Module):
    """A frozen linear CTC head (buffers, not parameters: it never trains and checkpoints leave it out)."""

    def __init__(self, weight: Tensor, bias: Tensor, vocab: list[str], blank: int) -> None:
        super().__init__()
        self.register_buffer("weight", weight.float(), persistent=False)  # (V, D)
        self.register_buffer("bias", bias.float(), persistent=False)  # (V,)
        self.vocab, self.blank = vocab, blank

    def forward(self, frames: Tensor) -> Tensor:
        """(N, T, D) -> (N, T) greedy labels."""
        return nn.functional.linear(frames.float(), self.weight, self.bias).argmax(dim=-1)

    def label(self, text: str) -> int:
        if text not in self.vocab:
            raise ConfigError(f"the CTC head has no label {text!r} (its labels: {self.vocab[:40]}).")
        return self.vocab.index(text)


def load_ctc_head(path: str) -> CTCHeadWeights:
    """The CTC head at `path` (see the module docstring for the two layouts)."""
    folder = Path(path)
    if (folder / "ctc_head.safetensors").is_file():
        state = load_file(str(folder / "ctc_head.safetensors"))
        vocab = json.loads((folder / "ctc_vocab.json").read_text())
        return CTCHeadWeights(state["proj.weight"], state["proj.bias"], vocab, blank=0)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"adapter ctc_head: {path!r} holds neither ctc_head.safetensors + ctc_vocab.json nor a Hugging Face "
            "*ForCTC checkpoint; point it at the encoder's CTC head."
        )
    from transformers import AutoModelForCTC, AutoTokenizer

    head = AutoModelForCTC.from_pretrained(str(folder)).lm_head
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    return CTCHeadWeights(head.weight.detach(), head.bias.detach(), vocab[: head.out_features], tokenizer.pad_token_id)


def ctc_segments(labels: Tensor, lengths: Tensor, blank: int, delimiter: int | None) -> Tensor:
    """The segment of every frame, -1 where a frame joins none: (N, T) labels -> (N, T) segment ids.

    Token mode (`delimiter` None): each run of one non-blank label is a segment. Word mode: a segment runs from a
    word's first label (non-blank, non-delimiter) to its last, blanks between them included.
    """
    valid = lengths_to_mask(lengths, labels.shape[1])
    if delimiter is None:
        keep = valid & (labels != blank)
        previous = torch.nn.functional.pad(labels, (1, 0), value=-1)[:, :-1]
        kept_before = torch.nn.functional.pad(keep, (1, 0), value=False)[:, :-1]
        starts = keep & ((labels != previous) | ~kept_before)
    else:
        is_delimiter = valid & (labels == delimiter)
        is_label = valid & (labels != blank) & ~is_delimiter
        zero = torch.zeros_like(labels)
        heard = is_label.long().cumsum(dim=1)  # labels up to here
        heard_at_delimiter = torch.where(is_delimiter, heard, zero).cummax(dim=1).values  # ... up to the last delimiter
        ahead = is_label.long().flip(1).cumsum(dim=1).flip(1)  # labels from here on
        ahead_at_delimiter = torch.where(is_delimiter, ahead, zero).flip(1).cummax(dim=1).values.flip(1)
        # from the word's first label to its last (blanks between them included), never a delimiter
        keep = ~is_delimiter & (heard > heard_at_delimiter) & (ahead > ahead_at_delimiter)
        group = is_delimiter.long().cumsum(dim=1)
        previous_group = torch.nn.functional.pad(group, (1, 0), value=-1)[:, :-1]
        kept_before = torch.nn.functional.pad(keep, (1, 0), value=False)[:, :-1]
        starts = keep & (~kept_before | (group != previous_group))
    segment = starts.long().cumsum(dim=1) - 1
    return torch.where(keep, segment, torch.full_like(segment, -1))


def pool_segments(frames: Tensor, segments: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of each segment's frames: (N, T, D), (N, T) ids -> (N, S, D) and (N,) segment counts.

    A clip in which the head hears nothing becomes one vector, the mean of all its frames, so every clip reaches
    the LLM as at least one position.
    """
    n, t, d = frames.shape
    counts = (segments.max(dim=1).values + 1).clamp(min=0)  # (N,)
    empty = counts == 0
    if empty.any():  # the whole clip as one segment
        whole = torch.where(lengths_to_mask(lengths, t), torch.zeros_like(segments), torch.full_like(segments, -1))
        segments = torch.where(empty[:, None], whole, segments)
        counts = counts.clamp(min=1)
    width = int(counts.max()) if n else 0
    index = torch.where(segments >= 0, segments + torch.arange(n, device=frames.device)[:, None] * width, -1)
    keep = index.flatten() >= 0
    sums = frames.new_zeros(n * width, d).index_add_(0, index.flatten()[keep], frames.reshape(n * t, d)[keep])
    sizes = frames.new_zeros(n * width).index_add_(0, index.flatten()[keep], frames.new_ones(int(keep.sum())))
    return (sums / sizes.clamp(min=1)[:, None]).reshape(n, width, d), counts


class CTCCompressionAdapter(nn.Module):
    """Pools encoder frames per CTC segment, then a 2-layer MLP to the LLM's width.

    Args:
        input_dim: encoder width (supplied by the model).
        output_dim: LLM hidden size (supplied by the model).
        ctc_head: folder of the encoder's CTC head (module docstring).
        merge: "token" (one vector per CTC label run) or "word" (one per word; needs `word_delimiter`).
        word_delimiter: the head's label between words in word mode (" " for the toy encoder, "|" for wav2vec2).
        hidden_dim: MLP width; defaults to `output_dim`.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        ctc_head: str,
        merge: Literal["token", "word"] = "token",
        word_delimiter: str = " ",
        hidden_dim: int | None = None,
    ) -> None:
        self_args = init_args_of(locals())
        super().__init__()
        self.init_args = self_args
        if merge not in ("token", "word"):
            raise ConfigError(f"adapter merge '{merge}' is unknown; use 'token' or 'word'.")
        self.head = load_ctc_head(ctc_head)
        if self.head.weight.shape[1] != input_dim:
            raise ConfigError(
                f"adapter ctc_head {ctc_head!r} reads {self.head.weight.shape[1]}-wide frames but the encoder gives "
                f"{input_dim}; use the head trained on this encoder."
            )
        self.delimiter = self.head.label(word_delimiter) if merge == "word" else None
        hidden_dim = hidden_dim or output_dim
        self.norm = nn.LayerNorm(input_dim)
        self.up = SwiGLU(input_dim, hidden_dim)
        self.down = nn.Linear(hidden_dim, output_dim)

    def forward(self, frames: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(N, T, D_enc), (N,) -> (N, S, D_llm) one vector per segment, (N,) segment counts."""
        with torch.no_grad():
            segments = ctc_segments(self.head(frames), lengths, self.head.blank, self.delimiter)  # (N, T)
        pooled, counts = pool_segments(frames, segments, lengths)  # (N, S, D_enc)
        return self.down(self.up(self.norm(pooled))), counts

    @torch.no_grad()
    def frame_map(self, frames: Tensor, lengths: Tensor) -> Tensor:
        """(N, T, D_enc), (N,) -> (N, T + 1): the segments begun in the first e encoder frames, for frame-level
        interleaving (a segment straddling a cut goes to the span before it); the clip's segment count from its
        last frame on."""
        segments = ctc_segments(self.head(frames), lengths, self.head.blank, self.delimiter)  # (N, T)
        return segment_frame_map(segments, lengths)


def segment_frame_map(segments: Tensor, lengths: Tensor) -> Tensor:
    """(N, T) segment ids (-1 outside any) -> (N, T + 1) segments begun before each encoder frame boundary, and from
    each clip's last frame on its output length as `pool_segments` counts it (at least 1)."""
    begun = (segments.cummax(dim=1).values + 1).clamp(min=0)  # (N, T) segments begun up to and including frame e
    begun = torch.nn.functional.pad(begun, (1, 0))  # (N, T + 1)
    counts = (segments.max(dim=1).values + 1).clamp(min=1) if segments.shape[1] else lengths.new_ones(len(lengths))
    index = torch.arange(begun.shape[1], device=segments.device)[None, :]
    return torch.where(index < lengths[:, None], begun, counts[:, None])
