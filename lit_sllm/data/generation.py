"""Prompt-only views of teacher-forced batches, for generating answers from validation data."""

from __future__ import annotations

import torch

from lit_sllm.data.batch import IGNORE_INDEX, Batch
from lit_sllm.data.chat_spans import last_run_start


def placeholder_rows(batch: Batch, audio_token_id: int) -> list[list[int]]:
    """Indices of each row's audio placeholders in the batch's reading order (into `Batch.placeholder_spans()`)."""
    counts = ((batch.input_ids == audio_token_id) & batch.attention_mask.bool()).sum(dim=1).tolist()
    starts = [sum(counts[:row]) for row in range(len(counts))]
    return [list(range(start, start + count)) for start, count in zip(starts, counts)]


def clip_rows(batch: Batch, audio_token_id: int) -> list[list[int]]:
    """Indices into `batch.audio` of the clips each row's placeholders refer to, each once, in reading order."""
    span_clips = batch.placeholder_spans()[0].tolist()
    return [list(dict.fromkeys(span_clips[p] for p in row)) for row in placeholder_rows(batch, audio_token_id)]


def to_generation_batch(batch: Batch, tokenizer, audio_token_id: int) -> Batch:
    """Cuts each row where its last trained answer begins: the prompt to generate from, with that answer as reference.

    This is the prompt `ChatFormatter.encode_prompt` builds for the same conversation, so a multi-turn dialogue is
    scored on its final answer either way. Rows without any trained token are kept whole with an empty reference.
    Audio parts after the cut are dropped, and the clips no kept part refers to.
    """
    rows, references, keep = [], [], []
    placeholders_of_row = placeholder_rows(batch, audio_token_id)
    for row in range(batch.size):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()]
        labels = batch.labels[row][: len(ids)]
        start = last_run_start(labels.tolist())
        cut = len(ids) if start is None else start
        answer = labels[cut:]
        end = int((answer == IGNORE_INDEX).nonzero().flatten()[0]) if (answer == IGNORE_INDEX).any() else len(answer)
        rows.append(ids[:cut])
        references.append(tokenizer.decode(answer[:end], skip_special_tokens=True).strip())
        keep += placeholders_of_row[row][: int((ids[:cut] == audio_token_id).sum())]
    width = max(len(r) for r in rows)
    input_ids = torch.full((batch.size, width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(batch.size, width, dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    span_clips, span_times = batch.placeholder_spans()
    kept_clips = list(dict.fromkeys(span_clips[keep].tolist()))  # (clips the kept parts refer to, in order)
    renumber = {clip: i for i, clip in enumerate(kept_clips)}
    index = torch.tensor(kept_clips, dtype=torch.long, device=batch.audio.device)
    return Batch(
        input_ids=input_ids.to(batch.input_ids.device),
        attention_mask=attention_mask.to(batch.input_ids.device),
        labels=torch.full_like(input_ids, IGNORE_INDEX).to(batch.input_ids.device),
        audio=batch.audio[index],
        audio_lengths=batch.audio_lengths[index.to(batch.audio_lengths.device)],
        span_clips=torch.tensor([renumber[c] for c in span_clips[keep].tolist()], dtype=torch.long).to(span_clips),
        span_times=span_times[keep],
        source=batch.source,
        keys=list(batch.keys),
        tasks=list(batch.tasks),
        references=references,
    )
