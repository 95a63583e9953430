"""Losses on spliced sequences; pure functions with shape docstrings.

Two ways to the same numbers. `full_logit_losses` takes logits at every position (B, L, V), as the LM's forward
makes them. `labelled_losses` takes final hidden states and runs the output head only where the next token is
labelled, `chunk_size` positions at a time, so the peak holds one chunk's (chunk, V) logits instead of the whole
batch's (the idea of Liger-Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy, in plain torch so it
runs anywhere). The KD term gets the same treatment: student and teacher logits per chunk. A teacher stored with the
shards (`TeacherTopK`: its top-k tokens and log-probabilities at each labelled token) needs no teacher pass: the KL
is taken with the teacher renormalised over its k tokens (exact when k is the vocabulary).

With a frozen head (LoRA or adapter training) each chunk's gradient is taken in the forward pass, as Liger's kernel
does: a token's losses depend on its own hidden state only, so the chunk keeps the (chunk, H) gradient of its CE and
of its KL, and the backward pass only scales them, with no second pass over the vocabulary. A head that trains runs
each chunk under activation checkpointing instead (logits computed again in the backward pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lit_sllm.data.batch import IGNORE_INDEX, TeacherTopK

Head = Callable[[Tensor], Tensor]  # (n, H) hidden states -> (n, V) logits
Teacher = tuple[Tensor, Tensor]  # a teacher run in the step: its (B_t, L_t, ...) outputs and (B_t, L_t) labels


@dataclass
class TokenLosses:
    """Per-row sums over the labelled (answer) tokens.

    Attributes:
        ce: (B,) summed next-token cross-entropy.
        count: (B,) number of labelled tokens.
        kl: (B,) summed KL(teacher || student) on temperature-softened distributions (not scaled by T^2); None
            without a teacher.
    """

    ce: Tensor
    count: Tensor
    kl: Tensor | None = None


def token_cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy per row on labelled positions.

    Args:
        logits: (B, L, V) from the LLM.
        labels: (B, L) targets aligned with the inputs (`IGNORE_INDEX` where untrained); shifted here.

    Returns:
        (B,) summed loss per row and (B,) number of target tokens per row.
    """
    targets = labels[:, 1:]  # (B, L-1)
    per_token = nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, L-1)
    return per_token.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)


def answer_positions(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(B, L) labels -> (n,) rows and (n,) positions whose next token is labelled, in row-major order."""
    rows, positions = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    return rows, positions


def answer_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Logits that predict the labelled tokens, in order: (B, L, V) -> (n_answer_tokens, V)."""
    return logits[:, :-1][labels[:, 1:] != IGNORE_INDEX]


def token_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) per token on temperature-softened distributions: (n, V) and (n, V) -> (n,)."""
    log_p_teacher = (teacher.float() / temperature).log_softmax(-1)
    log_p_student = (student.float() / temperature).log_softmax(-1)
    return _kl(log_p_teacher, log_p_student)


def topk_kl(student: Tensor, teacher: TeacherTopK, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) per token, the teacher's softened distribution renormalised over its stored k tokens:
    (n, V) student logits and (n, k) stored ids and log-probabilities -> (n,)."""
    log_p_teacher = (teacher.log_probs.float() / temperature).log_softmax(-1)  # (n, k)
    log_p_student = (student.float() / temperature).log_softmax(-1).gather(-1, teacher.ids)  # (n, k)
    return _kl(log_p_teacher, log_p_student)


def _kl(log_p_teacher: Tensor, log_p_student: Tensor) -> Tensor:
    """sum p_teacher * (log p_teacher - log p_student) over the last axis."""
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)


def check_same_answers(student: int, teacher: int) -> None:
    if student != teacher:
        raise ValueError(
            f"Student and teacher answer logits differ in shape ({student} vs {teacher} answer tokens): the teacher "
            "input must carry exactly the same response tokens as the student input."
        )


def full_logit_losses(
    logits: Tensor, labels: Tensor, teacher: Teacher | TeacherTopK | None = None, temperature: float = 1.0
) -> TokenLosses:
    """Per-row losses from logits at every position.

    Args:
        logits: (B, L, V) student logits.
        labels: (B, L) student labels.
        teacher: (B_t, L_t, V) teacher logits and (B_t, L_t) teacher labels with the same answer tokens, the
            teacher's stored top-k at the labelled tokens, or None.
        temperature: KD softening temperature.
    """
    ce, count = token_cross_entropy(logits, labels)
    if teacher is None:
        return TokenLosses(ce, count)
    student = answer_logits(logits, labels)  # (n, V)
    if isinstance(teacher, TeacherTopK):
        check_same_answers(student.shape[0], teacher.ids.shape[0])
        per_token = topk_kl(student, teacher, temperature)
    else:
        target = answer_logits(*teacher)  # (n, V)
        check_same_answers(student.shape[0], target.shape[0])
        per_token = token_kl(student, target, temperature)
    rows, _ = answer_positions(labels)
    kl = ce.new_zeros(ce.shape).index_add(0, rows, per_token)  # (B,)
    return TokenLosses(ce, count, kl)


def labelled_losses(
    hidden: Tensor,
    labels: Tensor,
    head: Head,
    chunk_size: int,
    teacher: Teacher | TeacherTopK | None = None,
    temperature: float = 1.0,
    head_trains: bool = True,
) -> TokenLosses:
    """Per-row losses with the output head applied only at labelled positions, `chunk_size` at a time.

    Args:
        hidden: (B, L, H) student final hidden states.
        labels: (B, L) student labels (`IGNORE_INDEX` where untrained); shifted here.
        head: the output head, (n, H) -> (n, V) logits; it runs under no_grad for the teacher.
        chunk_size: labelled positions per chunk (the peak holds one chunk's (chunk_size, V) logits).
        teacher: (B_t, L_t, H) teacher hidden states (no grad) and (B_t, L_t) teacher labels with the same answer
            tokens, the teacher's stored top-k at the labelled tokens, or None.
        temperature: KD softening temperature.
        head_trains: whether any parameter of `head` takes gradients; False (a frozen head) takes each chunk's
            gradient in the forward pass instead of checkpointing it.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}; set model.init_args.loss_chunk_size.")
    rows, positions = answer_positions(labels)  # (n,)
    selected = hidden[rows, positions]  # (n, H)
    targets = labels[rows, positions + 1]  # (n,)
    teacher_selected = teacher
    if isinstance(teacher, TeacherTopK):
        check_same_answers(rows.shape[0], teacher.ids.shape[0])
    elif teacher is not None:
        teacher_rows, teacher_positions = answer_positions(teacher[1])
        check_same_answers(rows.shape[0], teacher_rows.shape[0])
        teacher_selected = teacher[0][teacher_rows, teacher_positions].detach()  # (n, H)
    empty = selected[:0].float().sum(-1)  # (0,), in the graph: a batch without labels still has a loss to backpropagate
    ce_parts, kl_parts = [empty], [empty]
    for start in range(0, rows.shape[0], chunk_size):
        piece = slice(start, start + chunk_size)
        chunk_teacher = _rows(teacher_selected, piece)
        args = (head, temperature, selected[piece], targets[piece], chunk_teacher)
        if not torch.is_grad_enabled():
            ce, kl = _chunk_losses(*args)
        elif head_trains:
            ce, kl = checkpoint(_chunk_losses, *args, use_reentrant=False)
        else:
            ce, kl = _GradientInForward.apply(*args)
        ce_parts.append(ce)
        kl_parts.append(kl)
    count = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)  # (B,)
    zeros = hidden.new_zeros(labels.shape[0], dtype=torch.float32)  # (B,)
    ce = zeros.index_add(0, rows, torch.cat(ce_parts))
    kl = None if teacher is None else zeros.index_add(0, rows, torch.cat(kl_parts))
    return TokenLosses(ce, count, kl)


def _rows(teacher: Tensor | TeacherTopK | None, piece: slice) -> Tensor | TeacherTopK | None:
    if isinstance(teacher, TeacherTopK):
        return TeacherTopK(teacher.ids[piece], teacher.log_probs[piece])
    return None if teacher is None else teacher[piece]


def _chunk_losses(
    head: Head, temperature: float, hidden: Tensor, targets: Tensor, teacher: Tensor | TeacherTopK | None
) -> tuple[Tensor, Tensor]:
    """(c, H) hidden states and (c,) targets -> (c,) cross-entropy and (c,) KL (zeros without a teacher) to the
    teacher's (c, H) hidden states or its stored top-k."""
    logits = head(hidden).float()  # (c, V)
    ce = nn.functional.cross_entropy(logits, targets, reduction="none")  # (c,)
    if teacher is None:
        return ce, torch.zeros_like(ce)
    if isinstance(teacher, TeacherTopK):
        return ce, topk_kl(logits, teacher, temperature)
    with torch.no_grad():
        teacher_logits = head(teacher)  # (c, V)
    return ce, token_kl(logits, teacher_logits, temperature)


class _GradientInForward(torch.autograd.Function):
    """`_chunk_losses` for a frozen head, its input gradients taken in the forward pass.

    Token i's CE and KL depend on hidden state i alone, so the gradient of the chunk's summed CE (and KL) with respect
    to the (c, H) hidden states holds each token's own gradient; backward scales those rows by the incoming (c,)
    gradients. The (c, V) logits are freed before the next chunk, never recomputed.
    """

    @staticmethod
    def forward(
        ctx, head: Head, temperature: float, hidden: Tensor, targets: Tensor, teacher: Tensor | TeacherTopK | None
    ):
        with torch.enable_grad():
            states = hidden.detach().requires_grad_()
            ce, kl = _chunk_losses(head, temperature, states, targets, teacher)
            ce_grad = torch.autograd.grad(ce.sum(), states, retain_graph=teacher is not None)[0]  # (c, H)
            kl_grad = None if teacher is None else torch.autograd.grad(kl.sum(), states)[0]  # (c, H)
        ctx.save_for_backward(ce_grad, kl_grad)
        return ce.detach(), kl.detach()

    @staticmethod
    def backward(ctx, ce_out: Tensor, kl_out: Tensor):
        ce_grad, kl_grad = ctx.saved_tensors
        grad = ce_grad * ce_out[:, None].to(ce_grad.dtype)  # (c, H)
        if kl_grad is not None:
            grad = grad + kl_grad * kl_out[:, None].to(kl_grad.dtype)
        return None, None, grad, None, None
