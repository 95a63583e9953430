"""Prompt-only views of teacher-forced batches, for generating answers from validation data."""

from __future__ import annotations

import torch

from lit_sllm.data.batch import IGNORE_INDEX, Batch
from lit_sllm.data.chat_spans import last_run_start


def clip_rows(batch: Batch, audio_token_id: int) -> list[list[int]]:
    """Indices into `batch.audio` of each row's clips (placeholders are matched to clips in reading order)."""
    counts = ((batch.input_ids == audio_token_id) & batch.attention_mask.bool()).sum(dim=1).tolist()
    starts = [sum(counts[:row]) for row in range(len(counts))]
    return [list(range(start, start + count)) for start, count in zip(starts, counts)]


def to_generation_batch(batch: Batch, tokenizer, audio_token_id: int) -> Batch:
    """Cuts each row where its last trained answer begins: the prompt to generate from, with that answer as reference.

    This is the prompt `ChatFormatter.encode_prompt` builds for the same conversation, so a multi-turn dialogue is
    scored on its final answer either way. Rows without any trained token are kept whole with an empty reference.
    Clips after the cut are dropped.
    """
    rows, references, keep_clips = [], [], []
    clips_of_row = clip_rows(batch, audio_token_id)
    for row in range(batch.size):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()]
        labels = batch.labels[row][: len(ids)]
        start = last_run_start(labels.tolist())
        cut = len(ids) if start is None else start
        answer = labels[cut:]
        end = int((answer == IGNORE_INDEX).nonzero().flatten()[0]) if (answer == IGNORE_INDEX).any() else len(answer)
        rows.append(ids[:cut])
        references.append(tokenizer.decode(answer[:end], skip_special_tokens=True).strip())
        keep_clips += clips_of_row[row][: int((ids[:cut] == audio_token_id).sum())]
    width = max(len(r) for r in rows)
    input_ids = torch.full((batch.size, width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(batch.size, width, dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    index = torch.tensor(keep_clips, dtype=torch.long)
    return Batch(
        input_ids=input_ids.to(batch.input_ids.device),
        attention_mask=attention_mask.to(batch.input_ids.device),
        labels=torch.full_like(input_ids, IGNORE_INDEX).to(batch.input_ids.device),
        audio=batch.audio[index.to(batch.audio.device)] if len(keep_clips) else batch.audio[:0],
        audio_lengths=batch.audio_lengths[index.to(batch.audio.device)] if len(keep_clips) else batch.audio_lengths[:0],
        source=batch.source,
        keys=list(batch.keys),
        tasks=list(batch.tasks),
        references=references,
    )
