"""Does the model listen? The loss with each row's own audio against the loss with audio from other rows.

A speech LLM that ignores its audio (answering every utterance with the same sentence) has the same loss either
way; one that listens does much worse on someone else's audio. The gap is logged for every speech val and test
set (`<stage>/<set>/audio_gap`), so it shows on every run, not only in the suite's own tests.
"""

from __future__ import annotations

import dataclasses

import torch

from lit_sllm.data.batch import Batch


def audio_from_other_rows(batch: Batch, audio_token_id: int) -> Batch | None:
    """The batch with every audio part replaced by one of the next row that has audio (cyclically), part counts
    kept, so each row hears someone else; None when fewer than two rows have audio.

    Part k of a row takes part k (modulo that row's count) of the next row, its clip and its seconds of that clip,
    so interleaved rows (several clips, or several spans of one clip) still get only foreign audio. The clips are
    not copied: the placeholders' `span_clips`/`span_times` are reordered.
    """
    per_row = ((batch.input_ids == audio_token_id) & batch.attention_mask.bool()).sum(dim=1).tolist()  # (B,)
    speaking = [row for row, count in enumerate(per_row) if count]
    if len(speaking) < 2:
        return None
    starts = [sum(per_row[:row]) for row in range(len(per_row))]
    order = []
    for position, row in enumerate(speaking):
        donor = speaking[(position + 1) % len(speaking)]
        order += [starts[donor] + k % per_row[donor] for k in range(per_row[row])]
    span_clips, span_times = batch.placeholder_spans()
    index = torch.tensor(order, dtype=torch.long, device=span_clips.device)
    return dataclasses.replace(batch, span_clips=span_clips[index], span_times=span_times[index])
