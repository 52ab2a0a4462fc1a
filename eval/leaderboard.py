"""Leaderboard: Bradley-Terry strengths of every model version from the blind A/B votes.

    python -m eval.leaderboard                         # the leaderboard, pair counts, per persona
    python -m eval.leaderboard --out results/          # also leaderboard.csv/.json, pairs.csv, personas.csv
    python -m eval.leaderboard --rounds 1000 --seed 0 --format csv

The model: P(version i's reply is preferred to j's) = sigmoid(b_i - b_j). It is fitted as a
logistic regression without intercept on one row per vote, x = e_A - e_B (as Chatbot Arena
does), with scikit-learn's `LogisticRegression`; votes are first summed per pair of versions and
outcome, so the fit sees at most 2 rows per pair, each weighted by its vote count.

Votes, each a stated choice: "a" / "b" is a win for that side; "tie" (both as good) and
"both_bad" (neither good) say neither reply is preferred, so each counts as half a win for
both sides (Arena's rule for ties). Both are counted per version, so "both bad" stays
visible although it does not move the order. A vote of a version against itself says nothing
about the order and is left out (counted in `Board.notes`).

A weak L2 prior (C = 1: b ~ N(0, 1) in log-odds) keeps strengths finite for a version that
never lost or a comparison graph in pieces, and centres the strengths (sum b = 0). It weighs
about as much as 4 votes at even odds per version, so it matters only for a version with few.
Shown strengths are on the Elo scale: 1000 + 400 log10(e) b, so a difference of 400 means 10:1
odds.

Intervals: a bootstrap of the votes (resample n of the n votes with replacement, `rounds`
times, seeded). Resampling votes only changes how many votes each (pair, outcome) has, so each
round is a multinomial draw of those counts; all rounds are fitted at once as one
block-diagonal logistic regression (the rounds' losses and priors add up, so its optimum is
each round's own): 0.4-1.0 s for 10 versions x 2,000 votes x 1,000 rounds on 2 cores shared at
a load average of ~10 (benchmarks/leaderboard.py; a loop of 1,000 fits took 68-121 s). The 95 %
interval is the 2.5-97.5 percentile of a version's strengths over the rounds. Rank = 1 + the number of versions
whose interval lies wholly above this one's (as Arena ranks): a version is not ranked below
another whose interval overlaps its own just because its point estimate is lower.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LogisticRegression

from core.cli import entry_point

PRIOR_C = 1.0  # inverse L2 strength: b ~ N(0, C) in log-odds
TOL = 1e-8  # lbfgs gradient tolerance per fit (scikit-learn scales it by the summed weights)
ELO_SCALE = 400 / math.log(10)  # log-odds -> Elo points
ELO_BASE = 1000.0
# Per pair (i < j), what the votes said: i preferred, j preferred, tie, both bad.
I_WON, J_WON, TIE, BOTH_BAD = range(4)
COLUMNS = ["rank", "model version", "strength", "95 % low", "95 % high", "votes", "won", "lost", "ties", "both bad"]


@dataclass(frozen=True)
class Tally:
    """Votes summed per unordered pair of versions: `counts[p]` = (i won, j won, tie, both bad)
    for `pairs[p]` = (i, j), i < j, indices into `versions`."""

    versions: list[str]
    pairs: np.ndarray  # (P, 2) int
    counts: np.ndarray  # (P, 4) float
    self_votes: int = 0  # votes of a version against itself, left out

    @property
    def votes(self) -> int:
        return int(self.counts.sum())


def tally(rows: Iterable, versions: list[str] | None = None) -> Tally:
    """Sum votes (objects with version_a, version_b, vote, like `store.PreferenceRow`) per pair.
    `versions`: these, in this order, and no others (votes naming another are left out);
    default: every version that has a vote, sorted."""
    rows = list(rows)
    if versions is None:
        versions = sorted({r.version_a for r in rows} | {r.version_b for r in rows})
    index = {name: k for k, name in enumerate(versions)}
    pairs = [(i, j) for i in range(len(versions)) for j in range(i + 1, len(versions))]
    slot = {pair: p for p, pair in enumerate(pairs)}
    counts = np.zeros((len(pairs), 4))
    self_votes = 0
    for r in rows:
        a, b = index.get(r.version_a), index.get(r.version_b)
        if a is None or b is None:
            continue
        if a == b:
            self_votes += 1
            continue
        outcome = {"tie": TIE, "both_bad": BOTH_BAD}.get(r.vote)
        if outcome is None:  # "a" or "b": whose reply won, as i (the lower index) or j
            outcome = I_WON if (r.vote == "a") == (a < b) else J_WON
        counts[slot[(min(a, b), max(a, b))], outcome] += 1
    return Tally(list(versions), np.array(pairs, dtype=int).reshape(-1, 2), counts, self_votes)


def design(tally: Tally) -> tuple[np.ndarray, np.ndarray]:
    """X (2P, K): rows 2p and 2p+1 are both e_i - e_j of pair p; y (2P,): 1 (i won), 0 (j won)."""
    n_pairs, k = len(tally.pairs), len(tally.versions)
    x = np.zeros((2 * n_pairs, k))
    rows = np.arange(n_pairs)
    for offset in (0, 1):
        x[2 * rows + offset, tally.pairs[:, 0]] = 1.0
        x[2 * rows + offset, tally.pairs[:, 1]] = -1.0
    return x, np.tile([1, 0], n_pairs)


def weights(counts: np.ndarray) -> np.ndarray:
    """(..., P, 4) vote counts -> (..., 2P) row weights: wins, plus half of each tie and both-bad."""
    neither = 0.5 * (counts[..., TIE] + counts[..., BOTH_BAD])
    both = np.stack([counts[..., I_WON] + neither, counts[..., J_WON] + neither], axis=-1)
    return both.reshape(*counts.shape[:-2], -1)


def fit_strengths(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bradley-Terry log-strengths for each row of `w` (R, 2P): (R, K). The R fits are one
    scikit-learn fit of a block-diagonal design (R blocks of `x`): their objectives add up and
    share no coefficient, so the joint optimum is each fit's own."""
    rounds, k = w.shape[0], x.shape[1]
    if k == 0 or not w.any():
        return np.zeros((rounds, k))
    blocks = sp.kron(sp.eye(rounds, format="csr"), sp.csr_matrix(x), format="csr")
    # scikit-learn divides the loss by the summed weights, so its gradient tolerance loosens
    # with every round added: scale it back to one fit's.
    model = LogisticRegression(C=PRIOR_C, fit_intercept=False, tol=TOL / rounds, max_iter=10_000, solver="newton-cg")
    model.fit(blocks, np.tile(y, rounds), sample_weight=w.ravel())
    return model.coef_[0].reshape(rounds, k)


def covariance(x: np.ndarray, w: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Laplace approximation of the log-strengths' covariance at the fit: the inverse of the
    penalised log-likelihood's Hessian, X' diag(n p (1-p)) X + I / C. (K, K)."""
    p = 1 / (1 + np.exp(-(x @ strength)))
    info = (x * (w * p * (1 - p))[:, None]).T @ x
    return np.linalg.inv(info + np.eye(x.shape[1]) / PRIOR_C)


@dataclass
class Board:
    """The leaderboard (best first, `COLUMNS`), the vote count per pair, and notes."""

    table: pd.DataFrame
    pairs: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def bootstrap_counts(counts: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """`rounds` resamples of the votes, as counts: (rounds, P, 4), each summing to the votes."""
    total = int(counts.sum())
    rng = np.random.default_rng(seed)
    return rng.multinomial(total, counts.ravel() / total, size=rounds).reshape(rounds, *counts.shape).astype(float)


def leaderboard(rows: Iterable, rounds: int = 1000, seed: int = 0, versions: list[str] | None = None) -> Board:
    """Strengths, 95 % bootstrap intervals and ranks of every version in the votes `rows`."""
    t = tally(rows, versions)
    x, y = design(t)
    fits = fit_strengths(x, y, round_weights(t, rounds, seed))
    return board(t, fits, rounds, seed)


def round_weights(t: Tally, rounds: int, seed: int) -> np.ndarray:
    """(1 + rounds, 2P) row weights: the votes as they are, then each bootstrap round's."""
    # No votes: nothing to resample, every round is empty too.
    resampled = bootstrap_counts(t.counts, rounds, seed) if t.votes else np.zeros((rounds, *t.counts.shape))
    return weights(np.concatenate([t.counts[None], resampled]))


def board(t: Tally, fits: np.ndarray, rounds: int, seed: int) -> Board:
    """The leaderboard of the versions with votes in `t`, from `fits` (1 + rounds, K): the
    point fit, then the bootstrap rounds'."""
    notes = [f"{t.self_votes} votes of a version against itself left out"] if t.self_votes else []
    if t.votes == 0:
        return Board(pd.DataFrame(columns=COLUMNS), pair_table(t), notes + ["no A/B votes yet"])
    counts = per_version_counts(t)
    voted = counts["votes"] > 0
    strength = fits[0, voted]
    low, high = np.percentile(fits[1:, voted] if rounds else fits[:1, voted], [2.5, 97.5], axis=0)
    rank = 1 + (low[None, :] > high[:, None]).sum(axis=1)  # versions wholly above each one
    columns = {"rank": rank, "model version": np.array(t.versions)[voted], "strength": elo(strength),
               "95 % low": elo(low), "95 % high": elo(high)} | {k: v[voted] for k, v in counts.items()}  # fmt: skip
    table = pd.DataFrame(columns).sort_values(["strength", "model version"], ascending=[False, True], ignore_index=True)
    notes.append(f"{t.votes} votes, {rounds} bootstrap rounds (seed {seed}); ties and both-bad count half a win each")
    return Board(table[COLUMNS], pair_table(t), notes)


def elo(log_strength: np.ndarray) -> np.ndarray:
    return np.round(ELO_BASE + ELO_SCALE * log_strength, 1)


def per_version_counts(t: Tally) -> dict[str, np.ndarray]:
    """votes / won / lost / ties / both bad per version, from its pairs on either side."""
    k = len(t.versions)
    won, lost, ties, bad = (np.zeros(k) for _ in range(4))
    for (i, j), (i_won, j_won, tie, both_bad) in zip(t.pairs, t.counts, strict=True):
        won[i] += i_won
        won[j] += j_won
        lost[i] += j_won
        lost[j] += i_won
        ties[[i, j]] += tie
        bad[[i, j]] += both_bad
    as_int = {"won": won, "lost": lost, "ties": ties, "both bad": bad}
    return {"votes": (won + lost + ties + bad).astype(int)} | {k: v.astype(int) for k, v in as_int.items()}


def pair_table(t: Tally) -> pd.DataFrame:
    """One row per pair of versions with votes: how many, and how they went."""
    rows = [
        {"version 1": t.versions[i], "version 2": t.versions[j], "votes": int(c.sum()),
         "1 won": int(c[I_WON]), "2 won": int(c[J_WON]), "ties": int(c[TIE]), "both bad": int(c[BOTH_BAD])}
        for (i, j), c in zip(t.pairs, t.counts, strict=True)
        if c.sum()
    ]  # fmt: skip
    columns = ["version 1", "version 2", "votes", "1 won", "2 won", "ties", "both bad"]
    return pd.DataFrame(rows, columns=columns).sort_values("votes", ascending=False, ignore_index=True)


def by_persona(rows: Iterable, rounds: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The leaderboard of each persona's votes alone, a `persona` column first. All personas'
    rounds go into one fit (over every version; those a persona has no vote for are left out)."""
    rows = list(rows)
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r.persona_name, []).append(r)
    if not groups:
        return pd.DataFrame(columns=["persona", *COLUMNS])
    tallies = {name: tally(group, tally(rows).versions) for name, group in sorted(groups.items())}
    x, y = design(next(iter(tallies.values())))
    fits = fit_strengths(x, y, np.concatenate([round_weights(t, rounds, seed) for t in tallies.values()]))
    per_persona = np.split(fits, len(tallies))
    frames = [
        board(t, f, rounds, seed).table.assign(persona=n)
        for (n, t), f in zip(tallies.items(), per_persona, strict=True)
    ]
    return pd.concat(frames, ignore_index=True)[["persona", *COLUMNS]]


class LeaderboardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")
    rounds: int = Field(1000, ge=0, description="Bootstrap rounds of the intervals (0: no intervals).")
    seed: int = Field(0, description="Seed of the bootstrap.")
    format: Literal["md", "csv", "json"] = Field("md", description="What to print: Markdown, or the table as CSV/JSON.")
    out: str | None = Field(
        None, description="Also write leaderboard.csv, leaderboard.json, pairs.csv and personas.csv here."
    )


def markdown(board: Board, personas: pd.DataFrame) -> str:
    parts = ["## Leaderboard (Bradley-Terry, blind A/B votes)", ""]
    parts += [board.table.to_markdown(index=False) if len(board.table) else "no A/B votes yet", ""]
    parts += [f"- {note}" for note in board.notes] + ["", "## Votes per pair", ""]
    parts += [board.pairs.to_markdown(index=False) if len(board.pairs) else "none", "", "## Per persona", ""]
    parts.append(personas.to_markdown(index=False) if len(personas) else "none")
    return "\n".join(parts) + "\n"


@entry_point(LeaderboardConfig, __doc__)
def main(cfg: LeaderboardConfig) -> int:
    from store import Store

    with Store(cfg.database_url) as store:
        rows = store.preferences()
    board, personas = leaderboard(rows, cfg.rounds, cfg.seed), by_persona(rows, cfg.rounds, cfg.seed)
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        board.table.to_csv(out / "leaderboard.csv", index=False)
        payload = {
            "leaderboard": board.table.to_dict("records"),
            "pairs": board.pairs.to_dict("records"),
            "personas": personas.to_dict("records"),
            "notes": board.notes,
            "config": cfg.model_dump(),
        }
        (out / "leaderboard.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=int))
        board.pairs.to_csv(out / "pairs.csv", index=False)
        personas.to_csv(out / "personas.csv", index=False)
    if cfg.format == "csv":
        print(board.table.to_csv(index=False), end="")
    elif cfg.format == "json":
        print(board.table.to_json(orient="records", indent=2, force_ascii=False))
    else:
        print(markdown(board, personas), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
