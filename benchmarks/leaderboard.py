"""Leaderboard: the Bradley-Terry fit with 1,000 bootstrap rounds, and the active pair choice.

    python -m benchmarks.leaderboard            # 10 versions x 2,000 votes x 1,000 rounds; ~1 min on 2 cores
    python -m benchmarks.leaderboard --quick    # tiny sizes: checks the script runs

Votes are simulated (versions 0.15 log-odds apart, 10 % ties, 3 % both bad) and stored in a
real SQLite store under a temporary folder; the timed product path is what `python -m
eval.leaderboard` and the Results tab run: `store.preferences()` then `eval.leaderboard.leaderboard`
(tally, one point fit, every bootstrap round in one block-diagonal scikit-learn fit). The
alternative is the bootstrap as Chatbot Arena first wrote it: per round, resample the votes
(pandas `sample`) and fit `LogisticRegression` on one row per vote; it is timed on
`--alternative-rounds` rounds and scaled to `--rounds`. Target: ≤ 5 s on 2 cores.

The pair-choice rows: simulated voters of known strengths (`eval.simulated_voters`); mean votes
until the fitted order is the true one, `eval.pairing`'s rule against random pairs, same seeds.
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

from benchmarks.common import Row, Sizes, at_most, describe, report

NAME = "leaderboard"
GOAL_S = 5.0


def parse_args(argv):
    sizes = Sizes(__doc__)
    sizes.add("--versions", 10, 4, "model versions")
    sizes.add("--votes", 2000, 100, "A/B votes")
    sizes.add("--rounds", 1000, 50, "bootstrap rounds")
    sizes.add("--alternative-rounds", 50, 5, "rounds of the per-round loop actually timed (scaled to --rounds)")
    sizes.add("--repeats", 3, 1, "timed runs of the product path (median)")
    sizes.add("--seeds", 20, 2, "simulated voter runs per pair-choice setting")
    return sizes.parse(argv)


def simulated_votes(versions: int, votes: int, seed: int = 0) -> list[dict]:
    """(version_a, version_b, vote) of `votes` votes between random pairs."""
    rng = np.random.default_rng(seed)
    strength = 0.15 * np.arange(versions)
    rows = []
    for _ in range(votes):
        a, b = rng.choice(versions, 2, replace=False)
        u = rng.random()
        won = rng.random() < 1 / (1 + np.exp(strength[b] - strength[a]))
        vote = "tie" if u < 0.1 else "both_bad" if u < 0.13 else "a" if won else "b"
        rows.append({"version_a": f"v{a}", "version_b": f"v{b}", "vote": vote})
    return rows


def fill_store(store, votes: list[dict]) -> None:
    from store import NewPreference

    context = [{"role": "user", "content": "What do you do?"}]
    for v in votes:
        store.add_preference(
            NewPreference(
                "Ada", {"name": "Ada"}, context, "reply a", "reply b", v["version_a"], v["version_b"], v["vote"], "rita"
            )  # fmt: skip
        )


def time_product(store, rounds: int, repeats: int) -> dict:
    from eval.leaderboard import leaderboard

    times, reads = [], []
    leaderboard(store.preferences(), rounds=10)  # warm imports
    for _ in range(repeats):
        start = time.perf_counter()
        rows = store.preferences()
        reads.append(time.perf_counter() - start)
        board = leaderboard(rows, rounds=rounds, seed=0)
        times.append(time.perf_counter() - start)
    return {"seconds": describe(times), "store_read_s": describe(reads), "top": board.table.head(3).to_dict("records")}


def time_alternative(votes: list[dict], rounds: int) -> dict:
    """Arena's first bootstrap: per round, resample votes and fit one row per vote (ties as
    a half win each: the vote twice, once each way, at weight 0.5)."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame(votes)
    names = sorted(set(frame.version_a) | set(frame.version_b))
    index = {n: k for k, n in enumerate(names)}
    start = time.perf_counter()
    for seed in range(rounds):
        sample = frame.sample(frac=1.0, replace=True, random_state=seed)
        x = np.zeros((2 * len(sample), len(names)))
        rows = np.arange(len(sample))
        for offset in (0, len(sample)):
            x[rows + offset, sample.version_a.map(index).to_numpy()] = 1
            x[rows + offset, sample.version_b.map(index).to_numpy()] = -1
        decided = ~sample.vote.isin(["tie", "both_bad"]).to_numpy()
        y = np.concatenate([np.ones(len(sample)), np.zeros(len(sample))])
        a_won = (sample.vote == "a").to_numpy()
        w = np.concatenate([np.where(decided, a_won, 0.5), np.where(decided, ~a_won, 0.5)]).astype(float)
        LogisticRegression(C=1.0, fit_intercept=False, tol=1e-8, max_iter=10_000).fit(x, y, sample_weight=w)
    return {"seconds": time.perf_counter() - start, "rounds": rounds}


def time_pairing(seeds: int, quick: bool) -> dict:
    from eval.simulated_voters import Simulation, votes_to_true_order

    settings = [Simulation(versions=4, max_votes=400)] if quick else [Simulation(), Simulation(versions=8, gap=0.25)]
    results = {}
    for sim in settings:
        active = votes_to_true_order(sim, list(range(seeds)), active=True)
        random = votes_to_true_order(sim, list(range(seeds)), active=False)
        results[f"{sim.versions} versions, gap {sim.gap}"] = {
            "active_mean": float(active.mean()),
            "random_mean": float(random.mean()),
            "active_median": float(np.median(active)),
            "random_median": float(np.median(random)),
            "never_reached": int((active > sim.max_votes).sum() + (random > sim.max_votes).sum()),
        }
    return results


def build_rows(args, product: dict, alternative: dict, pairing: dict) -> list[Row]:
    median = product["seconds"]["p50"]
    scaled = alternative["seconds"] * args.rounds / alternative["rounds"]
    rows = [
        Row(
            f"{args.versions} versions x {args.votes:,} votes x {args.rounds:,} rounds, s (product vs per-round loop)",
            median,
            scaled,
            f"≤ {GOAL_S:g} s",
            at_most(median, GOAL_S),
            f"median of {args.repeats} runs, store read included ({product['store_read_s']['p50']:.3f} s); the loop "
            f"was timed on {alternative['rounds']} rounds ({alternative['seconds']:.2f} s) and scaled",
        )
    ]
    for setting, r in pairing.items():
        rows.append(
            Row(
                f"votes to the true order, {setting} (rule vs random pairs)",
                r["active_mean"],
                r["random_mean"],
                "ratio < 1",
                r["active_mean"] < r["random_mean"],
                f"mean over {args.seeds} seeds, checked every 5 votes; medians {r['active_median']:.0f} vs "
                f"{r['random_median']:.0f}",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    from store import Store

    args = parse_args(argv)
    votes = simulated_votes(args.versions, args.votes)
    with tempfile.TemporaryDirectory() as folder, Store(f"sqlite:///{folder}/votes.db") as store:
        fill_store(store, votes)
        product = time_product(store, args.rounds, args.repeats)
    alternative = time_alternative(votes, args.alternative_rounds)
    pairing = time_pairing(args.seeds, args.quick)
    rows = build_rows(args, product, alternative, pairing)
    report(NAME, rows, args, {"product": product, "alternative": alternative, "pairing": pairing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
