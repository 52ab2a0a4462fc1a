"""Hits@1 of 20: can the version tell the real reply from 19 others by its own likelihood?

Synthetic-Persona-Chat ships no candidate sets (ConvAI2 did), so the candidates are drawn
here: for each scored turn, the reference reply plus 19 distractors, replies of the split's
other conversations (any speaker), drawn without replacement by a seeded random generator
(`draw_distractors`), so two versions are ranked on the same candidates. Each candidate is
scored by the version's mean negative log-likelihood per token after the turn's prompt
(teacher-forced, as reference perplexity; length-normalised, so a short candidate does not win
by being short), and a turn is a hit when the reference scores strictly best. Reported as
"Hits@1/20 (own candidates)": comparable across versions on the same data and seed, not to
published ConvAI2 numbers.
"""

from __future__ import annotations

import random
import statistics

from eval.perplexity import Messages, reference_nll

CANDIDATES = 20  # the reference and 19 distractors


def draw_distractors(
    conversation_ids: list[str], pool: dict[str, list[str]], seed: int, k: int = CANDIDATES - 1
) -> list[list[str]]:
    """For each turn (by its conversation id), `k` replies from other conversations of `pool`
    (conversation id -> its replies), drawn without replacement, seeded and in input order."""
    rng = random.Random(seed)
    replies = [(cid, text) for cid, texts in sorted(pool.items()) for text in texts if text.strip()]
    drawn = []
    for own in conversation_ids:
        others = [text for cid, text in replies if cid != own]
        if len(others) < k:
            raise ValueError(f"only {len(others)} replies of other conversations to draw {k} distractors from")
        drawn.append(rng.sample(others, k))
    return drawn


def hits_at_1(
    engine, conversations: list[Messages], references: list[str], distractors: list[list[str]], batch_size: int = 8
) -> list[float]:
    """Per turn, 1.0 when the reference reply has a lower mean NLL per token under `engine`
    than every distractor after the same prompt, else 0.0 (ties are misses)."""
    prompts, candidates = [], []
    for messages, reference, others in zip(conversations, references, distractors, strict=True):
        for text in (reference, *others):
            prompts.append(messages)
            candidates.append(text)
    nll = reference_nll(engine, prompts, candidates, batch_size)
    hits, per_turn = [], len(distractors[0]) + 1 if distractors else CANDIDATES
    for start in range(0, len(nll), per_turn):
        scores = [total / count if count else float("inf") for total, count in nll[start : start + per_turn]]
        hits.append(1.0 if all(scores[0] < other for other in scores[1:]) else 0.0)
    return hits


def hits_summary(hits: list[float]) -> dict:
    return {"hits_at_1": statistics.fmean(hits), "hits_items": len(hits)} if hits else {}
