"""Which pair of versions to compare next, so that every vote buys the most.

The rule: fit the Bradley-Terry strengths of the candidate versions on the votes so far
(`eval.leaderboard`, no bootstrap), and for each pair (i, j)

    doubt(i, j) = Phi(-|b_i - b_j| / se(b_i - b_j))     (0 .. 0.5)
    score(i, j) = doubt(i, j) / sqrt(1 + votes(i, j))

`doubt` is the chance that the fitted order of i and j is the wrong way round (normal
approximation, the standard error from the fit's Laplace covariance: it shrinks with the
votes of i and j against anyone, so the order of two versions never compared directly can
still be settled through a third); dividing by sqrt(1 + votes between them) prefers pairs seen
least, so a pair whose order stays a coin toss (two versions equally good) does not take every
vote. The pair with the highest score is shown; ties (e.g. before any vote, all 0.5) are broken
at random. A version with no votes has se ~ 1 log-odds (the prior) and so comes up early.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.stats import norm

from core.errors import PersonaStudioError
from eval.leaderboard import Tally, covariance, design, fit_strengths, tally, weights


def order_doubt(strength: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """(K, K): P(the fitted order of i and j is wrong) under the normal approximation."""
    variance = np.diag(cov)[:, None] + np.diag(cov)[None, :] - 2 * cov
    gap = np.abs(strength[:, None] - strength[None, :])
    return norm.cdf(-gap / np.sqrt(np.maximum(variance, 1e-12)))


def votes_between(t: Tally) -> np.ndarray:
    """(K, K) symmetric: votes of each pair."""
    k = len(t.versions)
    votes = np.zeros((k, k))
    votes[t.pairs[:, 0], t.pairs[:, 1]] = t.counts.sum(axis=1)
    return votes + votes.T


def pair_scores(strength: np.ndarray, cov: np.ndarray, between: np.ndarray) -> np.ndarray:
    """(K, K) score of every pair by the module's rule, from a fit (strengths, covariance) and
    the votes between each pair (symmetric); -inf on the diagonal."""
    scores = order_doubt(strength, cov) / np.sqrt(1 + between)
    np.fill_diagonal(scores, -np.inf)
    return scores


def fitted_scores(t: Tally) -> np.ndarray:
    """`pair_scores` of a fresh fit of the votes `t`."""
    x, y = design(t)
    w = weights(t.counts)
    strength = fit_strengths(x, y, w[None])[0]
    return pair_scores(strength, covariance(x, w, strength), votes_between(t))


def best_pair(scores: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """The highest-scoring pair (i < j), ties broken at random."""
    upper = np.triu(np.ones_like(scores, dtype=bool), k=1)
    top = np.flatnonzero(upper & (scores >= scores[upper].max() - 1e-12))
    i, j = np.unravel_index(rng.choice(top), scores.shape)
    return int(i), int(j)


def pick_pair(store, versions: list[str], persona: str | None = None, seed=None) -> tuple[str, str]:
    """The two of `versions` (e.g. the pool's) to compare next, in random order, by the votes in
    `store`; only `persona`'s votes (its `persona_name`) when given, so each persona's own
    leaderboard fills in too."""
    return choose_pair(store.preferences(), versions, persona, seed)


def choose_pair(rows: Iterable, versions: list[str], persona: str | None = None, seed=None) -> tuple[str, str]:
    """`pick_pair` on the votes `rows` (objects like `store.PreferenceRow`)."""
    versions = list(dict.fromkeys(versions))
    if len(versions) < 2:
        raise PersonaStudioError(
            f"only {len(versions)} model version to compare", "train a version (python -m training.train) first"
        )
    rows = [r for r in rows if persona is None or r.persona_name == persona]
    rng = np.random.default_rng(seed)
    i, j = best_pair(fitted_scores(tally(rows, versions)), rng)
    return (versions[i], versions[j]) if rng.random() < 0.5 else (versions[j], versions[i])
