"""ALDI's alignment of the content map `g` with the warm rows it stands in for (Huang et al., "Aligning Distillation
For Cold-start Item Recommendation", SIGIR 2023): the warm items' SASRec+ rows are the teachers, `g(c)` the
student, and three losses narrow how the student recommends from how the teacher does, so that an item placed by
its text competes with warm items on their terms (score level, order, distinctness) instead of only being near
its future users:

- rating distribution: |t_ui - s_ui| + |t_uj - s_uj|, the student's scores on the teacher's scale (t = u . w_i,
  s = u . g(c_i) + g_b(c_i); SASRec+'s rows have no bias);
- ranking: binary cross-entropy of the student's margin s_ui - s_uj against the teacher's sigmoid(t_ui - t_uj);
- identification: the same between how much an item's vector stands out from the batch's negatives,
  g_i . g_i - g_i . mean(g_j), and the teacher's w_i . w_i - w_i . mean(w_j);

for a user vector u (the frozen encoder at a training position), its next item i (warm) and a warm item j drawn
uniformly. The ranking and identification terms are weighted by ALDI's teacher-qualifying weight, which trusts
rarely taken items less: tanh(M n_i / mean n) capped at tanh(M), n_i the item's training interactions. ALDI's
separate user map for the student is left out: served rows share one user vector and one index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TEACHER_CAP = 2.0
"""M of the teacher-qualifying weight: items taken at least as often as the mean get tanh(2) = .96."""


@dataclass(frozen=True)
class AlignmentWeights:
    """Weights of ALDI's three losses beside the DropoutNet softmax (0 turns one off)."""

    rating: float = 1.0
    ranking: float = 1.0
    identification: float = 1.0

    def __post_init__(self) -> None:
        if min(self.rating, self.ranking, self.identification) < 0:
            raise ValueError(f"alignment weights must be >= 0, got {self}")

    @property
    def off(self) -> bool:
        return not (self.rating or self.ranking or self.identification)


def teacher_weights(counts: torch.Tensor) -> torch.Tensor:
    """ALDI's teacher-qualifying weight per item code (n_items + 1,) from its training interactions `counts`: 0 for
    items nobody took, tanh(M n / mean n) up to tanh(M) for the others (mean over the taken items)."""
    taken = counts > 0
    mean = counts[taken].float().mean() if taken.any() else torch.tensor(1.0)
    return torch.tanh(torch.clamp(TEACHER_CAP * counts.float() / mean, max=TEACHER_CAP)) * taken


def alignment_loss(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, teacher: torch.Tensor,
                   student: torch.Tensor, weights: torch.Tensor, alignment: AlignmentWeights) -> torch.Tensor:
    """The weighted sum of ALDI's three losses for users (P, dim) with their next items `positives` (P,) and
    sampled warm items `negatives` (P,), as codes into `teacher` (SASRec+'s rows, n_items + 1 x dim + 1, bias 0)
    and `student` ([g(c), g_b(c)] of the same codes); `weights` are `teacher_weights`."""
    t_pos, t_neg = (users * teacher[positives, :-1]).sum(1), (users * teacher[negatives, :-1]).sum(1)
    g_pos, g_neg = student[positives], student[negatives]
    s_pos = (users * g_pos[:, :-1]).sum(1) + g_pos[:, -1]
    s_neg = (users * g_neg[:, :-1]).sum(1) + g_neg[:, -1]
    trust = weights[positives]
    total = alignment.rating * ((t_pos - s_pos).abs() + (t_neg - s_neg).abs()).mean()
    if alignment.ranking:
        ranking = F.binary_cross_entropy_with_logits(s_pos - s_neg, torch.sigmoid(t_pos - t_neg), reduction="none")
        total = total + alignment.ranking * (trust * ranking).mean()
    if alignment.identification:
        w_pos = teacher[positives, :-1]
        student_id = (g_pos[:, :-1] ** 2).sum(1) - g_pos[:, :-1] @ g_neg[:, :-1].mean(0)
        teacher_id = (w_pos ** 2).sum(1) - w_pos @ teacher[negatives, :-1].mean(0)
        identification = F.binary_cross_entropy_with_logits(student_id, torch.sigmoid(teacher_id), reduction="none")
        total = total + alignment.identification * (trust * identification).mean()
    return total
