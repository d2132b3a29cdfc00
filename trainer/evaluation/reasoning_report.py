"""The report of `reasonrec eval-reasoning` (`trainer.evaluation.reasoning_eval`): a markdown page and a JSON
beside it, naming the command, data, split, users, model, adapter, seed and machine, with the figures and example
reasonings, good (every claim true, the conclusion's genre right) and bad (a false claim, an unread sentence, or
no `<answer>` within the budget). The reasoning is the R2ec kind ("Towards Large Recommender Models with
Reasoning"): an analysis before the recommendation state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model.prompts import HistoryLine, history_line
from trainer.reasoning.facts import ReasoningContext
from trainer.reasoning.scoring import ReasoningScores, ScoredReasoning


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _example(row: ScoredReasoning, context: ReasoningContext | None) -> dict[str, Any]:
    catalog = context.catalog if context is not None else None
    target = catalog[row.example.target.item_id] if catalog is not None else None
    return {"user": row.example.user_id, "history_lines": len(row.example.history),
            "next_item": row.example.target.item_id,
            "next_genres": list(target.genres) if target is not None else None,
            "reasoning": row.text, "wrote_marker": row.wrote_marker, "tokens": row.tokens,
            "claims": row.check.claims, "false_claims": [repr(c) for c in row.check.false_claims],
            "unparsed": list(row.check.parsed.unparsed), "genre_right": row.match[0], "decade_right": row.match[1]}


def pick_examples(scores: ReasoningScores, n: int) -> tuple[list[ScoredReasoning], list[ScoredReasoning]]:
    """Up to n good reasonings (faithful, marker written, genre right) and n bad ones (the rest, worst first)."""
    good = [r for r in scores.rows if r.check.faithful and r.wrote_marker and r.match[0]]
    bad = [r for r in scores.rows if not (r.check.faithful and r.wrote_marker)]
    bad.sort(key=lambda r: (r.wrote_marker, -len(r.check.false_claims) - len(r.check.parsed.unparsed)))
    return good[:n], bad[:n]


def write_reasoning_report(stem: Path, meta: dict[str, Any], scores: ReasoningScores, examples: int,
                           context: ReasoningContext | None = None) -> list[Path]:
    """`stem`.md and `stem`.json; returns both paths."""
    summary = scores.summary()
    good, bad = pick_examples(scores, examples)
    payload = {**meta, "metrics": summary, "good_examples": [_example(r, context) for r in good],
               "bad_examples": [_example(r, context) for r in bad],
               "all": [{"user": r.example.user_id, "reasoning": r.text, "wrote_marker": r.wrote_marker,
                        "tokens": r.tokens, "claims": r.check.claims, "true_claims": r.check.true_claims,
                        "genre_right": r.match[0], "baseline_genre_right": r.baseline[0]} for r in scores.rows]}
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    s = summary
    lines = [
        f"# Reasoning on {meta['data']['dataset']}: marker, faithfulness, next genre", "",
        f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ", f"Machine: {meta['machine']}  ",
        f"Data: {meta['data']}  ", f"Split: {meta['split']}; users: {meta['users']}  ",
        f"Model: {meta['model']}; adapter: {meta['adapter'] or 'none'}  ",
        f"Reasoning budget: {meta['reasoning_tokens']} tokens, greedy, batches of {meta['batch_size']}", "",
        "| figure | value |", "|---|---|",
        f"| `<answer>` written by the model within the budget | {_pct(s['marker_rate'])} |",
        f"| reasoning length, generated tokens (mean / max) | {s['tokens_mean']:.1f} / {s['tokens_max']} |",
        f"| faithfulness: checked claims that are true of the history | {_pct(s['faithfulness'])} of "
        f"{s['claims']} |",
        f"| reasonings with every claim true and every sentence read | {_pct(s['faithful_reasonings'])} |",
        f"| reasonings with a sentence no template reads | {_pct(s['with_unparsed_sentences'])} |",
        f"| reasonings with a conclusion | {_pct(s['with_prediction'])} |",
        f"| next-genre match of the conclusion / always the top genre | {_pct(s['genre_match'])} / "
        f"{_pct(s['genre_baseline'])} (difference 95% CI {_ci(s.get('genre_match_minus_baseline_ci95'))}) |",
        f"| next-decade match of the conclusion / always the top decade | {_pct(s['decade_match'])} / "
        f"{_pct(s['decade_baseline'])} (difference 95% CI {_ci(s.get('decade_match_minus_baseline_ci95'))}) |",
        f"| seconds per request, batched | {s['seconds_per_request_batched']:.2f} |",
    ]
    by_kind = ", ".join(f"{kind} {v['true']}/{v['true'] + v['false']}" for kind, v in s["claims_by_kind"].items())
    lines.append(f"| true / checked claims by kind | {by_kind or 'none'} |")
    if "seconds_per_request_single_p50" in s:
        lines.append(f"| seconds per request, one at a time (p50 of {s['single_requests']}) | "
                     f"{s['seconds_per_request_single_p50']:.2f} |")
    if meta.get("adapter_meta"):
        lines += ["", f"Adapter training: `{json.dumps(meta['adapter_meta'], default=str)}`"]
    for title, rows in (("Good reasonings", good), ("Bad reasonings", bad)):
        lines += ["", f"## {title}", ""]
        for row in rows:
            lines += _example_lines(row, context)
        if not rows:
            lines.append("(none)")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [md_path, json_path]


def _ci(pair: list[float] | None) -> str:
    return "n/a" if pair is None else f"[{100 * pair[0]:+.1f}, {100 * pair[1]:+.1f}] points"


def _example_lines(row: ScoredReasoning, context: ReasoningContext | None) -> list[str]:
    info = _example(row, context)
    history = []
    if context is not None:
        history = [history_line(HistoryLine.of_item(context.catalog[x.item_id], x.rating, x.timestamp))
                   for x in row.example.history[-5:]]
    return [f"- user {info['user']} ({info['history_lines']} lines; last ones: {'; '.join(history) or 'n/a'}); "
            f"next: {info['next_item']} {info['next_genres'] or ''}",
            f"  > {row.text.strip() or '(empty)'}{' <answer>' if row.wrote_marker else ' [budget cut]'}",
            f"  claims {row.check.claims}, false: {info['false_claims'] or 'none'}; unread: "
            f"{info['unparsed'] or 'none'}; genre right: {row.match[0]}"]
