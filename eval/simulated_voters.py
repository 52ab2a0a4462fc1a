"""Simulated A/B voters of known strengths: how many votes until the leaderboard's order is
the true one, with pairs chosen by `eval.pairing`'s rule or at random?

Versions have true log-strengths spaced `gap` apart (shuffled over the indices per run); a
voter shown (i, j) says "tie" with probability `tie`, else prefers i with probability
sigmoid(b_i - b_j) (the Bradley-Terry model the leaderboard fits). Votes come in rounds of
`batch` (several raters at once: each round's pairs are chosen from the fit of the votes before
it, the least-voted factor updated pick by pick); after each round the strengths are refitted
and a run has "reached the true order" at the first round whose fitted order is the true one.
Runs of every seed go in lockstep so that each round is one scikit-learn fit for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.leaderboard import TIE, Tally, covariance, design, fit_strengths, weights
from eval.pairing import best_pair, pair_scores


@dataclass(frozen=True)
class Simulation:
    versions: int = 6
    gap: float = 0.3  # log-odds between neighbours (~52 Elo points)
    tie: float = 0.1
    batch: int = 5  # votes per round
    max_votes: int = 2000


def votes_to_true_order(sim: Simulation, seeds: list[int], active: bool) -> np.ndarray:
    """For each seed, the number of votes after which the fitted order first equalled the true
    one (`sim.max_votes` + 1 where it never did)."""
    k = sim.versions
    pairs = np.array([(i, j) for i in range(k) for j in range(i + 1, k)])
    empty = Tally([f"v{i}" for i in range(k)], pairs, np.zeros((len(pairs), 4)))
    x, y = design(empty)
    rngs = [np.random.default_rng(seed) for seed in seeds]
    truth = np.stack([rng.permutation(k) * sim.gap for rng in rngs])  # (S, K) true log-strengths
    counts = np.zeros((len(seeds), len(pairs), 4))
    reached = np.full(len(seeds), sim.max_votes + 1)
    strength = np.zeros((len(seeds), k))
    for votes in range(sim.batch, sim.max_votes + 1, sim.batch):
        for s, rng in enumerate(rngs):
            if reached[s] > sim.max_votes:
                for p in _choose(x, counts[s], strength[s], pairs, sim.batch, active, rng):
                    counts[s, p, _vote(truth[s], pairs[p], sim.tie, rng)] += 1
        strength = fit_strengths(x, y, weights(counts))
        right = (np.argsort(strength, axis=1) == np.argsort(truth, axis=1)).all(axis=1)
        reached = np.where(right & (reached > sim.max_votes), votes, reached)
        if (reached <= sim.max_votes).all():
            break
    return reached


def _choose(x, counts, strength, pairs, n, active, rng) -> list[int]:
    """`n` pair indices: by `eval.pairing`'s rule on this fit, or uniformly at random."""
    if not active:
        return list(rng.integers(len(pairs), size=n))
    k = strength.shape[0]
    cov = covariance(x, weights(counts), strength)
    between = np.zeros((k, k))
    between[pairs[:, 0], pairs[:, 1]] = counts.sum(axis=1)
    between += between.T
    chosen = []
    for _ in range(n):  # the fit stays; each pick counts as a vote of its pair for the next
        i, j = best_pair(pair_scores(strength, cov, between), rng)
        between[i, j] += 1
        between[j, i] += 1
        chosen.append(int(np.flatnonzero((pairs[:, 0] == i) & (pairs[:, 1] == j))[0]))
    return chosen


def _vote(truth: np.ndarray, pair: np.ndarray, tie: float, rng: np.random.Generator) -> int:
    """The outcome column (I_WON, J_WON or TIE) of one simulated vote on `pair`."""
    if rng.random() < tie:
        return TIE
    p_i = 1 / (1 + np.exp(-(truth[pair[0]] - truth[pair[1]])))
    return 0 if rng.random() < p_i else 1
