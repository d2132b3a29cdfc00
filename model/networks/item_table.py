"""The served ranker's networks (docs/design.md section 2): the trainer-built item table, the sequence encoder over
it and the head on the language model's final state.

- Item vector and bias: `v_i = g(c_i) + e_i`, `b_i = g_b(c_i) + e_b,i`. `g` (with its bias output `g_b`) maps an
  item's content features `c_i` (its language-model state and MiniLM text vector, `model.networks.item_features`);
  `e_i`, `e_b,i` are residuals learned for items with training interactions. An item nobody has taken yet (cold,
  hot-added) has no residual and gets `g(c)` alone; training drops the residuals of a share of the items at each
  step (DropoutNet: Volkovs et al., "DropoutNet: Addressing Cold Start in Recommender Systems", NeurIPS 2017), so
  that `g(c)` alone places an item where its future users are.
- User vector: `u = s(history) + f(h)`. `s` is SASRec (Kang & McAuley, ICDM 2018) over the table's item vectors
  (causal self-attention, the vector at the last position); `f` a small head on the language model's state `h`
  at `<answer>` (optional: without it `u = s(history)`).
- Score: `u . v_i + b_i`, trained with full softmax cross-entropy over all items (Klenitskiy & Vasilev, "Turning
  Dross Into Gold Loss", RecSys 2023). Served as an inner-product search of `[u, 1]` against `[v_i, b_i]`.

Item codes are 1..n_items (0 is padding), as in `model.networks.sasrec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from model.networks.sasrec import PAD, CausalBlock, init_weights


@dataclass(frozen=True)
class TableConfig:
    """Shape of the networks."""

    n_items: int
    """Items in the table (codes 1..n_items)."""
    content_dim: int
    """Width of an item's content features."""
    state_dim: int = 0
    """Width of the language model's state (the head's input); 0 = no head."""
    dim: int = 64
    """Width of item and user vectors."""
    content_hidden: int = 256
    """Hidden width of the content map g."""
    max_len: int = 200
    """Most recent history items the encoder reads."""
    blocks: int = 2
    """Self-attention blocks of the encoder."""
    heads: int = 1
    """Attention heads (must divide dim)."""
    dropout: float = 0.2
    """Dropout in the encoder and the content map during training."""

    def __post_init__(self) -> None:
        if min(self.n_items, self.content_dim, self.dim, self.content_hidden, self.max_len, self.blocks) < 1:
            raise ValueError(f"every size of the table must be >= 1: {self}")
        if self.state_dim < 0 or self.dim % self.heads or not 0 <= self.dropout < 1:
            raise ValueError(f"state_dim >= 0, heads dividing dim and dropout in [0, 1) are needed: {self}")


class ContentMap(nn.Module):
    """g: content features (n, content_dim) -> item vectors and biases (n, dim + 1). Its output layer starts at
    zero, so training starts from SASRec+'s own initialization (every weight N(0, .02)) and g learns what content
    adds: with a random g and PyTorch's default initialization the table learned markedly slower than SASRec+ on
    ML-1M (validation NDCG@10 .107 against .140 after 9 epochs)."""

    def __init__(self, config: TableConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(config.content_dim, config.content_hidden), nn.GELU(),
                                 nn.Dropout(config.dropout), nn.Linear(config.content_hidden, config.dim + 1))
        nn.init.zeros_(self.net[-1].weight)  # g starts at 0: the table starts as SASRec's item embeddings
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        return self.net(content)


def state_head(config: TableConfig, zero_start: bool = False) -> nn.Module:
    """A head `f` on the language model's state: LayerNorm + linear to the table's width. With `zero_start` its
    output starts at zero, i.e. as "no change" to s(history) (the served head); without, as the `f(h)`-alone
    ablation starts."""
    head = nn.Sequential(nn.LayerNorm(config.state_dim), nn.Linear(config.state_dim, config.dim))
    if zero_start:
        nn.init.zeros_(head[1].weight)
        nn.init.zeros_(head[1].bias)
    return head


class TableModel(nn.Module):
    """The item table, the encoder `s` and the head `f`.

    `warm` (n_items,) marks the items that have a residual (training interactions); it is a buffer, saved with
    the weights. The items' content features are not: they are recomputed from the items' text by the model that
    made them (`model.networks.item_features`) and passed in, so the saved table stays small."""

    def __init__(self, config: TableConfig, warm: torch.Tensor) -> None:
        super().__init__()
        if warm.shape != (config.n_items,):
            raise ValueError(f"warm {tuple(warm.shape)} does not fit {config}")
        self.config = config
        self.register_buffer("warm", torch.cat([torch.zeros(1, dtype=torch.bool), warm.bool()]))
        self.content_map = ContentMap(config)
        self.residual = nn.Embedding(config.n_items + 1, config.dim + 1, padding_idx=PAD)
        self.positions = nn.Embedding(config.max_len, config.dim)
        self.input_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(CausalBlock(config.dim, config.heads, config.dropout)
                                    for _ in range(config.blocks))
        self.final_norm = nn.LayerNorm(config.dim, eps=1e-8)
        for module in (self.residual, self.positions, self.blocks):
            module.apply(init_weights)  # as SASRec+: N(0, .02) weights, zero biases
        self.head = state_head(config, zero_start=True) if config.state_dim else None

    # ---- items -------------------------------------------------------------------------------------------------

    def content_rows(self, content: torch.Tensor) -> torch.Tensor:
        """[g(c), g_b(c)] (n, dim + 1) of content features not in the table (hot-added items, outside titles)."""
        return self.content_map(content.float())

    def table(self, content: torch.Tensor, keep_residual: torch.Tensor | None = None) -> torch.Tensor:
        """Every item's [v, b] (n_items + 1, dim + 1), row = code, row 0 zeros, from the items' content features
        `content` (n_items + 1, content_dim; row 0 ignored). `keep_residual` (n_items + 1,) bool: items whose
        residual is used (default: every warm item); the others get the content part alone."""
        if content.shape != (self.config.n_items + 1, self.config.content_dim):
            raise ValueError(f"content features {tuple(content.shape)} do not fit {self.config}")
        keep = self.warm if keep_residual is None else self.warm & keep_residual
        rows = self.content_map(content.float()) + self.residual.weight * keep[:, None]
        return torch.cat([torch.zeros_like(rows[:1]), rows[1:]])

    # ---- users -------------------------------------------------------------------------------------------------

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """s: hidden states (B, L, dim) of right-padded histories given as item vectors `inputs` (B, L, dim) with
        `lengths` (B,) real positions each; position t depends on inputs[:, :t + 1] only."""
        if inputs.shape[1] > self.config.max_len:
            raise ValueError(f"histories of {inputs.shape[1]} items exceed max_len {self.config.max_len}")
        length = inputs.shape[1]
        real = torch.arange(length)[None, :] < lengths[:, None]
        x = inputs * math.sqrt(self.config.dim) + self.positions(torch.arange(length))
        x = self.input_dropout(x) * real.unsqueeze(-1)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def user_vectors(self, inputs: torch.Tensor, lengths: torch.Tensor,
                     states: torch.Tensor | None = None) -> torch.Tensor:
        """u = s(history) at the last real position (+ f(h) when `states` (B, state_dim) are given): (B, dim)."""
        hidden = self.encode(inputs, lengths)[torch.arange(len(lengths)), lengths - 1]
        return hidden if states is None else hidden + self.head_term(states)

    @property
    def head_is_zero(self) -> bool:
        """Whether f(h) is 0 whatever the state (no head, or its output layer kept the zero start): the served
        `direct` and `reasoning` then rank by s(history) alone."""
        if self.head is None:
            return True
        out = self.head[-1]
        return not (bool(out.weight.detach().any()) or bool(out.bias.detach().any()))

    def head_term(self, states: torch.Tensor) -> torch.Tensor:
        """f(h): (B, dim)."""
        if self.head is None:
            raise ValueError("this table was trained without a head on the language model's state")
        return self.head(states.float())


def scores(users: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """u . v_i + b_i for users (..., dim) against table rows [v, b] (n, dim + 1): (..., n)."""
    return users @ table[:, :-1].T + table[:, -1]
