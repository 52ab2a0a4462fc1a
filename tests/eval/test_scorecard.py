"""The scorecard: its tests against numbers worked out by hand, and `eval.report --versions` on
files and labels made here (tests/eval/scorecard_runs.py says what they hold)."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from eval.report import ReportConfig, main
from eval.scorecard import latest_eval_rows, scorecard, scorecard_markdown
from eval.scorecard_rows import delta_row, human_rows, identity_rows, match_turns, preference_rows, regression_rows
from eval.significance import mcnemar, paired_bootstrap, two_proportions, win_rate
from store import CheckedStore
from tests.eval import scorecard_runs

RESAMPLES = 2000  # enough for these few pairs, and quick


def test_paired_bootstrap_interval_holds_the_delta_and_is_seeded():
    child, parent = [0.5, 0.7, 0.9, 0.4, 0.6], [0.4, 0.5, 0.9, 0.2, 0.6]  # differences .1 .2 0 .2 0
    delta, low, high = paired_bootstrap(child, parent, n_resamples=RESAMPLES, seed=3)
    assert delta == pytest.approx(0.1)
    assert 0.0 <= low < delta < high <= 0.2  # a mean of resampled differences stays within them
    assert paired_bootstrap(child, parent, n_resamples=RESAMPLES, seed=3) == (delta, low, high)
    # Paired: the same shift on turns of very different difficulty is a sure change.
    assert paired_bootstrap([1.1, 5.1, 9.1], [1.0, 5.0, 9.0], n_resamples=RESAMPLES)[1:] == pytest.approx((0.1, 0.1))
    # Perplexity: geometric means, 4 and 4.
    assert paired_bootstrap([2, 8, 4], [4, 4, 4], geometric=True, n_resamples=RESAMPLES)[0] == pytest.approx(0.0)
    assert paired_bootstrap([0.3], [0.1]) == pytest.approx((0.2, None, None))


def test_mcnemar_exact_p_for_a_known_table():
    # 7 discordant pairs the child's way, 1 the parent's: p = 2 * P(X <= 1 | 8, 1/2) = 2 * 9 / 256.
    assert mcnemar(7, 1) == pytest.approx(18 / 256)
    assert mcnemar(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar(0, 0) == 1.0


def test_wilson_win_rate_matches_the_hand_computation():
    # 14 of 20, z = 1.959964: centre (0.7 + z²/40) / (1 + z²/20) = 0.667777, half-width
    # z * sqrt(0.7 * 0.3 / 20 + z²/1600) / (1 + z²/20) = 0.186747 -> 0.481030 .. 0.854524.
    rate, low, high, p = win_rate(14, 6)
    assert (rate, round(low, 4), round(high, 4)) == (0.7, 0.4810, 0.8545)
    # Two-sided binomial: 2 * (C(20,14) + ... + C(20,20)) / 2^20 = 2 * 60460 / 1048576.
    assert p == pytest.approx(2 * 60460 / 2**20)


def test_two_proportions_give_newcombes_published_intervals():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10.
    delta, low, high, p = two_proportions(56, 70, 48, 80)
    assert (round(delta, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
    assert two_proportions(9, 10, 3, 10)[1:3] == pytest.approx((0.1705, 0.8090), abs=1e-4)
    assert 0 < p < 0.05


def test_a_change_is_marked_by_its_interval_or_its_p_value():
    lower_ppl = delta_row("automatic", "perplexity", 4, 5, -1, -1.5, -0.5, None, 9, "bootstrap", "lower")
    assert lower_ppl["significant"] and lower_ppl["change"] == "better"
    across_zero = delta_row("automatic", "ROUGE-1", 0.3, 0.2, 0.1, -0.05, 0.2, None, 9, "bootstrap", "higher")
    assert not across_zero["significant"] and across_zero["change"] == "better"
    # An exact test decides where there is one, even when a small-sample interval excludes 0.
    exact = delta_row("human", "accuracy", 0.8, 0.2, 0.6, 0.3, 0.9, 18 / 256, 10, "McNemar exact", "higher")
    assert not exact["significant"]
    longer = delta_row("automatic", "length", 12, 10, 2, 1, 3, None, 9, "bootstrap", None)
    assert longer["significant"] and longer["change"] == "higher"


def test_turns_are_matched_by_dataset_turn_not_item_id(tmp_path):
    runs = tmp_path / "runs"
    scorecard_runs.write_eval_rows(runs, "v1", [0, 1, 2, 3], first_item=1)
    scorecard_runs.write_eval_rows(runs, "v2", [4, 3, 2, 1, 0], first_item=1)  # same ids, other turns
    no_store = SimpleNamespace(eval_runs=lambda version: [])
    (child, _), (parent, _) = (latest_eval_rows(no_store, runs, v) for v in ("v2", "v1"))
    trained = {scorecard_runs.prompt_key({"facts": scorecard_runs.FACTS}, scorecard_runs.context(0))}
    pairs, counts = match_turns(child, parent, trained)
    assert counts == {"child": 5, "parent": 4, "both": 4, "excluded": 1}
    assert sorted(zip(pairs["rouge1_c"], pairs["rouge1_p"], strict=True)) == [(0.5, 0.3), (0.6, 0.4), (0.7, 0.6)]


def test_human_rows_pair_prompts_and_count_all_labels():
    child = {f"p{i}": ["good" if i < 8 else "bad"] for i in range(10)} | {"only-child": ["good", "bad"]}
    parent = {f"p{i}": ["good" if i in (7, 8) else "bad"] for i in range(10)}
    paired, everything = human_rows(child, parent, n_resamples=RESAMPLES)
    assert (paired["child"], paired["parent"], paired["n"]) == (0.8, 0.2, 10)  # the good/bad tie counts as bad
    assert paired["delta"] == pytest.approx(0.6) and paired["p_value"] == pytest.approx(18 / 256)
    assert not paired["significant"]
    assert everything["child"] == pytest.approx(9 / 12) and everything["parent"] == 0.2
    assert everything["p_value"] == pytest.approx(two_proportions(9, 12, 2, 10)[3])
    assert human_rows({}, parent) == []


def test_win_rate_leaves_ties_out_whichever_side_was_a():
    v = lambda a, b, vote: SimpleNamespace(version_a=a, version_b=b, vote=vote)  # noqa: E731
    votes = [v("v2", "v1", "a")] * 9 + [v("v1", "v2", "b")] * 5 + [v("v1", "v2", "a")] * 6
    votes += [v("v2", "v1", "tie"), v("v1", "v2", "both_bad"), v("v2", "base", "a")]
    (row,) = preference_rows(votes, "v2", "v1")
    assert (row["child"], row["n"]) == (0.7, 20)
    assert row["ci_low"] + 0.5 == pytest.approx(win_rate(14, 6)[1])
    assert "1 ties and 1 both bad left out" in row["note"]
    assert preference_rows([v("v2", "v1", "tie")], "v2", "v1") == []


def test_regression_and_identity_rows_pair_turns_and_wordings():
    child = scorecard_runs.regress_results("v2", [False, True, True])
    parent = scorecard_runs.regress_results("v1", [True, False, True])
    (row,), flips = regression_rows(child, parent, n_resamples=RESAMPLES)
    assert (row["child"], row["parent"], row["delta"], row["p_value"]) == (2 / 3, 2 / 3, 0.0, 1.0)
    assert flips["pass_to_fail"] == ["nova_identity turn 1 identity"]
    assert flips["fail_to_pass"] == ["nova_identity turn 2 identity"]
    asked = lambda passed: {"summary": {"identity_accuracy": np.mean(passed), "items": len(passed)},  # noqa: E731
                            "rows": [{"question": f"q{i}", "passed": ok} for i, ok in enumerate(passed)]}  # fmt: skip
    (identity,) = identity_rows(asked([True] * 9 + [False]), asked([False] * 8 + [True, True]), RESAMPLES)
    # 8 wordings fixed, 1 broken: p = 2 * P(X <= 1 | 9, 1/2) = 2 * 10 / 512.
    assert (identity["delta"], identity["p_value"], identity["change"]) == (pytest.approx(0.7), 20 / 512, "better")
    assert identity["significant"]


@pytest.fixture
def built(tmp_path, store):
    """Runs and labels; the store checks each call as the app's store process would (store/boundary.py)."""
    runs = tmp_path / "runs"
    scorecard_runs.build(runs, store)
    return runs, CheckedStore(store)


def test_scorecard_of_a_child_against_its_parent(built):
    runs, store = built
    card = scorecard(store, "v2", runs_dir=runs, n_resamples=RESAMPLES)
    assert card.parent == "v1"  # from v2's lineage
    rows = {row["metric"]: row for row in card.rows}
    rouge = rows["ROUGE-1"]
    assert (rouge["n"], rouge["delta"]) == (3, pytest.approx(1 / 6))  # T0 was trained on: left out
    assert rouge["ci_low"] <= 1 / 6 <= rouge["ci_high"] and rouge["significant"] and rouge["change"] == "better"
    assert rows["perplexity (geometric mean)"]["delta"] == pytest.approx(0.0)
    assert "Hits@1/20 (own candidates)" not in rows  # no values
    same = rows["human accuracy, same prompts"]
    assert (same["n"], same["delta"], same["p_value"]) == (10, pytest.approx(0.6), pytest.approx(18 / 256))
    assert rows["human accuracy, all labels"]["n"] == 20  # the T0 labels are left out
    ab = rows["A/B win rate of the child"]
    assert (ab["child"], ab["n"], ab["p_value"]) == (0.7, 20, pytest.approx(win_rate(14, 6)[3]))  # trained vote out
    assert rows["regression turns passed"]["delta"] == 0.0
    assert card.flips["pass_to_fail"] == ["nova_identity turn 1 identity"]
    retention = rows["persona_mc acc"]
    assert retention["delta"] == pytest.approx(-0.1) and not retention["significant"]
    notes = "\n".join(card.notes)
    assert "trained on 1 prompts and 1 A/B votes" in notes
    assert "1 labels of v2 and 1 of v1 on prompts the child was trained on are left out" in notes
    assert "3 turns both eval runs answered" in notes and "1 turns only the child's run has" in notes
    against_base = scorecard(store, "v2", "base", runs_dir=runs, n_resamples=RESAMPLES)
    assert [r["metric"] for r in against_base.rows] == ["A/B win rate of the child", "persona_mc acc"]
    assert against_base.rows[1]["parent"] == 0.55  # base's score from v2's retention run


def test_report_versions_prints_and_writes_the_scorecard(built, tmp_path, capsys):
    runs, store = built
    out = tmp_path / "report"
    argv = ["--versions", "v2,v1", "--runs_dir", str(runs), "--database_url", store.url, "--out", str(out)]
    assert main([*argv, "--n_resamples", str(RESAMPLES)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("## Scorecard: v2 vs v1")
    rouge = next(line for line in printed.splitlines() if "| ROUGE-1 " in line)
    assert "**▲ +0.167**" in rouge and "**better**" in rouge
    assert "Regression checks pass -> fail: nova_identity turn 1 identity" in printed
    saved = json.loads((out / "scorecard.json").read_text())
    assert {r["metric"]: r["delta"] for r in saved}["ROUGE-1"] == pytest.approx(1 / 6)
    assert len(pd.read_csv(out / "scorecard.csv")) == len(saved)
    assert (out / "scorecard.md").read_text() == printed


def test_report_versions_refuses_unknown_names_and_three_versions(built, capsys):
    runs, store = built
    assert main(["--versions", "v9", "--runs_dir", str(runs), "--database_url", store.url]) == 2
    assert "no model version 'v9'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="CHILD or CHILD,PARENT"):
        ReportConfig(versions="a,b,c")
    with pytest.raises(ConfigError, match="twice"):
        scorecard(store, "v2", "v2", runs_dir=runs)
    bare = runs.parent / "bare"
    (bare / "v3").mkdir(parents=True)
    (bare / "v3" / "version.json").write_text(json.dumps({"base_model": "default"}))
    empty = scorecard_markdown(scorecard(store, "v3", runs_dir=bare))
    assert "## Scorecard: v3 vs base\n\nnothing to compare yet" in empty and "no eval run of v3 and base" in empty


def test_eval_run_rows_key_like_the_items_it_registers(tmp_path, tiny_model_dir, spc_csv, store, db_file_url):
    """The contract the matching rests on: a rows.jsonl row of a real eval.run gives the same
    prompt key as the label item registered for it (what training exports record)."""
    from eval.run import main as run_main
    from eval.scorecard_rows import row_key
    from store import prompt_key

    out = tmp_path / "eval-out"
    flags = ["--model", str(tiny_model_dir), "--data", str(spc_csv), "--limit", "3", "--bertscore", "false",
             "--consistency", "false", "--hits_items", "0", "--generation.max_new_tokens", "4",
             "--runs_dir", str(tmp_path / "runs"), "--database_url", db_file_url, "--out", str(out)]  # fmt: skip
    assert run_main(flags) == 0
    rows = pd.read_json(out / "rows.jsonl", lines=True, dtype=False)
    items = [store.item(int(i)) for i in rows["item_id"]]
    assert [row_key(r) for r in rows.to_dict("records")] == [prompt_key(i.persona, i.context) for i in items]


def test_the_scorecard_through_the_apps_store_process_equals_the_one_in_process(built):
    """The app serves its store from a child process (store/process.py): every argument of every
    call is pickled there. Computed through it, the scorecard must be the in-process one."""
    from store.process import StoreProcess

    runs, checked = built
    served = StoreProcess(checked.store)
    try:
        card = scorecard(served, "v2", runs_dir=runs, n_resamples=RESAMPLES)
    finally:
        served.close()
    assert card == scorecard(checked.store, "v2", runs_dir=runs, n_resamples=RESAMPLES)
