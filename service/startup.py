"""Start-up: the settings resolved once into what the app serves (`Served`), each artifact loaded once.

Every way of starting the gateway goes through `resolve`: `reasonrec serve` (`make serve`), the container's
`uvicorn --factory service.main:create_app`, and the tests. With `REASONREC_DEFAULT_ARTIFACTS` (on by default)
each artifact left unset is filled in (`default_artifacts`): the dataset's SASRec+ checkpoint, item table and
rating model trained here when finished (under `REASONREC_ARTIFACTS`), else the ones shipped with the repository
in `deploy/artifacts/<dataset>/`. Then the engine, the table (with the featurizer of new items' content) and the
rating model are loaded, and the index folder is named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from indexer.core.paths import (
    SHIPPED,
    finished_or_shipped,
    index_dir_for,
    rating_dir,
    reasoning_adapter_dir,
    sasrec_dir,
    table_dir,
)
from model.engines.base import Engine
from model.engines.batching import MicroBatchingEngine
from model.engines.fast_engine import FastEngine, load_fast_engine
from model.engines.lean import PRECISIONS
from model.engines.loading import adapter_base, finished_adapter, load_model, model_fingerprint
from model.engines.merge import model_folder
from model.engines.transformers_engine import TransformersEngine
from model.engines.transformers_engine import load_engine as load_transformers_engine
from model.engines.vllm_engine import VllmEngine, VllmTimeouts
from model.judge_pool import POOL_FILE, JudgePool
from model.networks.item_features import ContentFeaturizer
from model.networks.sasrec import finished_checkpoint
from model.networks.table_artifact import TableArtifact, finished_table, stored_fingerprint
from model.rankers.conclusion import ConclusionTerm
from model.rating.factors import RatingModel, finished_rating_model
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """What the app serves, resolved and loaded once."""

    settings: Settings
    """The settings with every artifact path filled in (`default_artifacts`)."""
    engine: Engine
    table: TableArtifact | None
    featurizer: ContentFeaturizer | None
    """Content features of hot-added items and titles outside the catalog (with a table)."""
    rating: RatingModel | None
    index_dir: Path
    conclusion: ConclusionTerm
    """The reasoning's conclusion term, saved beside the reasoning adapter (zero without one)."""
    judge: Judge | None = None
    """The simulated users of hot-added items (`settings.judge`), or None."""


@dataclass(frozen=True)
class Judge:
    """The model as the user (the served model with the judge's adapter merged) and the users it answers as."""

    engine: Engine
    pool: JudgePool


def resolve(settings: Settings, engine: Engine | None = None) -> Served:
    """Fill in the default reasoning adapter, load the engine (unless given), fill in the other default artifacts,
    load the table and the rating model, and name the index folder."""
    if settings.default_artifacts and engine is None:
        settings = settings.model_copy(update={"adapter": default_adapter(settings)})
    engine = engine if engine is not None else load_engine(settings)
    if settings.default_artifacts:
        settings = default_artifacts(settings, engine)
    table, featurizer = load_table(settings, engine)
    index_dir = index_dir_for(settings.dataset, engine.fingerprint, settings.index_dir,
                              table.table_hash if table else None, settings.artifacts)
    adapter = settings.reasoning_adapter()
    conclusion = ConclusionTerm.load(adapter) if adapter is not None and engine.reasoning_adapter else ConclusionTerm()
    return Served(settings, engine, table, featurizer, load_rating_model(settings), index_dir, conclusion,
                  load_judge(settings, table))


def default_adapter(settings: Settings) -> Path | Literal["none"] | None:
    """The reasoning adapter to serve when none is configured: the dataset's trained one when finished (under
    `settings.artifacts`), else the shipped one, when it was trained on the served model's weights and templates;
    `settings.adapter` itself when it is set ("none" included). With vLLM only a configured adapter is served: the
    generation servers must have been started with the same one (`model.engines.vllm_launch.server_args`)."""
    if settings.adapter is not None or settings.engine == "vllm":
        return settings.adapter
    trained = reasoning_adapter_dir(settings.dataset, root=settings.artifacts)
    found = finished_or_shipped(trained, SHIPPED / settings.dataset / "reasoning", finished_adapter)
    if found is None:
        log.warning("no reasoning adapter for %s: the reasoning comes from the base model, which copies the prompt's "
                    "lines (train one with `reasonrec train-reasoning --dataset %s`)", settings.dataset,
                    settings.dataset)
        return None
    base = model_fingerprint(settings.model, settings.artifacts)
    if adapter_base(found) != base:
        log.warning("the reasoning adapter %s was trained on %s, not on the served %s: not used", found,
                    adapter_base(found), base)
        return None
    return found


def default_artifacts(settings: Settings, engine: Engine) -> Settings:
    """Settings with the dataset's SASRec+ checkpoint, item table and rating model filled in where none is
    configured: the ones trained here (under `settings.artifacts`) when finished, else the ones shipped with the
    repository (`SHIPPED`); a table only when it was trained on the served model's states."""
    updates: dict[str, Path | None] = {}
    root = settings.artifacts
    if settings.sasrec_checkpoint is None:
        updates["sasrec_checkpoint"] = finished_or_shipped(
            sasrec_dir(settings.dataset, root=root), SHIPPED / settings.dataset / "sasrec",
            lambda f: bool(finished_checkpoint(f)))
        if updates["sasrec_checkpoint"] is None:
            log.warning("no finished SASRec+ checkpoint for %s: the sasrec ranker is off and the fallback is popular "
                        "(train it with `reasonrec train-sasrec --dataset %s`)", settings.dataset, settings.dataset)
    if settings.table is None:
        table = finished_or_shipped(table_dir(settings.dataset, root=root), SHIPPED / settings.dataset / "table",
                                    finished_table)
        if table is not None and stored_fingerprint(table) == engine.fingerprint:
            updates["table"] = table
        else:
            log.warning("no item table for %s and %s: the direct and reasoning rankers rank by the cosine of raw "
                        "states (train one with `reasonrec train-table --dataset %s`)", settings.dataset,
                        engine.fingerprint.model_id, settings.dataset)
    if settings.rating_model is None:
        updates["rating_model"] = finished_or_shipped(
            rating_dir(settings.dataset, root=root), SHIPPED / settings.dataset / "rating", finished_rating_model)
        if updates["rating_model"] is None:
            log.warning("no rating model for %s: /rate uses the guided LLM rating (train one with `reasonrec "
                        "train-rating --dataset %s`)", settings.dataset, settings.dataset)
    return settings.model_copy(update=updates)


def load_engine(settings: Settings) -> Engine:
    """The in-process engine for `settings.model` (fast by default, or transformers; holding the reasoning
    adapter), behind the micro-batcher unless `settings.micro_batching` is off (decodes are batched continuously
    by the transformers engine only); or, with `settings.engine == "vllm"`, the vLLM client (the vLLM servers
    batch for themselves)."""
    if settings.engine == "vllm":
        timeouts = VllmTimeouts(read_s=settings.request_timeout_s, retry_after_s=settings.vllm_retry_after_s)
        return VllmEngine.for_model_folder(
            model_folder(settings.model, settings.artifacts), settings.vllm_generate_urls, settings.vllm_pool_urls,
            timeouts, api_key=settings.vllm_secret(), reasoning_adapter=settings.reasoning_adapter(),
        )
    if settings.engine_threads is not None:
        torch.set_num_threads(settings.engine_threads)
    engine: FastEngine | TransformersEngine
    if settings.engine == "fast":
        engine = load_fast_engine(settings.model, settings.artifacts, settings.reasoning_adapter(),
                                  PRECISIONS[settings.engine_precision])
    else:
        engine = load_transformers_engine(settings.model, batch_size=settings.engine_batch_size,
                                          artifacts=settings.artifacts, reasoning_adapter=settings.reasoning_adapter())
    if not settings.micro_batching:
        return engine
    return MicroBatchingEngine(
        engine, window_s=settings.batch_window_ms / 1000.0, max_batch=settings.engine_batch_size,
        continuous=settings.continuous_batching,
    )


def load_table(settings: Settings, engine: Engine) -> tuple[TableArtifact | None, ContentFeaturizer | None]:
    """The configured item table and the featurizer of new items' content (loads MiniLM when the table reads it);
    an error when the table was trained on another language model's states."""
    if settings.table is None:
        return None, None
    table = TableArtifact.load(settings.table)
    if (table.spec.llm or table.has_head) and table.fingerprint != engine.fingerprint:
        raise ValueError(f"REASONREC_TABLE={settings.table} was trained on the states of {table.fingerprint}, not of "
                         f"the served model {engine.fingerprint}; train one for this model with "
                         "`reasonrec train-table`")
    text_encoder = None
    if table.spec.minilm:
        from model.networks.minilm import MiniLMEncoder

        text_encoder = MiniLMEncoder()
    return table, ContentFeaturizer(table.spec, engine, text_encoder, table.center)


def load_judge(settings: Settings, table: TableArtifact | None) -> Judge | None:
    """The judge of `settings.judge` (its adapter merged into the served model, in process, whatever the engine)
    and its pool; None when unset; an error naming what is missing."""
    if settings.judge is None:
        return None
    if table is None:
        raise ValueError("REASONREC_JUDGE refines the rows of an item table: it needs REASONREC_TABLE (or the "
                         "dataset's default table)")
    if not finished_adapter(settings.judge):
        raise ValueError(f"REASONREC_JUDGE={settings.judge} holds no finished adapter: train one with "
                         "`reasonrec train-judge`")
    pool = JudgePool.load(settings.judge / POOL_FILE)
    return Judge(FastEngine(load_model(settings.model, settings.judge, settings.artifacts)), pool)


def load_rating_model(settings: Settings) -> RatingModel | None:
    """The configured rating model (`settings.rating_model`), None when unset; an error for one with a head on
    the language model's state (an experiment, `reasonrec experiment rating-head`; not served)."""
    if settings.rating_model is None:
        return None
    rating = RatingModel.load(settings.rating_model)
    if rating.uses_head:
        raise ValueError(f"REASONREC_RATING_MODEL={settings.rating_model} has a head on the language model's state "
                         "(an evaluation ablation): serve one of `reasonrec train-rating`")
    return rating
