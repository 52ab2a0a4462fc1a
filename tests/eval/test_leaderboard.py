"""The leaderboard: Bradley-Terry strengths from blind votes, stored and read back through a
real Store; bootstrap intervals, ranks, pair counts, per persona, the command."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from eval.leaderboard import ELO_SCALE, by_persona, design, fit_strengths, leaderboard, main, tally, weights
from store import NewPreference

CONTEXT = [{"role": "user", "content": "What do you do?"}]


def vote_row(a: str, b: str, vote: str, persona: str = "Ada"):
    return SimpleNamespace(version_a=a, version_b=b, vote=vote, persona_name=persona)


def add_votes(store, votes: list[tuple[str, str, str]], persona: str = "Ada", rater: str = "rita") -> None:
    for a, b, vote in votes:
        store.add_preference(
            NewPreference(persona, {"name": persona}, CONTEXT, f"reply of {a}", f"reply of {b}", a, b, vote, rater)
        )


def simulated_votes(strengths: dict[str, float], n: int, seed: int, tie: float = 0.1) -> list:
    """`n` votes between random pairs, each side preferred with Bradley-Terry odds."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    rows = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        p_a = 1 / (1 + math.exp(strengths[names[b]] - strengths[names[a]]))
        vote = "tie" if rng.random() < tie else "a" if rng.random() < p_a else "b"
        rows.append(vote_row(names[a], names[b], vote))
    return rows


def test_stored_votes_rank_the_versions_and_count_each_pair(store):
    # v2 beats v1 beats base in every vote, both orders of A and B.
    add_votes(store, [("v2", "v1", "a"), ("v1", "v2", "b")] * 6 + [("v1", "base", "a"), ("base", "v1", "b")] * 6)
    add_votes(store, [("v2", "base", "a")] * 4 + [("base", "v2", "tie"), ("v2", "base", "both_bad")])
    board = leaderboard(store.preferences(), rounds=200, seed=1)
    table = board.table.set_index("model version")
    assert list(board.table["model version"]) == ["v2", "v1", "base"]
    assert table.loc["v2", "strength"] > table.loc["v1", "strength"] > table.loc["base", "strength"]
    assert (table["95 % low"] <= table["strength"]).all() and (table["strength"] <= table["95 % high"]).all()
    assert table.loc["v2", ["votes", "won", "lost", "ties", "both bad"]].tolist() == [18, 16, 0, 1, 1]
    assert table.loc["base", ["votes", "won", "lost"]].tolist() == [18, 0, 16]
    pairs = {(r["version 1"], r["version 2"]): r for r in board.pairs.to_dict("records")}
    assert pairs[("v1", "v2")]["votes"] == 12 and pairs[("v1", "v2")]["2 won"] == 12
    assert pairs[("base", "v2")] | {} == {"version 1": "base", "version 2": "v2", "votes": 6, "1 won": 0,
                                         "2 won": 4, "ties": 1, "both bad": 1}  # fmt: skip
    # The strengths sum to zero in log-odds: centred on 1000.
    assert table["strength"].mean() == pytest.approx(1000, abs=0.1)


def test_ties_and_both_bad_count_half_a_win_each():
    # 10 ties and 10 both-bad between x and y: as good as each other.
    rows = [vote_row("x", "y", "tie")] * 10 + [vote_row("y", "x", "both_bad")] * 10
    table = leaderboard(rows, rounds=0).table.set_index("model version")
    assert table.loc["x", "strength"] == pytest.approx(table.loc["y", "strength"]) == pytest.approx(1000)
    # 3 wins, 1 loss and 2 ties is 4 : 2, the same fit as 4 wins and 2 losses.
    with_ties = [vote_row("x", "y", "a")] * 3 + [vote_row("x", "y", "b"), *[vote_row("x", "y", "tie")] * 2]
    plain = [vote_row("x", "y", "a")] * 4 + [vote_row("x", "y", "b")] * 2
    first, second = (leaderboard(r, rounds=0).table.set_index("model version") for r in (with_ties, plain))
    assert first.loc["x", "strength"] == pytest.approx(second.loc["x", "strength"], abs=0.05)


def test_the_fit_is_scikit_learns_logistic_regression_per_round():
    """The block-diagonal fit of many rounds equals one plain fit per round."""
    t = tally(simulated_votes({"a": 0.0, "b": 0.4, "c": 1.0, "d": -0.5}, 300, seed=3))
    x, y = design(t)
    w = weights(np.stack([t.counts, t.counts[::-1], t.counts + 1]))
    joint = fit_strengths(x, y, w)
    for row, weight in zip(joint, w, strict=True):
        alone = LogisticRegression(C=1.0, fit_intercept=False, tol=1e-12, max_iter=10_000).fit(
            x, y, sample_weight=weight
        )
        assert row == pytest.approx(alone.coef_[0], abs=1e-5)


def test_known_strengths_are_recovered_within_the_intervals():
    truth = {f"v{k}": 0.25 * k for k in range(6)}
    board = leaderboard(simulated_votes(truth, 3000, seed=0), rounds=500, seed=0)
    table = board.table.set_index("model version")
    centre = np.mean(list(truth.values()))
    expected = {name: 1000 + ELO_SCALE * (s - centre) for name, s in truth.items()}
    covered = sum(table.loc[n, "95 % low"] <= e <= table.loc[n, "95 % high"] for n, e in expected.items())
    assert covered >= 5  # 95 % intervals: at most one of six may miss by chance
    assert list(board.table["model version"]) == [f"v{k}" for k in range(5, -1, -1)]
    # 3,000 votes, 43 Elo between neighbours: the ends are separated, neighbours mostly not.
    assert table.loc["v5", "rank"] == 1 and table.loc["v0", "rank"] > 3


def test_ranks_only_separate_versions_whose_intervals_do():
    close = [vote_row("x", "y", "a")] * 6 + [vote_row("x", "y", "b")] * 5
    far = [vote_row("x", "z", "a")] * 40 + [vote_row("y", "z", "a")] * 40
    table = leaderboard(close + far, rounds=300, seed=0).table.set_index("model version")
    assert table.loc["x", "rank"] == table.loc["y", "rank"] == 1  # 6 : 5 proves nothing
    assert table.loc["z", "rank"] == 3  # both intervals lie above z's
    assert table.loc["x", "95 % low"] <= table.loc["y", "95 % high"]


def test_bootstrap_is_seeded_and_self_votes_are_left_out():
    rows = simulated_votes({"a": 0.0, "b": 0.5, "c": 0.2}, 200, seed=5) + [vote_row("a", "a", "tie")] * 3
    first, second = leaderboard(rows, rounds=100, seed=7), leaderboard(rows, rounds=100, seed=7)
    assert first.table.equals(second.table)
    assert not leaderboard(rows, rounds=100, seed=8).table.equals(first.table)
    assert first.table["votes"].sum() == 2 * 200  # each vote counts for both its versions
    assert "3 votes of a version against itself left out" in first.notes


def test_no_votes_is_an_empty_board(store):
    board = leaderboard(store.preferences())
    assert board.table.empty and board.pairs.empty and "no A/B votes yet" in board.notes


def test_per_persona_breakdown_fits_each_personas_votes_alone(store):
    add_votes(store, [("v1", "base", "a")] * 8, persona="Ada")
    add_votes(store, [("v1", "base", "b")] * 8, persona="Bob")
    personas = by_persona(store.preferences(), rounds=100)
    best = personas[personas["rank"] == 1].set_index("persona")["model version"]
    assert best.to_dict() == {"Ada": "v1", "Bob": "base"}
    assert personas.groupby("persona")["votes"].sum().to_dict() == {"Ada": 16, "Bob": 16}


def test_command_prints_the_table_and_writes_csv_and_json(db_file_url, store, tmp_path, capsys):
    add_votes(store, [("v1", "base", "a")] * 5 + [("base", "v1", "a")] * 2)
    out = tmp_path / "board"
    assert main(["--database_url", db_file_url, "--rounds", "100", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## Leaderboard" in printed and "| v1" in printed and "## Per persona" in printed
    data = json.loads((out / "leaderboard.json").read_text())
    assert [r["model version"] for r in data["leaderboard"]] == ["v1", "base"]
    assert data["pairs"][0]["votes"] == 7 and data["config"]["rounds"] == 100
    assert (out / "leaderboard.csv").read_text().startswith("rank,model version,strength,95 % low")
    assert {"pairs.csv", "personas.csv"} <= {p.name for p in out.iterdir()}
    assert main(["--database_url", db_file_url, "--rounds", "0", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("1,v1,")


def test_results_table_gets_the_ab_columns_once_there_are_votes(store):
    from eval.table import AB_COLUMNS, NO_VOTES, results_table

    assert not set(AB_COLUMNS) & set(results_table(store, ["base", "v1"]).columns)  # no votes: no columns
    add_votes(store, [("v1", "base", "a")] * 12 + [("base", "v1", "b")] * 12)
    rows = {r["model version"]: r for r in results_table(store, ["base", "v1", "v2"]).to_dict("records")}
    board = leaderboard(store.preferences()).table.set_index("model version")
    assert rows["v1"]["A/B rank"] == 1 and rows["base"]["A/B rank"] == 2
    assert rows["v1"]["A/B strength"] == round(board.loc["v1", "strength"]) > 1000
    assert rows["v1"]["A/B 95 % interval"] == f"{board.loc['v1', '95 % low']:.0f}–{board.loc['v1', '95 % high']:.0f}"
    assert rows["v1"]["A/B votes"] == 24 and rows["v2"]["A/B strength"] == NO_VOTES and rows["v2"]["A/B votes"] == 0


def test_per_persona_fit_equals_each_personas_own_leaderboard():
    rows = simulated_votes({"a": 0.0, "b": 0.6, "c": 0.3}, 120, seed=2)
    for n, r in enumerate(rows):
        r.persona_name = "Ada" if n % 3 else "Bob"
    rows += [vote_row("a", "a", "tie", persona="Cy")]  # a persona with only a self-vote: no board
    personas = by_persona(rows, rounds=100, seed=4)
    assert set(personas["persona"]) == {"Ada", "Bob"}
    for name in ("Ada", "Bob"):
        alone = leaderboard([r for r in rows if r.persona_name == name], rounds=100, seed=4).table
        together = personas[personas["persona"] == name].drop(columns="persona").reset_index(drop=True)
        exact = ["rank", "model version", "votes", "won", "lost", "ties", "both bad"]
        assert together[exact].to_dict("list") == alone[exact].to_dict("list")
        for column in ("strength", "95 % low", "95 % high"):  # one fit or many: the same to rounding
            assert together[column].tolist() == pytest.approx(alone[column].tolist(), abs=0.15)


def test_a_version_without_votes_is_not_ranked():
    rows = [vote_row("x", "y", "a")] * 3
    board = leaderboard(rows, rounds=50, versions=["x", "y", "z"])
    assert list(board.table["model version"]) == ["x", "y"]


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--rounds" in capsys.readouterr().out
