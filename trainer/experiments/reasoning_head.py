"""The head for reasoning states (`reasonrec experiment reasoning-head`): does the language model's state after its
taught reasoning carry more of the next item than its `direct` state? The experiment of R2ec ("Towards Large
Recommender Models with Reasoning"), where the state at `<answer>` after the reasoning is the user vector, run on
the item table of `reasonrec train-table` (docs/design.md section 2).

Samples, the same for every head: the table job's training windows (`table_head.training_windows`: `head_users`
seeded training users, every cut of their last window of 20 training items). Two states per sample:
- direct: the base model's state at `<answer>` right after the prompt (the served `direct` head's input, cached
  beside the table's own head states);
- reasoning: the reasoning adapter's (`reasonrec train-reasoning`) state at `<answer>` after the generator's
  rationale for the cut (`trainer.reasoning.rationales`), teacher-forced: no generation, every cut of a window in
  one packed forward (`trainer.reasoning.packing.packed_states`). Two kinds, by the rationale's conclusion:
  `hindsight` (the next item's genre and decade, as the SFT teaches) and `forecast` (what the window alone
  suggests, `rationales.forecast`), which is what the model's own conclusion can be at test time.
Validation (early stopping) and test: seeded users with the served prompt; for reasoning, the adapter's own greedy
reasoning within the served budget (`TransformersEngine.reason`, the served path), the same states for both
reasoning kinds. States are cached on disk.

Six heads, trained as the table job trains its own (`table_head.fit_head`: full softmax over the frozen table's
warm items, AdamW, early stopping on validation NDCG@10): f(h) alone and s + f(h), on each kind of state. The
report gives each head's test HR@10 / NDCG@10 with 95% bootstrap intervals, s alone, and the paired differences of
each reasoning kind against direct.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from indexer.core.paths import SHIPPED, artifacts_dir, finished_or_shipped, table_dir
from model.engines.base import Engine
from model.engines.cut_states import cut_prompt
from model.networks.item_table import state_head
from model.networks.table_artifact import TableArtifact, finished_table
from model.prompts import UserHistory
from model.rankers.llm import LlmRanker
from trainer.batch_cache import BatchCache
from trainer.data.datasets import Dataset
from trainer.data.protocols import SplitConfig, test_parts
from trainer.data.splits import sample_examples
from trainer.machine import machine_line, shown_path
from trainer.protocol.harness import user_history
from trainer.protocol.metrics import bootstrap_ci
from trainer.reasoning.facts import ReasoningContext
from trainer.reasoning.packing import WindowSample, pack_window, packed_states
from trainer.reasoning.rationales import teacher_forced_text, token_counter
from trainer.train.table.config import HeadTraining
from trainer.train.table.features import item_features, table_store
from trainer.train.table.heads import (
    HeadData,
    Window,
    direct_states,
    fit_head,
    head_data,
    head_ranking,
    served_windows,
    training_windows,
)

log = logging.getLogger(__name__)
REASONING_KINDS = ("hindsight", "forecast")
"""The reasoning states' kinds by the conclusion of the training rationales (`hindsight=True`, False)."""


@dataclass
class ReasoningHeadConfig(SplitConfig, HeadTraining):
    """What `reasonrec experiment reasoning-head` trains and measures."""

    model: str = "smollm2"
    """Base LLM: smollm2, tiny or a local HF folder (the table's features and the direct states)."""
    adapter: Path | None = None
    """The reasoning adapter (`reasonrec train-reasoning`) whose states the reasoning heads read (required)."""
    table: Path | None = None
    """The item table; default the dataset's served one (trained here when finished, else the shipped one)."""
    head_users: int = 200
    """Seeded training users whose last window gives the samples (one per cut), as `train-table --head-users`."""
    valid_users: int = 150
    """Seeded validation users (early stopping), each with its own generated reasoning."""
    test_users: int = 300
    """Seeded test users (of the "all" test part; the eval job's direct sample of this size)."""
    reasoning_tokens: int = 48
    """Token budget of the generated reasonings (the served default)."""
    batch_size: int = 16
    """Prompts per reasoning call."""
    conclusions: tuple[str, ...] = REASONING_KINDS
    """Which reasoning heads to train, by the conclusion of their training rationales: hindsight, forecast."""
    seed: int = 0
    """Seed of the user samples, the rationales' phrasing and the heads' training order."""
    out_dir: Path = Path("docs/results")
    """Where the markdown and JSON reports go."""
    report_name: str | None = None
    """File name of the report without suffix; default `<dataset>-reasoning-head`."""

    def __post_init__(self) -> None:
        self.adapter = Path(self.adapter) if self.adapter is not None else None
        self.table = Path(self.table) if self.table is not None else None
        self.out_dir = Path(self.out_dir)
        super().__post_init__()
        if self.adapter is None:
            raise ValueError("--adapter is required: the reasoning adapter (reasonrec train-reasoning)")
        self.check_head_training()
        self.conclusions = tuple(self.conclusions)
        if not self.conclusions or set(self.conclusions) - set(REASONING_KINDS):
            raise ValueError(f"--conclusions must name some of {', '.join(REASONING_KINDS)}, not "
                             f"{' '.join(self.conclusions) or 'none'}")
        if min(self.head_users, self.valid_users, self.test_users, self.reasoning_tokens, self.batch_size) < 1:
            raise ValueError("--head-users, --valid-users, --test-users, --reasoning-tokens and --batch-size must "
                             "be >= 1")

    def table_folder(self) -> Path:
        folder = self.table or finished_or_shipped(table_dir(self.dataset, self.protocol),
                                                   SHIPPED / self.dataset / "table", finished_table)
        if folder is None:
            raise FileNotFoundError(f"no item table for {self.dataset}: run `reasonrec train-table --dataset "
                                    f"{self.dataset}` or pass --table")
        return folder


def taught_states(windows: list[Window], ds: Dataset, context: ReasoningContext, reasoner: Engine, seed: int,
                  cache: BatchCache, hindsight: bool) -> np.ndarray:
    """The reasoner's state at `<answer>` after each cut's teacher-forced rationale (concluding in hindsight or on
    the window's forecast), in example order; one packed forward per window (a cut whose tokens do not split at the
    window boundary gets a whole-chat pass)."""
    count = token_counter(reasoner.tokenizer)
    out = []
    for window, pairs in tqdm(windows, desc="taught reasoning states", unit="window"):
        lines = UserHistory.of_items([(x.item_id, x.rating, x.timestamp) for x in window], ds.catalog).lines
        texts = tuple(teacher_forced_text(e, context, seed, count, hindsight=hindsight) for _, e in pairs)
        sample = WindowSample(lines, tuple(k for k, _ in pairs), texts)

        def compute(_: list[str], sample: WindowSample = sample) -> np.ndarray:
            row = pack_window(reasoner.tokenizer, sample)
            states = np.zeros((len(sample.cuts), reasoner.hidden_size), np.float32)
            states[list(row.packed_cuts)] = packed_states(reasoner.model, row, reasoner.tokenizer.pad_token_id)
            missing = [j for j in range(len(sample.cuts)) if j not in row.packed_cuts]
            if missing:
                prompts = [cut_prompt(sample.lines, sample.cuts[j]) for j in missing]
                states[missing] = reasoner.assistant_states(prompts, [sample.texts[j] for j in missing])
            return states

        out.append(cache.get_or_compute([repr(line) for line in lines] + list(sample.texts), compute))
    return np.concatenate(out)


def generated_states(windows: list[Window], ds: Dataset, reasoner: Engine, tokens: int, batch_size: int,
                     cache: BatchCache, name: str) -> np.ndarray:
    """The reasoner's state after its own greedy reasoning for each (served-window) example, in order."""
    prompts = [LlmRanker.prompt(user_history(e, ds.catalog)) for _, pairs in windows for _, e in pairs]
    return np.concatenate([
        cache.get_or_compute(prompts[i : i + batch_size],
                             lambda batch: np.stack([r.vector for r in reasoner.reason(batch, tokens)]))
        for i in tqdm(range(0, len(prompts), batch_size), desc=f"{name} reasoning", unit="batch")])


def _with_ci(per_query: dict[str, np.ndarray]) -> dict[str, dict]:
    cis = bootstrap_ci(per_query)
    return {k: {"mean": float(v.mean()), "ci95": cis[k]} for k, v in per_query.items()}


def test_metrics(data: dict[str, HeadData], rows: np.ndarray, item_ids: list[str], heads: dict[str, tuple]
                 ) -> dict[str, dict]:
    """Per head (name -> (state kind, head or None, use)): test HR@10 / NDCG@10 with 95% bootstrap intervals;
    then the paired differences of each reasoning kind of `data` - direct, of the heads used alone and with s."""
    per_query = {}
    for name, (kind, head, use) in heads.items():
        ranked = head_ranking(data[kind], rows, item_ids, head, use, desc=f"testing {name}")
        per_query[name] = {k: v for k, v in ranked.per_query().items() if k in ("HR@10", "NDCG@10")}
    out = {name: _with_ci(q) for name, q in per_query.items()}
    for kind in [k for k in data if k != "direct"]:
        for use in ("alone", "residual"):
            a, b = per_query[f"{kind} {use}"], per_query[f"direct {use}"]
            out[f"{kind} - direct ({use})"] = _with_ci({k: a[k] - b[k] for k in a})
    return out


def train_reasoning_head(config: ReasoningHeadConfig, command: str) -> list[Path]:
    """Build the states, train the four heads, test them; write the report and return its paths."""
    from model.engines.transformers_engine import load_engine

    ds, split = config.load()
    context = ReasoningContext(ds.catalog)
    folder = config.table_folder()
    artifact = TableArtifact.load(folder)
    base = load_engine(config.model)
    if artifact.fingerprint != base.fingerprint:
        raise ValueError(f"the table {folder} was trained on {artifact.fingerprint}, not on {base.fingerprint}")
    reasoner = load_engine(config.model, config.adapter, config.batch_size)
    _, content = item_features(list(ds.catalog), artifact.spec, base, artifacts_dir() / "table-cache" / ds.name)
    features = torch.from_numpy(np.vstack([np.zeros((1, content.shape[1]), np.float32), content]))
    store = table_store(artifact, features, ds.catalog)
    with torch.inference_mode():
        rows = artifact.model.table(features)[1:].numpy()
    trained = table_dir(config.dataset, config.protocol)
    direct_cache = BatchCache(trained.parent / f"{trained.name}-states", {"direct": base.fingerprint.to_json()})
    cache = artifacts_dir() / "reasoning-head" / f"{ds.name}-{config.protocol}"
    taught_cache = BatchCache(cache / "taught", {"reasoner": reasoner.fingerprint.to_json(), "seed": config.seed})
    generated_cache = BatchCache(cache / "generated", {"reasoner": reasoner.fingerprint.to_json(),
                                                       "tokens": config.reasoning_tokens})
    windows = {
        "training": training_windows(split, config.head_users, config.seed),
        "validation": served_windows(sample_examples(split.valid, config.valid_users, config.seed)),
        "test": served_windows(sample_examples(test_parts(split)["all"], config.test_users, config.seed)),
    }
    kinds = ("direct", *config.conclusions)
    data: dict[str, dict[str, HeadData]] = {kind: {} for kind in kinds}
    for name, w in windows.items():
        data["direct"][name] = head_data(w, ds, store, artifact, direct_states(w, ds, base, direct_cache, name))
        generated = None if name == "training" else generated_states(
            w, ds, reasoner, config.reasoning_tokens, config.batch_size, generated_cache, name)
        for kind in config.conclusions:
            states = generated if generated is not None else taught_states(
                w, ds, context, reasoner, config.seed, taught_cache, hindsight=kind == "hindsight")
            data[kind][name] = replace(data["direct"][name], states=torch.from_numpy(states))  # same s, targets
    heads: dict[str, tuple] = {"s alone": ("direct", None, "none")}
    validation = {}
    for kind in kinds:
        for use in ("alone", "residual"):
            head = state_head(artifact.model.config, zero_start=use == "residual")  # as the table's two heads
            torch.manual_seed(config.seed)
            validation[f"{kind} {use}"] = fit_head(config, config.seed, head, data[kind], rows, artifact.item_ids, use)
            heads[f"{kind} {use}"] = (kind, head, use)
    tests = test_metrics({kind: data[kind]["test"] for kind in kinds}, rows, artifact.item_ids, heads)
    report = {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_line(),
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
              "table": shown_path(folder), "base_model": base.fingerprint.to_json(),
              "reasoner": reasoner.fingerprint.to_json(),
              "samples": {name: len(data["direct"][name].examples) for name in windows},
              "validation": validation, "test": tests}
    return write_head_report(config.out_dir / (config.report_name or f"{config.dataset}-reasoning-head"), report)


def _cell(metric: dict) -> str:
    low, high = metric["ci95"]
    return f"{metric['mean']:.3f} [{low:.3f}, {high:.3f}]"


_USES = {"alone": "`f(h)` alone", "residual": "`s + f(h)`"}
_TRAINED_ON = {"hindsight": "trained after hindsight conclusions", "forecast": "trained after forecast conclusions"}
_LABELS = {"s alone": "`s` alone (no state)",
           **{f"direct {use}": f"{label}, direct state" for use, label in _USES.items()},
           **{f"{kind} {use}": f"{label}, state after the reasoning, {_TRAINED_ON[kind]}"
              for kind in REASONING_KINDS for use, label in _USES.items()},
           **{f"{kind} - direct ({use})": f"difference, {label}: reasoning ({kind}) - direct"
              for kind in REASONING_KINDS for use, label in _USES.items()}}


def write_head_report(stem: Path, report: dict) -> list[Path]:
    """`stem`.md and `stem`.json; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    config, samples = report["config"], report["samples"]
    lines = [f"# The head on reasoning states, {config['dataset']} {config['protocol']}", "",
             f"Command: `{report['command']}`  ", f"Date: {report['date']}  ", f"Machine: {report['machine']}  ",
             f"Table: {report['table']}; base model {report['base_model']}  ",
             f"Reasoning adapter: {config['adapter']} ({report['reasoner']})  ",
             f"Samples: {samples['training']} training cuts of {config['head_users']} seeded training users "
             f"(teacher-forced rationales for the reasoning states), {samples['validation']} validation and "
             f"{samples['test']} test users (seed {config['seed']}) with the model's own reasoning "
             f"({config['reasoning_tokens']} tokens, greedy)", "",
             "| head | test HR@10 [95% CI] | test NDCG@10 [95% CI] | validation NDCG@10 (best epoch) |",
             "|---|---|---|---|"]
    for name, metrics in report["test"].items():
        valid = report["validation"].get(name)
        best = f"{valid['NDCG@10']:.3f} ({valid['epoch']})" if valid else ""
        lines.append(f"| {_LABELS.get(name, name)} | {_cell(metrics['HR@10'])} | {_cell(metrics['NDCG@10'])} | "
                     f"{best} |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [md_path, json_path]
