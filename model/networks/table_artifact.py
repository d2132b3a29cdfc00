"""The item-table artifact: what `reasonrec train-table` writes and the index job, the service and the evaluation
load (docs/design.md section 2).

A folder with `table.safetensors` (the `model.networks.item_table.TableModel` weights, with the head on the language
model's state when one was trained), `head-alone.safetensors` (the ablation head `f(h)` trained without `s`,
when trained), `center.npy` (the mean language-model item state the content features are centered with) and
`table.json`: the network shape, the item ids in code order, the content features used, the language model's
fingerprint, the data and split, the metrics and the command. The artifact is small (about 2 MB for ML-100k):
the items' content features are recomputed from their text, not stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from indexer.core.catalog import Item
from indexer.core.durable import replace_text, replace_with
from indexer.core.fingerprint import ModelFingerprint
from model.networks.item_features import FeatureSpec, combine
from model.networks.item_table import TableConfig, TableModel, state_head

WEIGHTS_FILE = "table.safetensors"
ALONE_HEAD_FILE = "head-alone.safetensors"
CENTER_FILE = "center.npy"
META_FILE = "table.json"


@dataclass
class TableArtifact:
    model: TableModel
    item_ids: list[str]
    """Item id of each code 1..n (code = position + 1)."""
    spec: FeatureSpec
    center: np.ndarray | None
    fingerprint: ModelFingerprint | None
    """The language model of the content features and of the head's states (None: MiniLM features only)."""
    meta: dict
    alone: nn.Module | None = None

    @property
    def code_of(self) -> dict[str, int]:
        return {item_id: code for code, item_id in enumerate(self.item_ids, start=1)}

    @property
    def has_head(self) -> bool:
        return self.model.head is not None

    def save(self, folder: Path, meta: dict) -> None:
        """Write every file atomically (weights first, `table.json` last: a folder with it is complete)."""
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_safetensors(folder / WEIGHTS_FILE, self.model.state_dict())
        if self.alone is not None:
            _atomic_safetensors(folder / ALONE_HEAD_FILE, self.alone.state_dict())
        if self.center is not None:
            replace_with(folder / CENTER_FILE, lambda tmp: _save_npy(tmp, self.center.astype(np.float32)))
        self.meta = {**meta, "network": asdict(self.model.config), "item_ids": self.item_ids,
                     "features": asdict(self.spec),
                     "fingerprint": self.fingerprint.to_json() if self.fingerprint else None,
                     "weights_sha256": file_hash(folder / WEIGHTS_FILE)}
        replace_text(folder / META_FILE, json.dumps(self.meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> TableArtifact:
        folder = Path(folder)
        if not (folder / META_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not an item-table artifact (needs {META_FILE} and {WEIGHTS_FILE}); "
                                    "train one with `reasonrec train-table`")
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        config = TableConfig(**meta["network"])
        model = TableModel(config, torch.zeros(config.n_items, dtype=torch.bool))
        model.load_state_dict(load_file(folder / WEIGHTS_FILE))
        model.eval()
        alone = None
        if (folder / ALONE_HEAD_FILE).is_file():
            alone = state_head(config)
            alone.load_state_dict(load_file(folder / ALONE_HEAD_FILE))
            alone.eval()
        center = np.load(folder / CENTER_FILE) if (folder / CENTER_FILE).is_file() else None
        fingerprint = ModelFingerprint.from_json(meta["fingerprint"]) if meta.get("fingerprint") else None
        return cls(model, list(meta["item_ids"]), FeatureSpec(**meta["features"]), center, fingerprint, meta, alone)

    def content_rows(self, features: np.ndarray) -> np.ndarray:
        """[g(c), g_b(c)] (n, dim + 1) of items outside the table (hot-added items, titles outside the catalog):
        their content part alone, as a cold item has no residual."""
        with torch.inference_mode():
            return self.model.content_rows(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()

    def index_rows(self, items: Sequence[Item], states: np.ndarray) -> np.ndarray:
        """The [v, b] row of each item from its raw item state, as the index holds it: the trained row for the
        table's items, the content part alone for the others."""
        text = None
        if self.spec.minilm:
            from model.networks.minilm import MiniLMEncoder, item_text  # loads MiniLM only for tables that read it

            text = MiniLMEncoder().encode([item_text(item) for item in items])
        features = combine(self.spec, states, text, self.center)
        code = self.code_of
        in_table = np.zeros((self.model.config.n_items + 1, features.shape[1]), dtype=np.float32)
        rows_of = {code[item.item_id]: row for row, item in enumerate(items) if item.item_id in code}
        in_table[list(rows_of)] = features[list(rows_of.values())]
        with torch.inference_mode():
            trained = self.model.table(torch.from_numpy(in_table)).numpy()
        rows = self.content_rows(features)
        for table_code, row in rows_of.items():
            rows[row] = trained[table_code]
        return rows

    def content_served(self, item_ids: Sequence[str]) -> np.ndarray:
        """(n,) bool: which of `item_ids` are served by g(c) alone (no residual: outside the table or without
        training interactions), the candidates of the cold slots (`model.rankers.cold_slots`)."""
        code, warm = self.code_of, self.model.warm
        return np.array([item_id not in code or not bool(warm[code[item_id]]) for item_id in item_ids], dtype=bool)

    @property
    def table_hash(self) -> str:
        """Identifies the trained weights (index manifests and cache keys carry it)."""
        return str(self.meta.get("weights_sha256", ""))[:12]


def finished_table(folder: Path) -> bool:
    """Whether `folder` holds the artifact of a finished `reasonrec train-table` run."""
    meta = folder / META_FILE
    return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("status") == "done"


def stored_fingerprint(folder: Path) -> ModelFingerprint | None:
    """The language model whose states a table artifact was trained on, read from its manifest alone (None: a
    table of MiniLM features only)."""
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    return ModelFingerprint.from_json(meta["fingerprint"]) if meta.get("fingerprint") else None


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:  # a file object: np.save would add ".npy" to a temporary name
        np.save(f, array)


def _atomic_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    replace_with(path, lambda tmp: save_file(tensors, tmp))
