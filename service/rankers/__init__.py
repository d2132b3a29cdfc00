"""Ranker dispatch: the name a request gives -> the served ranker that answers.

Each served ranker wraps a core of `model.rankers`, the class the evaluation harness measures. Adding a ranker is
a core in `model/rankers/`, a served wrapper here, one line in `RANKERS` and one in `build_rankers`; the request
schema, the settings check and the fallback pick it up from here. A ranker with `uses_engine = False` may serve as
the fallback.
"""

from __future__ import annotations

from pathlib import Path

from service.errors import CannotRank
from service.metrics import Metrics
from service.rankers.base import Ranked, Ranker, RankQuery, StoreGetter
from service.rankers.catalog import ContentServed, PopularServed, SasrecServed
from service.rankers.llm import DirectRanker, LlmServing, ReasoningRanker

RANKERS: dict[str, type[Ranker]] = {
    "reasoning": ReasoningRanker,
    "direct": DirectRanker,
    "popular": PopularServed,
    "sasrec": SasrecServed,
    "content": ContentServed,
}
LAST_RESORT_RANKER = "popular"
"""Answers when the configured fallback ranker cannot (e.g. sasrec without a checkpoint): needs only the catalog."""
RANKER_NAMES: tuple[str, ...] = tuple(RANKERS)

__all__ = [
    "LAST_RESORT_RANKER", "RANKERS", "RANKER_NAMES", "CannotRank", "LlmServing", "RankQuery", "Ranked", "Ranker",
    "build_rankers", "check_ranker_settings",
]


def build_rankers(store: StoreGetter, metrics: Metrics, llm: LlmServing, sasrec_checkpoint: Path | None
                  ) -> dict[str, Ranker]:
    """One served ranker of each name, each given what it uses."""
    rankers: dict[str, Ranker] = {
        "reasoning": ReasoningRanker(store, metrics, llm),
        "direct": DirectRanker(store, metrics, llm),
        "popular": PopularServed(store, metrics),
        "sasrec": SasrecServed(store, metrics, sasrec_checkpoint),
        "content": ContentServed(store, metrics),
    }
    assert rankers.keys() == RANKERS.keys(), "every ranker of RANKERS is built here"
    return rankers


def check_ranker_settings(default_ranker: str, fallback_ranker: str) -> None:
    """Refuse unknown ranker names, and a fallback that could itself time out (one that uses the engine)."""
    for env, name in (("REASONREC_DEFAULT_RANKER", default_ranker), ("REASONREC_FALLBACK_RANKER", fallback_ranker)):
        if name not in RANKERS:
            raise ValueError(f"{env}={name!r} is not a ranker; choose one of {', '.join(RANKER_NAMES)}")
    if RANKERS[fallback_ranker].uses_engine:
        cheap = [n for n, cls in RANKERS.items() if not cls.uses_engine]
        raise ValueError(
            f"REASONREC_FALLBACK_RANKER={fallback_ranker!r} uses the engine, which is what it falls back from; "
            f"choose one of {', '.join(cheap)}"
        )
