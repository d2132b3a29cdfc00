"""Simulated users for cold items (`reasonrec experiment simulated-users`, issue #40 part 3; seed 001: "Selecting
User Histories to Generate LLM Users for Cold-Start Item Recommendation", arXiv 2511.21989).

A seeded pool of training users is asked, each through the language model as that user (`model.preference`, its
whole training history up to 50 lines), which of two cold items they would rather watch, `pairs_per_user` times
for the validation half of the cold items and as often for the test half. A selection rule picks `budget` users
of the pool; their answers refine the rows of the cold items they name (`model.networks.preference_rows`: BPR, rows
start at g(c), the warm rows and the encoder stay). The rules, as in the paper:
- `none`: no simulated user (the table as trained);
- `random`: seeded uniform users;
- `feature`: the top users by one of the paper's eight user features (`FEATURES`, either direction), the one whose
  selection gives the best validation reward;
- `policy`: REINFORCE over the features (a linear layer and a sigmoid per user, Bernoulli draws, the `budget`
  highest logits kept, an EMA baseline), rewarded by validation cold Recall@50;
- `all`: every user of the pool (the most augmentation the pool gives);
- `per-item` (llm judge): not a selection of users but the gateway's way of asking (`service.simulated_users`):
  each cold item of a half asked of `per_item_users` seeded pool users against another item of the half, every
  answer used, with its own l2 chosen on its validation answers (cached apart).
Validation and test are kept apart: the policy and the feature choice only see the validation half's cold items
and examples, the report's figures are on the test half. The pool's users are not evaluated (their examples are
left out), and each phase ranks the warm items and its own half of the cold items only (the other half is no
candidate), so that neither phase's rows can push the other's targets down.

`--judge real` replaces the language model with the users' own interactions with the half's items (each paired
with an item of the half they never rated): simulated users who are exactly right and, unlike the language model
(asked about two random items of the half), are asked about items they did rate. It is the ceiling of the
augmentation with this pool and budget: what cold items gain from a few users who really watched them.

The judge's pairwise accuracy is measured on held-out pairs of the pool users (their validation warm target against
an unrated warm item; their validation cold target against another item of the half) beside g's, MiniLM's and
SASRec+'s. Writes `<dataset>-<protocol>-simulated-users-<judge>.{md,json}` (`SimulatedUsersConfig.label`).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from indexer.core.catalog import Catalog
from indexer.core.paths import artifacts_dir
from model.engines.base import Engine
from model.judge_pool import Answer, JudgePool
from model.networks.minilm import MiniLMEncoder, TextEncoder
from model.networks.preference_rows import Preferences, refine_rows
from model.networks.sasrec import PAD, right_padded
from model.preference import prefer_first
from model.prompts import PREFERENCE_TEMPLATE_VERSION, HistoryLine, UserHistory
from model.rankers.content import ContentRanker
from trainer.data.datasets import Interaction
from trainer.data.protocols import SplitConfig
from trainer.data.splits import ColdSplit, Example
from trainer.machine import machine_line, shown_path
from trainer.protocol.metrics import bootstrap_ci
from trainer.train.judge import pool_users
from trainer.train.table.content import rows_as_read
from trainer.train.table.served import ServedTable, load_served_table

FEATURES = ("MP", "AP", "RV", "CKLD", "CSD", "EE", "V", "AR")
"""The paper's user features: median and average popularity of the history's items, rating variance, KL
divergence of the user's genre distribution from the catalog's, genre diversity (share of the genres seen),
genre entropy, volume (training interactions), average rating."""
JUDGES = ("llm", "real")
HALVES = ("valid", "test")
RULES = ("none", "random", "feature", "policy", "all", "per-item")


@dataclass
class SimulatedUsersConfig(SplitConfig):
    """What `reasonrec experiment simulated-users` runs (defaults sized for 2 CPU cores on ML-100k)."""

    protocol: str = "cold-items"
    """The split the table was trained on (cold-items: the only one with cold items)."""
    model: str = "smollm2"
    """Language model of the judge and of the table's item states: smollm2, tiny or an HF folder."""
    seed: int = 0
    """Seed of the table and SASRec+ runs (their folders)."""
    table: Path | None = None
    """Item-table folder (default: where `reasonrec train-table` writes it)."""
    sasrec_checkpoint: Path | None = None
    """SASRec+ folder the table was built on (default: where `reasonrec train-sasrec` writes it)."""
    judge: str = "llm"
    """Who answers for the pool's users: llm (the language model as the user) or real (their own interactions
    with the half's items: the bound of a judge that is always right)."""
    judge_adapter: Path | None = None
    """A LoRA adapter merged into the language model for the llm judge (`reasonrec train-judge`); the table's item
    states stay the base model's."""
    pool_users: int = 120
    """Seeded training users asked (each costs a forward pass over the history and 4 short ones per pair)."""
    pairs_per_user: int = 4
    """Pairs of cold items asked of each pool user per half."""
    pool_seed: int = 0
    """Seed of the pool's users and pairs."""
    budget: int = 40
    """Users each selection rule picks from the pool."""
    per_item_users: int = 8
    """The gateway's rule, measured as `per-item` (llm judge): each cold item of a half asked of this many seeded
    pool users against another item of the half (`JudgePool.questions`; REASONREC_JUDGE_USERS_PER_ITEM); 0: skipped."""
    seeds: int = 5
    """Seeds of the random rule and of the policy's training."""
    policy_iterations: int = 200
    """REINFORCE iterations (each refines the rows and ranks the validation examples once)."""
    policy_lr: float = 0.05
    """Adam learning rate of the policy's weights."""
    baseline_decay: float = 0.8
    """Decay of the reward's exponential moving average (the policy's baseline)."""
    refine_steps: int = 100
    """Adam steps of the rows' refinement."""
    refine_lr: float = 0.05
    """Adam learning rate of the rows' refinement."""
    refine_l2: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    """Weights of the squared norm of the rows' moves to choose from on validation: the one whose refinement with
    every pool answer gives the best validation cold Recall@50 while the validation warm HR@10 stays within
    `warm_tolerance` of its level without answers (else the largest)."""
    warm_tolerance: float = 0.05
    """How much of the validation warm HR@10 (relative) the refinement may give up."""
    bootstrap: int = 1000
    """Bootstrap resamples of users for the 95% intervals."""
    out_dir: Path = Path("docs/results")
    """Folder of the report."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.out_dir = Path(self.out_dir)
        self.judge_adapter = Path(self.judge_adapter) if self.judge_adapter is not None else None
        if self.protocol != "cold-items":
            raise ValueError(f"--protocol must be cold-items (the split with cold items), got {self.protocol!r}")
        if self.judge not in JUDGES:
            raise ValueError(f"--judge must be one of {', '.join(JUDGES)}, got {self.judge!r}")
        if min(self.pool_users, self.pairs_per_user, self.budget, self.seeds, self.policy_iterations,
               self.refine_steps, self.bootstrap) < 1:
            raise ValueError("--pool-users, --pairs-per-user, --budget, --seeds, --policy-iterations, "
                             "--refine-steps and --bootstrap must be >= 1")
        if self.per_item_users < 0:
            raise ValueError("--per-item-users must be >= 0")
        if self.budget > self.pool_users:
            raise ValueError(f"--budget ({self.budget}) must not exceed --pool-users ({self.pool_users})")
        self.refine_l2 = tuple(float(x) for x in self.refine_l2)
        if min(self.policy_lr, self.refine_lr) <= 0 or not self.refine_l2 or min(self.refine_l2) < 0 \
                or not 0 <= self.baseline_decay < 1 or not 0 <= self.warm_tolerance < 1:
            raise ValueError("--policy-lr and --refine-lr must be positive, --refine-l2 one or more values >= 0, "
                             "--baseline-decay and --warm-tolerance in [0, 1)")
        if self.judge_adapter is not None and self.judge != "llm":
            raise ValueError("--judge-adapter is for --judge llm")

    @property
    def label(self) -> str:
        """The judge in the report's name: real, llm, or llm-<adapter folder name>; then -pool<seed> for a pool
        seed other than 0."""
        judge = f"llm-{self.judge_adapter.name}" if self.judge_adapter is not None else self.judge
        return judge + (f"-pool{self.pool_seed}" if self.pool_seed else "")


@dataclass
class Pool:
    users: list[str]
    pairs: dict[str, list[Answer]]
    """Half ("valid" or "test") -> the pool's answered pairs of that half's cold items."""
    checks: dict[str, list[Answer]]
    """"warm" / "cold" -> held-out pairs whose `first` is the user's real next item (llm judge only)."""
    per_item: dict[str, list[Answer]] = field(default_factory=dict)
    """Half -> its cold items asked by the gateway's rule (`judge_per_item`; llm judge only)."""


def simulated_users(config: SimulatedUsersConfig, command: str = "", engine: Engine | None = None,
                    encoder: TextEncoder | None = None, judge: Engine | None = None) -> list[Path]:
    """Ask the pool, run the rules, write the report; returns its paths (.md, .json). `engine` encodes missing
    item states (the fast engine of `config.model` unless given); `judge` answers for the users (`engine`, or the
    fast engine with `config.judge_adapter` merged); `encoder` is MiniLM unless given (tests pass stand-ins)."""
    from model.engines.fast_engine import FastEngine
    from model.engines.loading import load_model

    started = datetime.now(UTC)
    engine = engine or FastEngine(load_model(config.model))
    if judge is None:
        judge = FastEngine(load_model(config.model, config.judge_adapter)) if config.judge_adapter else engine
    served = load_served_table(config.dataset, config.protocol, engine, config.data_path, config.cold_frac,
                               config.split_seed, config.seed, config.table, config.sasrec_checkpoint)
    if not isinstance(served.split, ColdSplit):
        raise ValueError("simulated users need a cold-items split")
    if not served.artifact.model.head_is_zero:
        raise ValueError("this table has a head f(h) that is not zero: simulated users read u = s(history) only "
                         "(train the cold-items table with --no-head)")
    users = pool_users(served.split, config.pool_users, config.pool_seed)
    pool = (real_pool(served, users, config.pairs_per_user, config.pool_seed) if config.judge == "real"
            else judge_pool(served, users, judge, config))
    if config.judge == "llm" and config.per_item_users:
        pool.per_item = judge_per_item(served, users, judge, config)
    lab = Lab(served, pool, config)
    results = lab.run_rules()
    checks = {} if config.judge == "real" else judge_accuracy(served, pool, encoder or MiniLMEncoder(), config)
    report = _report(config, served, lab, results, checks, command, started)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    stem = config.out_dir / f"{served.dataset.name}-{config.protocol}-simulated-users-{config.label}"
    paths = [stem.with_suffix(".md"), stem.with_suffix(".json")]
    paths[1].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[0].write_text(_markdown(report), encoding="utf-8")
    return paths


# ---- the pool ----------------------------------------------------------------------------------------------------

def _half_items(split: ColdSplit, half: str) -> list[str]:
    return sorted(split.valid_items if half == "valid" else split.test_items)


def _lines(history: Sequence[Interaction], catalog: Catalog) -> list[HistoryLine]:
    return [HistoryLine.of_item(catalog[x.item_id], x.rating, x.timestamp) for x in history]


def _pool_path(served: ServedTable, engine: Engine, config: SimulatedUsersConfig, questions: str) -> Path:
    key = (f"{served.dataset.name}-{config.protocol}-split{config.split_seed}-pool{config.pool_seed}-"
           f"{questions}-{PREFERENCE_TEMPLATE_VERSION}-{engine.fingerprint.model_id}-"
           f"{engine.fingerprint.weights_hash}-{engine.fingerprint.adapter_hash or 'base'}")
    return artifacts_dir() / "simulated-users" / f"{key}.jsonl"


def _ask_cached(path: Path, served: ServedTable, users: Sequence[str], engine: Engine,
                questions: Callable[[str], dict[str, list[tuple[str, str]]]]) -> list[dict]:
    """Ask the language model, as each of `users`, the pairs `questions(user)` gives per part; the answers are kept
    per user in the JSON-lines file `path`, so an interrupted run resumes where it stopped. One record per user:
    part -> [[first, second, p], ...]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["user"]] = record
    split, catalog = served.split, served.dataset.catalog
    with path.open("a", encoding="utf-8") as out:
        for user in tqdm([u for u in users if u not in done], desc="simulated users", unit="user"):
            asked = questions(user)
            flat = [pair for pairs in asked.values() for pair in pairs]
            answers = prefer_first(engine, _lines(split.train[user], catalog),
                                   [(catalog[a], catalog[b]) for a, b in flat])
            record, k = {"user": user}, 0
            for part, pairs in asked.items():
                record[part] = [[a, b, float(answers[k + j])] for j, (a, b) in enumerate(pairs)]
                k += len(pairs)
            out.write(json.dumps(record) + "\n")
            out.flush()
            done[user] = record
    return [done[u] for u in users]


def judge_pool(served: ServedTable, users: Sequence[str], engine: Engine, config: SimulatedUsersConfig) -> Pool:
    """Ask the language model, as each pool user, about `pairs_per_user` seeded pairs per half and the two held-out
    check pairs (kept under `artifacts/simulated-users/`, keyed by the split, the pool seed, the prompt version and
    the model)."""
    split = served.split
    assert isinstance(split, ColdSplit)
    trained = sorted({x.item_id for history in split.train.values() for x in history})
    path = _pool_path(served, engine, config, f"{config.pairs_per_user}pairs")
    return _pool_of(_ask_cached(path, served, users, engine, lambda user: _questions(
        split, user, trained, config.pairs_per_user, config.pool_seed)))


def judge_per_item(served: ServedTable, users: Sequence[str], engine: Engine, config: SimulatedUsersConfig
                   ) -> dict[str, list[Answer]]:
    """The gateway's rule (`JudgePool.questions`, service.simulated_users), per half: each cold item of the half
    asked of `per_item_users` seeded pool users, against another item of the half."""
    split = served.split
    assert isinstance(split, ColdSplit)
    pool = JudgePool.of({u: [(x.item_id, x.rating, x.timestamp) for x in split.train[u]] for u in users}, {})
    answers = {}
    for half in HALVES:
        items = _half_items(split, half)
        asked = pool.questions(items, items, config.per_item_users)
        path = _pool_path(served, engine, config, f"per-item{config.per_item_users}-{half}")
        records = _ask_cached(path, served, users, engine,
                              lambda user, asked=asked, half=half: {half: asked.get(user, [])})
        answers[half] = [Answer(r["user"], a, b, p) for r in records for a, b, p in r[half]]
    return answers


def _questions(split: ColdSplit, user: str, trained: Sequence[str], pairs_per_user: int, seed: int
               ) -> dict[str, list[tuple[str, str]]]:
    """The seeded pairs asked of `user`: per half, `pairs_per_user` pairs of distinct cold items; "warm": the
    user's validation warm target against a seeded item of `trained` (the items with a training interaction) the
    user never rated; "cold": the user's validation
    cold target against another item of the validation half (each only when the user has that example)."""
    rng = random.Random(f"{seed}:{user}")
    asked: dict[str, list[tuple[str, str]]] = {}
    for half in HALVES:
        items = _half_items(split, half)
        asked[half] = [tuple(rng.sample(items, 2)) for _ in range(pairs_per_user)]  # type: ignore[misc]
    rated = {x.item_id for x in split.train[user]}
    warm = [e for e in split.valid_warm if e.user_id == user]
    if warm:
        target = warm[0].target.item_id
        asked["warm"] = [(target, rng.choice([i for i in trained if i not in rated and i != target]))]
    cold = [e for e in split.valid_cold if e.user_id == user]
    if cold:
        target = cold[0].target.item_id
        asked["cold"] = [(target, rng.choice([i for i in _half_items(split, "valid") if i != target]))]
    return asked


def _pool_of(records: Sequence[dict]) -> Pool:
    def judged(part: str) -> list[Answer]:
        return [Answer(r["user"], a, b, p) for r in records for a, b, p in r.get(part, [])]

    return Pool([r["user"] for r in records], {half: judged(half) for half in HALVES},
                {kind: judged(kind) for kind in ("warm", "cold")})


def real_pool(served: ServedTable, users: Sequence[str], pairs_per_user: int, seed: int) -> Pool:
    """The users' own answers: per half, up to `pairs_per_user` of the half's items each user really rated (from
    the full data, which the split hides), each against a seeded item of the half the user never rated."""
    split, histories = served.split, served.dataset.histories
    assert isinstance(split, ColdSplit)
    pairs: dict[str, list[Answer]] = {half: [] for half in HALVES}
    for user in users:
        rng = random.Random(f"{seed}:{user}")
        rated = {x.item_id for x in histories.get(user, [])}
        for half in HALVES:
            items = _half_items(split, half)
            liked = [i for i in items if i in rated]
            others = [i for i in items if i not in rated]
            for item in rng.sample(liked, min(pairs_per_user, len(liked))) if others else []:
                pairs[half].append(Answer(user, item, rng.choice(others), 1.0))
    return Pool(list(users), pairs, {"warm": [], "cold": []})


# ---- features, rows and phases -----------------------------------------------------------------------------------

def user_features(served: ServedTable, users: Sequence[str]) -> np.ndarray:
    """(len(users), 8) the paper's features (`FEATURES`) from the training histories, min-max scaled over
    `users` (a constant column becomes 0)."""
    split, catalog = served.split, served.dataset.catalog
    popularity = Counter(x.item_id for history in split.train.values() for x in history)
    genres_all = Counter(g for history in split.train.values() for x in history for g in catalog[x.item_id].genres)
    n_genres = max(1, len(genres_all))
    total = sum(genres_all.values()) or 1
    rows = []
    for user in users:
        history = split.train[user]
        pops = np.array([popularity[x.item_id] for x in history], dtype=float)
        ratings = np.array([x.rating for x in history if x.rating is not None], dtype=float)
        genres = Counter(g for x in history for g in catalog[x.item_id].genres)
        count = sum(genres.values())
        probs = {g: c / count for g, c in genres.items()} if count else {}
        kl = sum(p * math.log(p / (genres_all[g] / total)) for g, p in probs.items())
        entropy = -sum(p * math.log(p) for p in probs.values())
        rows.append([float(np.median(pops)), float(pops.mean()),
                     float(ratings.var()) if len(ratings) else 0.0, kl, len(genres) / n_genres, entropy,
                     float(len(history)), float(ratings.mean()) if len(ratings) else 0.0])
    raw = np.asarray(rows, dtype=float)
    span = raw.max(axis=0) - raw.min(axis=0)
    return np.where(span > 0, (raw - raw.min(axis=0)) / np.where(span > 0, span, 1), 0.0)


def _user_vectors(served: ServedTable, histories: Sequence[Sequence[Interaction]]) -> torch.Tensor:
    """u = s(history) for each history (items as served; the most recent `max_len` items in the table)."""
    model, code = served.artifact.model, served.artifact.code_of
    with torch.inference_mode():
        rows = rows_as_read(model, served.fixed, model.content_rows(served.features))
        coded = [[code[x.item_id] for x in h if x.item_id in code][-model.config.max_len:] for h in histories]
        return model.user_vectors(rows[right_padded(coded), :-1], torch.tensor([len(h) for h in coded]))


@dataclass
class Phase:
    """One half's examples (of users outside the pool) ranked as served: the warm items and the half's own cold
    items are the candidates (history excluded)."""

    cold: list[Example]
    warm: list[Example]
    users: torch.Tensor
    """User vectors of `cold` then `warm`."""
    excluded: torch.Tensor
    """(examples, n_items + 1) bool: no candidate (padding, the other half, the history)."""
    targets: torch.Tensor

    def ranks(self, rows: torch.Tensor) -> np.ndarray:
        """1-based ranks of the targets of `cold` then `warm` under `rows`."""
        with torch.no_grad():
            scores = self.users @ rows[:, :-1].T + rows[:, -1]
            target = scores[torch.arange(len(self.targets)), self.targets]
            above = (scores > target[:, None]) & ~self.excluded
        return (1 + above.sum(dim=1)).double().numpy()


def make_phase(served: ServedTable, half: str, pool: set[str]) -> Phase:
    split, code = served.split, served.artifact.code_of
    assert isinstance(split, ColdSplit)
    cold_examples, warm_examples = ((split.valid_cold, split.valid_warm) if half == "valid"
                                    else (split.test_cold, split.test_warm))

    def usable(examples: list[Example]) -> list[Example]:
        return [e for e in examples if e.user_id not in pool and e.target.item_id in code
                and any(x.item_id in code for x in e.history)]

    cold, warm = usable(cold_examples), usable(warm_examples)
    examples = cold + warm
    other = split.test_items if half == "valid" else split.valid_items
    excluded = torch.zeros(len(examples), len(served.fixed), dtype=torch.bool)
    excluded[:, PAD] = True
    excluded[:, [code[i] for i in other if i in code]] = True
    for row, e in enumerate(examples):
        excluded[row, [code[x.item_id] for x in e.history if x.item_id in code]] = True
    targets = torch.tensor([code[e.target.item_id] for e in examples], dtype=torch.long)
    return Phase(cold, warm, _user_vectors(served, [e.history for e in examples]), excluded, targets)


class Lab:
    """The pool, its users' vectors and features, the two phases and the served rows: what every rule reads."""

    def __init__(self, served: ServedTable, pool: Pool, config: SimulatedUsersConfig) -> None:
        self.served, self.pool, self.config = served, pool, config
        model = served.artifact.model
        with torch.inference_mode():
            self.rows = model.table(served.features).detach().clone()
        self.user_row = {u: i for i, u in enumerate(pool.users)}
        self.user_vectors = _user_vectors(served, [served.split.train[u] for u in pool.users])
        self.features = user_features(served, pool.users)
        self.phases = {half: make_phase(served, half, set(pool.users)) for half in HALVES}
        self.l2, self.l2_sweep = self._choose_l2(self.preferences("valid", pool.users))
        self.per_item_l2, self.per_item_sweep = (self._choose_l2(self.answered(pool.per_item["valid"]))
                                                 if pool.per_item else (None, []))

    def _choose_l2(self, pairs: Preferences) -> tuple[float, list[dict]]:
        """The l2 for `pairs` of the validation half (see `SimulatedUsersConfig.refine_l2`) and the validation
        figures without answers (l2 None) and with `pairs` at each candidate."""
        n_cold = len(self.phases["valid"].cold)

        def figures(with_pairs: Preferences, l2: float) -> tuple[float, float]:
            ranks = self.ranks_with("valid", with_pairs, l2)
            cold, warm = ranks[:n_cold], ranks[n_cold:]
            return (float((cold <= 50).mean()) if len(cold) else 0.0,
                    float((warm <= 10).mean()) if len(warm) else 0.0)

        cold_none, warm_none = figures(Preferences.of_answers([]), 0.0)
        floor = warm_none * (1 - self.config.warm_tolerance)
        sweep = [{"l2": None, "valid cold Recall@50": cold_none, "valid warm HR@10": warm_none, "kept": True}]
        best = (-1.0, max(self.config.refine_l2))
        for l2 in sorted(self.config.refine_l2):
            cold, warm = figures(pairs, l2)
            sweep.append({"l2": l2, "valid cold Recall@50": cold, "valid warm HR@10": warm, "kept": warm >= floor})
            if warm >= floor and cold > best[0]:
                best = (cold, l2)
        return best[1], sweep

    def answered(self, answers: Sequence[Answer]) -> Preferences:
        code = self.served.artifact.code_of
        return Preferences.of_answers([(self.user_row[j.user], code[j.first], code[j.second], j.p) for j in answers])

    def preferences(self, half: str, chosen: Sequence[str]) -> Preferences:
        """The chosen users' answers of `half` as BPR pairs (winner, loser, confidence |2p - 1|)."""
        chosen_set = set(chosen)
        return self.answered([j for j in self.pool.pairs[half] if j.user in chosen_set])

    def ranks(self, half: str, chosen: Sequence[str]) -> np.ndarray:
        """Ranks of the half's cold then warm targets with the rows refined by the chosen users' answers."""
        return self.ranks_with(half, self.preferences(half, chosen), self.l2)

    def ranks_with(self, half: str, pairs: Preferences, l2: float) -> np.ndarray:
        config = self.config
        rows = refine_rows(self.rows, self.user_vectors, pairs, config.refine_steps, config.refine_lr, l2)
        return self.phases[half].ranks(rows)

    def reward(self, chosen: Sequence[str]) -> float:
        """Validation cold Recall@50 with the chosen users' answers."""
        n_cold = len(self.phases["valid"].cold)
        return float((self.ranks("valid", chosen)[:n_cold] <= 50).mean()) if n_cold else 0.0

    def run_rules(self) -> dict[str, list[dict]]:
        """Rule -> one result per seed (one for the deterministic rules): the chosen users and test ranks."""
        config, users = self.config, self.pool.users
        results: dict[str, list[dict]] = {"none": [self._result([], {})], "all": [self._result(users, {})]}
        feature, scores = best_feature(self.features, users, config.budget, self.reward)
        results["feature"] = [self._result(top_users(users, feature[1] * self.features[:, feature[0]], config.budget),
                                           {"feature": f"{'+' if feature[1] > 0 else '-'}{FEATURES[feature[0]]}",
                                            "validation_rewards": scores})]
        results["random"], results["policy"] = [], []
        for seed in tqdm(range(config.seeds), desc="seeds", unit="seed"):
            chosen = sorted(random.Random(seed).sample(users, config.budget))
            results["random"].append(self._result(chosen, {"seed": seed}))
            logits, curve = train_policy(self.features, self.reward, users, config, seed)
            results["policy"].append(self._result(top_users(users, logits, config.budget),
                                                  {"seed": seed, "reward_curve": curve}))
        if self.pool.per_item:
            test = self.pool.per_item["test"]
            pairs = self.answered(test)
            n_cold = len(self.phases["test"].cold)
            ranks = {l2: self.ranks_with("test", pairs, l2) for l2 in self.config.refine_l2}  # the chosen among them
            results["per-item"] = [{"chosen": sorted({j.user for j in test}), "pairs": len(pairs),
                                    "test_ranks": ranks[self.per_item_l2].tolist(),
                                    "test_cold_recall50_by_l2": {l2: float((r[:n_cold] <= 50).mean())
                                                                 for l2, r in ranks.items()}}]
        return results

    def _result(self, chosen: Sequence[str], extra: dict) -> dict:
        return {"chosen": list(chosen), "pairs": len(self.preferences("test", chosen)),
                "test_ranks": self.ranks("test", chosen).tolist(), **extra}


def top_users(users: Sequence[str], scores: np.ndarray, budget: int) -> list[str]:
    """The `budget` users with the highest scores (ties by pool order)."""
    order = np.argsort(-scores, kind="stable")[:budget]
    return sorted(users[i] for i in order)


def best_feature(features: np.ndarray, users: Sequence[str], budget: int,
                 reward: Callable[[Sequence[str]], float]) -> tuple[tuple[int, int], dict[str, float]]:
    """The (feature column, direction) whose top `budget` users give the best validation reward, and every
    candidate's reward ("+MP", "-MP", ...)."""
    scores: dict[str, float] = {}
    best, best_reward = (0, 1), -1.0
    for column, name in enumerate(FEATURES):
        for sign in (1, -1):
            value = reward(top_users(users, sign * features[:, column], budget))
            scores[f"{'+' if sign > 0 else '-'}{name}"] = value
            if value > best_reward:
                best, best_reward = (column, sign), value
    return best, scores


def train_policy(features: np.ndarray, reward: Callable[[Sequence[str]], float], users: Sequence[str],
                 config: SimulatedUsersConfig, seed: int) -> tuple[np.ndarray, list[float]]:
    """REINFORCE (Williams, 1992) of a linear policy pi(u) = sigmoid(w . f_u + c): each iteration draws every
    pool user with probability pi(u), keeps the `budget` drawn users with the highest logits (the paper's pass in
    descending order), and moves w and c (Adam) along (reward - baseline) * sum_u (a_u - pi_u) [f_u, 1]; the
    baseline is an EMA of the rewards, started at the reward of no user. Returns the final logits and the reward
    of each iteration."""
    generator = torch.Generator().manual_seed(seed)
    f = torch.from_numpy(np.hstack([features, np.ones((len(features), 1))])).float()
    start = math.log(config.budget / (len(users) - config.budget)) if len(users) > config.budget else 0.0
    weights = torch.zeros(f.shape[1])
    weights[-1] = start
    weights.requires_grad_(True)
    optimizer = torch.optim.Adam([weights], lr=config.policy_lr)
    baseline, curve = reward([]), []
    for _ in range(config.policy_iterations):
        with torch.no_grad():
            logits = f @ weights
            drawn = torch.bernoulli(torch.sigmoid(logits), generator=generator).bool()
            if int(drawn.sum()) > config.budget:
                keep = torch.argsort(torch.where(drawn, logits, torch.tensor(-math.inf)), descending=True)
                drawn = torch.zeros_like(drawn)
                drawn[keep[: config.budget]] = True
        value = reward([users[i] for i in torch.nonzero(drawn).flatten().tolist()])
        curve.append(value)
        log_prob = torch.nn.functional.logsigmoid(f @ weights)
        log_not = torch.nn.functional.logsigmoid(-(f @ weights))
        loss = -(value - baseline) * torch.where(drawn, log_prob, log_not).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        baseline = config.baseline_decay * baseline + (1 - config.baseline_decay) * value
    with torch.no_grad():
        return (f @ weights).numpy(), curve


# ---- the judge's accuracy ----------------------------------------------------------------------------------------

def judge_accuracy(served: ServedTable, pool: Pool, encoder: TextEncoder,
                   config: SimulatedUsersConfig) -> dict[str, dict]:
    """On the held-out check pairs (first = the user's real next item): the share each judge orders right, with a
    95% bootstrap interval over pairs. g scores both items by g(c) as if cold; SASRec+ (warm pairs only) by its
    rows; MiniLM by the cosine of the history's mean vector."""
    model, code, catalog = served.artifact.model, served.artifact.code_of, served.dataset.catalog
    split = served.split
    with torch.inference_mode():
        content = model.content_rows(served.features)
    out: dict[str, dict] = {}
    for kind, pairs in pool.checks.items():
        if not pairs:
            continue
        histories = [split.train[j.user] for j in pairs]
        users = _user_vectors(served, histories)
        first = torch.tensor([code[j.first] for j in pairs])
        second = torch.tensor([code[j.second] for j in pairs])

        items = sorted({j.first for j in pairs} | {j.second for j in pairs})
        minilm = ContentRanker(encoder, [catalog[i] for i in items])
        vectors = minilm.user_vectors([UserHistory.of_items([(x.item_id, x.rating, x.timestamp) for x in h], catalog)
                                       for h in histories])
        rows_of = minilm.row_of
        cos_a = np.einsum("ij,ij->i", vectors, minilm.item_vectors[[rows_of[j.first] for j in pairs]])
        cos_b = np.einsum("ij,ij->i", vectors, minilm.item_vectors[[rows_of[j.second] for j in pairs]])
        correct = {"llm": np.array([j.p > 0.5 for j in pairs], dtype=float),
                   "g": _first_scores_higher(users, content, first, second),
                   "MiniLM": (cos_a > cos_b).astype(float)}
        if kind == "warm":
            correct["SASRec+"] = _first_scores_higher(users, served.fixed, first, second)
        ci = bootstrap_ci(correct, config.bootstrap, 0)
        out[kind] = {"pairs": len(pairs),
                     "mean_p_first": float(np.mean([j.p for j in pairs])),
                     "spread_p": float(np.std([j.p for j in pairs])),
                     "accuracy": {name: {"mean": float(v.mean()), "ci95": list(ci[name])}
                                  for name, v in correct.items()}}
    return out


def _first_scores_higher(users: torch.Tensor, rows: torch.Tensor, first: torch.Tensor, second: torch.Tensor
                         ) -> np.ndarray:
    a = (users * rows[first, :-1]).sum(dim=1) + rows[first, -1]
    b = (users * rows[second, :-1]).sum(dim=1) + rows[second, -1]
    return (a > b).double().numpy()


# ---- the report --------------------------------------------------------------------------------------------------

def _metrics(lab: Lab, ranks: np.ndarray) -> dict[str, np.ndarray]:
    n_cold = len(lab.phases["test"].cold)
    cold, warm = ranks[:n_cold], ranks[n_cold:]
    return {"cold Recall@10": (cold <= 10).astype(float), "cold Recall@50": (cold <= 50).astype(float),
            "warm HR@10": (warm <= 10).astype(float)}


def _summary(lab: Lab, results: dict[str, list[dict]], bootstrap: int) -> list[dict]:
    """Per rule: the metrics' mean over seeds with their spread, and the paired gain over `none` of the
    seed-averaged per-user cold Recall@50 with a bootstrap interval over test users."""
    none = _metrics(lab, np.asarray(results["none"][0]["test_ranks"]))
    rows = []
    for rule in (r for r in RULES if r in results):
        runs = [_metrics(lab, np.asarray(r["test_ranks"])) for r in results[rule]]
        means = {m: [float(run[m].mean()) for run in runs] for m in none}
        averaged = np.mean([run["cold Recall@50"] for run in runs], axis=0)
        gain = averaged - none["cold Recall@50"]
        ci = bootstrap_ci({"gain": gain}, bootstrap, 0)["gain"]
        rows.append({"rule": rule, "runs": len(runs),
                     "pairs": float(np.mean([r["pairs"] for r in results[rule]])),
                     "metrics": {m: {"mean": float(np.mean(v)), "min": min(v), "max": max(v)}
                                 for m, v in means.items()},
                     "gain_recall50": {"mean": float(gain.mean()), "ci95": list(ci)},
                     "detail": {k: v for k, v in results[rule][0].items()
                                if k in ("feature", "validation_rewards", "test_cold_recall50_by_l2")}})
    return rows


def _report(config: SimulatedUsersConfig, served: ServedTable, lab: Lab, results: dict[str, list[dict]],
            checks: dict, command: str, started: datetime) -> dict:
    ds, split = served.dataset, served.split
    assert isinstance(split, ColdSplit)
    test = lab.phases["test"]
    curves = [r["reward_curve"] for r in results["policy"]]
    return {
        "title": f"{ds.name}: simulated users for cold items ({config.label} judge)",
        "header": {
            "command": f"`{command}`",
            "data": f"{ds.name}: {len(ds.histories)} users, {len(ds.catalog)} items, {ds.n_interactions} interactions",
            "split": f"{split.protocol}; pool {len(lab.pool.users)} training users (not evaluated); test: "
                     f"{len(test.cold)} cold-target and {len(test.warm)} warm-target examples of the other users, "
                     f"candidates the warm items and the test half's {len(split.test_items)} cold items",
            "models": f"table {shown_path(served.table_folder)} on SASRec+ {shown_path(served.sasrec_folder)}; "
                      f"judge {config.judge} ({config.model}"
                      + (f" + {shown_path(config.judge_adapter)}" if config.judge_adapter else "")
                      + f", prompt {PREFERENCE_TEMPLATE_VERSION})",
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()
                         if k not in ("out_dir", "data_path", "table", "sasrec_checkpoint", "judge_adapter")},
            "machine": machine_line(),
            "date": f"{started.isoformat(timespec='seconds')} to {datetime.now(UTC).isoformat(timespec='seconds')}",
        },
        "pairs_asked": {half: len(pairs) for half, pairs in lab.pool.pairs.items()},
        "refine_l2": {"chosen": lab.l2, "sweep": lab.l2_sweep},
        "per_item_l2": {"chosen": lab.per_item_l2, "sweep": lab.per_item_sweep},
        "judge_accuracy": checks,
        "rules": _summary(lab, results, config.bootstrap),
        "policy_reward": {"first5": float(np.mean([c[:5] for c in curves])),
                          "last5": float(np.mean([c[-5:] for c in curves]))},
        "runs": {rule: [_run_summary(lab, run) for run in runs] for rule, runs in results.items()},
    }


def _run_summary(lab: Lab, run: dict) -> dict:
    """A run as the report keeps it: its settings, chosen users and mean test metrics (not the per-user ranks)."""
    metrics = _metrics(lab, np.asarray(run["test_ranks"]))
    return {**{k: v for k, v in run.items() if k != "test_ranks"},
            "metrics": {name: float(values.mean()) for name, values in metrics.items()}}


def _markdown(report: dict) -> str:
    lines = [f"# {report['title']}", ""]
    lines += [f"- **{key}**: {value}" for key, value in report["header"].items() if key != "settings"]
    lines += [f"- **settings**: {', '.join(f'{k} {v}' for k, v in report['header']['settings'].items())}", ""]
    if report["judge_accuracy"]:
        lines += ["## The judge on held-out pairs", "",
                  "The user's real next item against another (warm: an unrated warm item; cold: another item of "
                  "the validation half); share of pairs ordered right, 95% bootstrap interval over pairs.", "",
                  "| pairs | n | mean p(first) | sd p | " + " | ".join(["llm", "g", "MiniLM", "SASRec+"]) + " |",
                  "|---|---|---|---|---|---|---|---|"]
        for kind, row in report["judge_accuracy"].items():
            cells = [(f"{row['accuracy'][n]['mean']:.3f} [{row['accuracy'][n]['ci95'][0]:.3f}, "
                      f"{row['accuracy'][n]['ci95'][1]:.3f}]" if n in row["accuracy"] else "n/a")
                     for n in ("llm", "g", "MiniLM", "SASRec+")]
            lines.append(f"| {kind} | {row['pairs']} | {row['mean_p_first']:.3f} | {row['spread_p']:.3f} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## The refinement's strength, chosen on validation", "",
              "Every pool answer of the validation half refines its rows; the l2 kept gives the best validation cold "
              "Recall@50 among those that keep the validation warm HR@10 within the tolerance.", "",
              "| l2 | valid cold Recall@50 | valid warm HR@10 | within the warm floor |", "|---|---|---|---|"]
    lines += [f"| {'no answers' if row['l2'] is None else format(row['l2'], 'g')} | "
              f"{row['valid cold Recall@50']:.4f} | {row['valid warm HR@10']:.4f} | {'yes' if row['kept'] else 'no'} |"
              for row in report["refine_l2"]["sweep"]]
    lines += ["", f"Chosen: l2 {report['refine_l2']['chosen']:g}.", ""]
    if report["per_item_l2"]["sweep"]:
        lines += ["The same choice for the per-item rule, with its own answers of the validation half:", "",
                  "| l2 | valid cold Recall@50 | valid warm HR@10 | within the warm floor |", "|---|---|---|---|"]
        lines += [f"| {'no answers' if row['l2'] is None else format(row['l2'], 'g')} | "
                  f"{row['valid cold Recall@50']:.4f} | {row['valid warm HR@10']:.4f} | "
                  f"{'yes' if row['kept'] else 'no'} |" for row in report["per_item_l2"]["sweep"]]
        lines += ["", f"Chosen: l2 {report['per_item_l2']['chosen']:g}.", ""]
    lines += ["## Selection rules on the test half", "",
              f"Pairs asked per half: {report['pairs_asked']}. Mean over runs (seeds) with [min, max]; gain: the "
              "seed-averaged per-user cold Recall@50 minus `none`'s, 95% bootstrap interval over test users. "
              f"Policy reward (validation cold Recall@50), first 5 iterations {report['policy_reward']['first5']:.4f}, "
              f"last 5 {report['policy_reward']['last5']:.4f}.", "",
              "| rule | runs | pairs used | cold Recall@10 | cold Recall@50 | warm HR@10 | gain Recall@50 |",
              "|---|---|---|---|---|---|---|"]
    for row in report["rules"]:
        cells = [f"{row['metrics'][m]['mean']:.4f} [{row['metrics'][m]['min']:.4f}, {row['metrics'][m]['max']:.4f}]"
                 for m in ("cold Recall@10", "cold Recall@50", "warm HR@10")]
        gain = row["gain_recall50"]
        lines.append(f"| {row['rule']} | {row['runs']} | {row['pairs']:.0f} | {' | '.join(cells)} | "
                     f"{gain['mean']:+.4f} [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}] |")
    per_item = next((r for r in report["rules"] if r["rule"] == "per-item"), None)
    if per_item is not None:
        by_l2 = per_item["detail"]["test_cold_recall50_by_l2"]
        lines += ["", "Per-item rule, test cold Recall@50 at every l2 of the grid (a sensitivity read, not a choice: "
                  "the row above uses validation's): "
                  + ", ".join(f"{float(l2):g}: {value:.4f}" for l2, value in by_l2.items()) + "."]
    feature = next(r for r in report["rules"] if r["rule"] == "feature")["detail"]
    lines += ["", f"Feature rule: {feature.get('feature')} (validation rewards: "
              + ", ".join(f"{k} {v:.4f}" for k, v in feature.get("validation_rewards", {}).items()) + ").", ""]
    return "\n".join(lines)
