"""ALDI's alignment losses (`trainer.train.table.aldi`): they vanish where the student is the teacher, they pull a
student's scores to the teacher's level and order, and they trust rarely taken teachers less."""

from __future__ import annotations

import pytest
import torch

from trainer.train.table.aldi import TEACHER_CAP, AlignmentWeights, alignment_loss, teacher_weights

ALL_ON = AlignmentWeights(rating=1.0, ranking=1.0, identification=1.0)


def _teacher(n_items: int = 30, dim: int = 8) -> torch.Tensor:
    teacher = torch.randn(n_items + 1, dim + 1)
    teacher[:, -1] = 0  # SASRec+'s rows have no bias
    teacher[0] = 0
    return teacher


def test_the_student_that_equals_its_teacher_gets_no_gradient() -> None:
    torch.manual_seed(0)
    teacher = _teacher()
    student = teacher.clone().requires_grad_(True)
    users, positives, negatives = torch.randn(64, 8), torch.randint(1, 31, (64,)), torch.randint(1, 31, (64,))
    alignment_loss(users, positives, negatives, teacher, student, torch.ones(31), ALL_ON).backward()
    assert student.grad is not None
    # |t - s| has a zero subgradient at 0 and the cross-entropies are smallest where the margins agree
    assert student.grad.abs().max() < 1e-5


def test_the_losses_pull_a_student_to_the_teachers_scores() -> None:
    torch.manual_seed(0)
    teacher = _teacher()
    student = torch.nn.Parameter(torch.randn(31, 9) * 0.1)
    optimizer = torch.optim.Adam([student], lr=0.05)
    users = torch.randn(256, 8)

    def gap() -> float:
        with torch.no_grad():
            return float((users @ teacher[1:, :-1].T - (users @ student[1:, :-1].T + student[1:, -1])).abs().mean())

    before = gap()
    for _ in range(300):
        positives, negatives = torch.randint(1, 31, (256,)), torch.randint(1, 31, (256,))
        loss = alignment_loss(users, positives, negatives, teacher, student, torch.ones(31), ALL_ON)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert gap() < 0.1 * before


def test_each_loss_can_be_turned_off() -> None:
    torch.manual_seed(0)
    teacher, student = _teacher(), torch.randn(31, 9)
    args = (torch.randn(16, 8), torch.randint(1, 31, (16,)), torch.randint(1, 31, (16,)), teacher, student,
            torch.ones(31))
    parts = [alignment_loss(*args, AlignmentWeights(rating=r, ranking=k, identification=i))
             for r, k, i in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    assert all(part > 0 for part in parts)
    torch.testing.assert_close(alignment_loss(*args, ALL_ON), sum(parts))
    assert AlignmentWeights(0, 0, 0).off and not ALL_ON.off
    with pytest.raises(ValueError, match=">= 0"):
        AlignmentWeights(rating=-1.0)


def test_teachers_taken_rarely_are_trusted_less() -> None:
    weights = teacher_weights(torch.tensor([0, 0, 1, 5, 10, 100]))
    assert weights[0] == 0 and weights[1] == 0  # padding and an item nobody took
    assert bool((weights[2:].diff() >= 0).all()) and weights[2] < weights[3]
    assert float(weights.max()) == pytest.approx(float(torch.tanh(torch.tensor(TEACHER_CAP))))
