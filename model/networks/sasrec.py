"""SASRec+: the production ranker. A causal self-attention network over item ids (Kang & McAuley, ICDM 2018,
"Self-Attentive Sequential Recommendation") trained with full softmax cross-entropy over all items instead of
one sampled negative (Klenitskiy & Vasilev, RecSys 2023, "Turning Dross Into Gold Loss: is BERT4Rec really
better than SASRec?"), and the scorer the service loads.

The network follows SASRec as the paper's code builds it: item embeddings (scaled by sqrt(hidden)) plus learned
positions counted from the start of the window of at most `max_len` most recent items, causal self-attention
blocks with a point-wise feed-forward layer as wide as the hidden state, a final layer norm, and logits = hidden
state times the *same* item embeddings (tied). The blocks are standard pre-norm transformer blocks (GPT-2
style) rather than the original code's variant. Id 0 is padding; sequences are right-padded, so causal
attention alone keeps padding out of every real position.

Serving API (docs/design.md section 3, ranker `sasrec`):

    scorer = SasrecScorer.load("artifacts/sasrec/ml-1m-leave-one-out-seed0")
    scorer.score(["Toy Story (1995)", ...])      # -> Scores(item_ids, scores, ignored_history)
    scorer.top_k(history, k=10, exclude=history) # -> [(item_id, score), ...] best first
    scorer.cannot_score(candidate_ids)           # ids it has never seen (e.g. hot-added items)

The scorer knows only the items of its training data (its vocabulary); it cannot score any other item, and
history entries it does not know are skipped (`Scores.ignored_history` says which). `top_k` raises
`CannotScoreError` for a history without any item it knows, so a caller can fall back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from indexer.core.durable import replace_text, replace_with

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
PAD = 0


@dataclass(frozen=True)
class SasrecConfig:
    """Shape of the network (the paper's SASRec+ on ML-1M by default)."""

    n_items: int
    """Items in the vocabulary; their ids are 1..n_items (0 is padding)."""
    max_len: int = 200
    """Most recent history items the network reads."""
    hidden: int = 64
    """Embedding and hidden size."""
    blocks: int = 2
    """Self-attention blocks."""
    heads: int = 1
    """Attention heads per block (must divide --hidden)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention outputs and feed-forward layers during training."""

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1 (items in the training data), got {self.n_items}")
        if self.max_len < 1:
            raise ValueError(f"--max-len must be >= 1, got {self.max_len}")
        if self.hidden < 1 or self.blocks < 1 or self.heads < 1:
            raise ValueError("--hidden, --blocks and --heads must be >= 1")
        if self.hidden % self.heads:
            raise ValueError(f"--heads ({self.heads}) must divide --hidden ({self.hidden})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")


class CausalBlock(nn.Module):
    """Pre-norm causal self-attention and point-wise feed-forward (inner size = hidden, as in SASRec).

    Dropout acts on the attention output rather than on the attention weights: on CPU, dropout inside the
    attention kernel made a training step several times slower (measured on ML-1M, batch 128 x 200)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, hidden))
        return x + self.ffn(self.ffn_norm(x))


class SasrecNet(nn.Module):
    """Item ids (batch, length), right-padded with 0 -> hidden states; `item_logits` scores every item."""

    def __init__(self, config: SasrecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            CausalBlock(config.hidden, config.heads, config.dropout) for _ in range(config.blocks))
        self.final_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self.apply(init_weights)


    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, length, hidden); position t depends only on ids[:, :t + 1]."""
        if ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequences of {ids.shape[1]} items exceed max_len {self.config.max_len}")
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.item_emb(ids) * math.sqrt(self.config.hidden) + self.pos_emb(positions)
        x = self.emb_dropout(x) * (ids != PAD).unsqueeze(-1)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores (..., n_items) of items 1..n_items (column j is item id j + 1) for hidden states (..., hidden)."""
        return hidden @ self.item_emb.weight[1:].T


def init_weights(module: nn.Module) -> None:
    """Normal(0, 0.02) weights and zero biases, as the paper's code (and GPT-2) do; padding rows zero."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


def right_padded(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """A (len(sequences), longest) int64 tensor of the sequences, padded on the right with `PAD`."""
    width = max(map(len, sequences), default=0)
    batch = np.full((len(sequences), max(width, 1)), PAD, dtype=np.int64)
    for row, seq in enumerate(sequences):
        batch[row, : len(seq)] = seq
    return torch.from_numpy(batch)


def last_logits(net: SasrecNet, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """Next-item scores (batch, n_items) after each (non-empty, at most max_len long) sequence of codes."""
    ids = right_padded(sequences)
    lengths = torch.tensor([len(seq) for seq in sequences])
    hidden = net(ids)[torch.arange(len(sequences)), lengths - 1]
    return net.item_logits(hidden)


def is_finished(meta: dict) -> bool:
    """Whether a checkpoint's metadata says its training run is done (not a best-so-far of a run in progress):
    the one check every job that uses a checkpoint makes."""
    return meta.get("status") == "done"


def finished_checkpoint(folder: Path) -> Path | None:
    """`folder` if it holds the checkpoint of a finished training run, else None."""
    meta = folder / META_FILE
    if not meta.is_file() or not (folder / WEIGHTS_FILE).is_file():
        return None
    return folder if is_finished(json.loads(meta.read_text(encoding="utf-8"))) else None


class CannotScoreError(ValueError):
    """A history the scorer cannot score: it knows none of its items."""


@dataclass(frozen=True)
class Scores:
    """Scores of every item the scorer knows, for one history."""

    item_ids: list[str]
    """The scorer's vocabulary, in its fixed order (the same list object for every call)."""
    scores: np.ndarray
    """float32 (len(item_ids),): higher is better."""
    ignored_history: tuple[str, ...]
    """History ids the scorer has never seen; they were skipped."""


class SasrecScorer:
    """A trained `SasrecNet` and its item vocabulary, in eval mode on CPU. Thread-safe for scoring."""

    def __init__(self, net: SasrecNet, item_ids: Sequence[str], meta: dict | None = None) -> None:
        if len(item_ids) != net.config.n_items:
            raise ValueError(f"{len(item_ids)} item ids for a network over {net.config.n_items} items")
        self.net = net.eval()
        self.item_ids = list(item_ids)
        self.meta = meta or {}
        self._code = {item_id: code for code, item_id in enumerate(self.item_ids, start=1)}

    # ---- persistence -----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | Path) -> SasrecScorer:
        """Load `model.safetensors` and `meta.json` (written by `save`) from a checkpoint folder."""
        folder = Path(folder)
        meta_path = folder / META_FILE
        if not meta_path.is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a SASRec checkpoint (needs {WEIGHTS_FILE} and {META_FILE}); "
                                    "train one with `reasonrec train-sasrec`")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        net = SasrecNet(SasrecConfig(**meta["network"]))
        net.load_state_dict(load_file(folder / WEIGHTS_FILE))
        return cls(net, meta["item_ids"], meta)

    def save(self, folder: str | Path, meta: dict) -> None:
        """Write the weights and `meta` (plus network config and vocabulary), each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        replace_with(folder / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
        self.meta = {**meta, "network": asdict(self.net.config), "item_ids": self.item_ids}
        replace_text(folder / META_FILE, json.dumps(self.meta, indent=1))

    # ---- scoring ---------------------------------------------------------------------------------------------

    def cannot_score(self, item_ids: Iterable[str]) -> list[str]:
        """The ids among `item_ids` the scorer has never seen (in their order): it cannot score them."""
        return [item_id for item_id in item_ids if item_id not in self._code]

    def codes(self, history: Sequence[str]) -> list[int]:
        """Vocabulary codes (1-based) of the known history items, the most recent `max_len` of them."""
        known = [self._code[item_id] for item_id in history if item_id in self._code]
        return known[-self.net.config.max_len:]

    def score_batch(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Scores (len(histories), vocabulary) in `item_ids` order; a row whose history holds no known item
        is all zeros (no preference)."""
        codes = [self.codes(history) for history in histories]
        rows = [i for i, seq in enumerate(codes) if seq]
        out = np.zeros((len(histories), len(self.item_ids)), dtype=np.float32)
        if rows:
            with torch.inference_mode():
                out[rows] = last_logits(self.net, [codes[i] for i in rows]).float().numpy()
        return out

    def score(self, history: Sequence[str]) -> Scores:
        """Scores of every known item after `history` (oldest first)."""
        return Scores(self.item_ids, self.score_batch([history])[0], tuple(self.cannot_score(history)))

    def top_k(self, history: Sequence[str], k: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """The k best known items (id, score), best first, never one of `exclude`; raises `CannotScoreError` when
        no history item is in the vocabulary (every score would be 0: an order that means nothing)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not self.codes(history):
            raise CannotScoreError(f"none of the {len(history)} history item(s) is in the vocabulary")
        scores = self.score_batch([history])[0]
        banned = [self._code[i] - 1 for i in exclude if i in self._code]
        scores[banned] = -np.inf
        k = min(k, len(scores) - len(set(banned)))
        best = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.array([], dtype=np.int64)
        best = best[np.lexsort((best, -scores[best]))]
        return [(self.item_ids[i], float(scores[i])) for i in best]
