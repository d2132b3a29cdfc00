"""Cold items' rows refined from simulated preferences (seed 001, arXiv 2511.21989: the augmented pairs train the
item side through an auxiliary BPR loss, Rendle et al., UAI 2009).

A simulated preference says that user u prefers item w to item l (with a confidence in [0, 1]). The refinement
moves only the rows of the items in those pairs, starting from the rows they are served by (g(c) for a cold item):
`[v_i, b_i] += d_i`, minimizing the confidence-weighted BPR loss `-log sigmoid(s(u, w) - s(u, l))` with
`s(u, i) = u . v_i + b_i` plus `l2` times the mean squared norm of the moved items' `d_i`, so that rows stay near
their text's placement when the pairs say little. User vectors (the frozen encoder on the users' training
histories) and every other row stay as they are. Used by `reasonrec experiment simulated-users` (which measures
it) and by the gateway's simulated-user job (`service.simulated_users`), with the same answers-to-pairs rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Preferences:
    """Simulated pairs by table code: user `users[k]` prefers `winners[k]` to `losers[k]` with `weights[k]`."""

    users: torch.Tensor
    """(n,) rows of the user-vector matrix."""
    winners: torch.Tensor
    """(n,) table codes."""
    losers: torch.Tensor
    """(n,) table codes."""
    weights: torch.Tensor
    """(n,) confidences in [0, 1]."""

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @classmethod
    def of_answers(cls, answers: Sequence[tuple[int, int, int, float]]) -> Preferences:
        """Answers (user row, first code, second code, p = P(first preferred)) as pairs: the preferred item wins,
        with confidence |2p - 1| (an answer of .5 says nothing)."""
        first_wins = [p >= 0.5 for _, _, _, p in answers]
        return cls(torch.tensor([u for u, _, _, _ in answers], dtype=torch.long),
                   torch.tensor([a if win else b for (_, a, b, _), win in zip(answers, first_wins, strict=True)],
                                dtype=torch.long),
                   torch.tensor([b if win else a for (_, a, b, _), win in zip(answers, first_wins, strict=True)],
                                dtype=torch.long),
                   torch.tensor([abs(2 * p - 1) for _, _, _, p in answers], dtype=torch.float32))


def refine_rows(rows: torch.Tensor, user_vectors: torch.Tensor, pairs: Preferences, steps: int = 100,
                lr: float = 0.05, l2: float = 0.1) -> torch.Tensor:
    """`rows` (n_items + 1, dim + 1) with the rows of the items in `pairs` moved by the weighted BPR loss (full
    batch Adam, `steps` steps); a new tensor, `rows` is not changed. No pairs or no weight: `rows` unchanged."""
    if not len(pairs) or float(pairs.weights.sum()) <= 0:
        return rows.clone()
    moved = torch.unique(torch.cat([pairs.winners, pairs.losers]))
    delta = torch.zeros(len(moved), rows.shape[1], requires_grad=True)
    slot = torch.full((rows.shape[0],), -1, dtype=torch.long)
    slot[moved] = torch.arange(len(moved))
    users = user_vectors[pairs.users]
    optimizer = torch.optim.Adam([delta], lr=lr)
    base_w, base_l = rows[pairs.winners], rows[pairs.losers]
    total = pairs.weights.sum()
    for _ in range(steps):
        optimizer.zero_grad()
        row_w, row_l = base_w + delta[slot[pairs.winners]], base_l + delta[slot[pairs.losers]]
        margin = (users * (row_w[:, :-1] - row_l[:, :-1])).sum(dim=1) + row_w[:, -1] - row_l[:, -1]
        loss = -(pairs.weights * torch.nn.functional.logsigmoid(margin)).sum() / total
        loss = loss + l2 * delta.pow(2).sum(dim=1).mean()
        loss.backward()
        optimizer.step()
    refined = rows.clone()
    with torch.no_grad():
        refined[moved] += delta
    return refined
