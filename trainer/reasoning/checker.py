"""The checker: is a reasoning text true of the history it was written for? Used on the generator's rationales (a
test: every claim it writes must pass) and on the model's own reasoning (the evaluation's faithfulness).

A text is read back sentence by sentence with the generator's templates (`model.claims.parse`); each
claim is then verified against the window's facts (`trainer.reasoning.facts`): a genre or decade among the dominant
ones, the rating given most often, the genre the recent entries lean to. Sentences no template reads are counted
apart (`Parsed.unparsed`), not as false claims (a quoted title an older adapter writes, say); the closing prediction
is scored against the next item (`prediction_matches`), not against the history. Supervision checked by a
program stands in for the teacher model that R2ec ("Towards Large Recommender Models with Reasoning") distils its
reasoning from.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.claims import (
    Claim,
    DecadeLead,
    GenreLead,
    Parsed,
    RatingLead,
    RecentGenre,
    parse,
)
from trainer.reasoning.facts import HistoryFacts


def claim_holds(claim: Claim, facts: HistoryFacts) -> bool:
    """Whether one claim is true of the window `facts` describes."""
    match claim:
        case GenreLead(genre):
            return genre in facts.top_genres
        case DecadeLead(decade):
            return decade in facts.top_decades
        case RatingLead(rating):
            return rating in facts.top_ratings
        case RecentGenre(genre):
            return genre in facts.recent_genres
    raise TypeError(f"not a claim: {claim!r}")


@dataclass(frozen=True)
class Check:
    """A text checked against one history."""

    parsed: Parsed
    verdicts: tuple[bool, ...]
    """One per `parsed.claims`: whether it holds."""

    @property
    def claims(self) -> int:
        return len(self.verdicts)

    @property
    def true_claims(self) -> int:
        return sum(self.verdicts)

    @property
    def false_claims(self) -> list[Claim]:
        return [c for c, ok in zip(self.parsed.claims, self.verdicts, strict=True) if not ok]

    @property
    def faithful(self) -> bool:
        """Every claim holds and every sentence was read (a text with no claims is not faithful)."""
        return self.claims > 0 and all(self.verdicts) and not self.parsed.unparsed


def check_text(text: str, facts: HistoryFacts, genres: dict[str, str] | None = None) -> Check:
    """Read `text` back (genre names matched through `genres`, lowercase -> catalog spelling) and verify every
    claim against `facts`."""
    parsed = parse(text, genres)
    return Check(parsed, tuple(claim_holds(claim, facts) for claim in parsed.claims))


