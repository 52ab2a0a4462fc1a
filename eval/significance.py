"""Is a change between two versions real? The tests and 95 % intervals the scorecard uses.

paired_bootstrap([0.2, 0.4, 0.5], [0.1, 0.4, 0.3])   # (delta, low, high), turns resampled together
mcnemar(7, 1)                                         # p of 7 vs 1 discordant pairs
two_proportions(30, 40, 20, 40)                       # (delta, low, high, p), independent samples
win_rate(14, 6)                                       # (rate, low, high, p) against 50 %
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from eval.human import wilson_interval

ALPHA = 0.05  # 95 % intervals; p < ALPHA is significant


def paired_bootstrap(
    child: Sequence[float], parent: Sequence[float], geometric: bool = False, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float | None, float | None]:
    """(delta, low, high): mean(child) - mean(parent) (of geometric means with `geometric`) and
    its 95 % percentile bootstrap interval, pairs resampled together (scipy.stats.bootstrap,
    paired=True), seeded. Percentile rather than BCa: BCa has no answer when every pair has
    the same difference, which happens with binary scores. No interval below 2 pairs."""
    from scipy.stats import bootstrap

    c, p = np.asarray(child, dtype=float), np.asarray(parent, dtype=float)
    if len(c) != len(p) or not len(c):
        raise ValueError(f"need the same number (> 0) of child and parent values, got {len(c)} and {len(p)}")
    if geometric:  # perplexity: exp(mean log) is not dragged by the odd turn with a huge value
        c, p = np.log(c), np.log(p)

    def statistic(c, p, axis=-1):
        return np.exp(c.mean(axis)) - np.exp(p.mean(axis)) if geometric else (c - p).mean(axis)

    delta = float(statistic(c, p))
    if len(c) < 2:
        return delta, None, None
    result = bootstrap(
        (c, p),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        batch=1000,  # memory: 1000 resamples x turns at a time
        method="percentile",
        confidence_level=1 - ALPHA,
        rng=np.random.default_rng(seed),
    )
    return delta, float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar(child_only: int, parent_only: int) -> float:
    """Exact McNemar p-value (two-sided) from the discordant pairs: `child_only` went the child's
    way, `parent_only` the parent's; with no difference each is a fair coin (binomial test)."""
    from scipy.stats import binomtest

    n = child_only + parent_only
    return 1.0 if n == 0 else float(binomtest(child_only, n, 0.5).pvalue)


def two_proportions(good_c: int, n_c: int, good_p: int, n_p: int) -> tuple[float, float, float, float]:
    """(delta, low, high, p) of two independent shares: child - parent, Newcombe's hybrid score
    interval (his method 10, from the two Wilson intervals) and Fisher's exact p-value."""
    from scipy.stats import fisher_exact

    pc, pp = good_c / n_c, good_p / n_p
    (lc, uc), (lp, up) = wilson_interval(good_c, n_c), wilson_interval(good_p, n_p)
    delta = pc - pp
    low = delta - math.sqrt((pc - lc) ** 2 + (up - pp) ** 2)
    high = delta + math.sqrt((uc - pc) ** 2 + (pp - lp) ** 2)
    p = fisher_exact([[good_c, n_c - good_c], [good_p, n_p - good_p]]).pvalue
    return delta, low, high, float(p)


def win_rate(wins: int, losses: int) -> tuple[float, float, float, float]:
    """(rate, low, high, p): the share of decided votes won, its 95 % Wilson interval and the
    two-sided binomial p-value against 50 %."""
    from scipy.stats import binomtest

    test = binomtest(wins, wins + losses, 0.5)
    ci = test.proportion_ci(confidence_level=1 - ALPHA, method="wilson")
    return wins / (wins + losses), float(ci.low), float(ci.high), float(test.pvalue)


def normal_difference(a: float, se_a: float, b: float, se_b: float) -> tuple[float, float, float, float]:
    """(delta, low, high, p) of a - b for two independent estimates with standard errors."""
    from scipy.stats import norm

    delta, se = a - b, math.hypot(se_a, se_b)
    if se == 0:
        return delta, delta, delta, 1.0 if delta == 0 else 0.0
    z = norm.ppf(1 - ALPHA / 2)
    return delta, delta - z * se, delta + z * se, float(2 * norm.sf(abs(delta) / se))
