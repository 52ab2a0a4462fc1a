"""The Results tab's leaderboard section and /pick_pair, on votes stored here
(tests/eval/scorecard_runs.py: v2 against v1); no model loads."""

import gradio as gr
import pytest
from gradio_client import Client

from tests.conftest import studio_context
from tests.eval import scorecard_runs
from ui.leaderboard import build_leaderboard, leaderboard_figure, pick_versions


@pytest.fixture
def ctx(store, tmp_path):
    scorecard_runs.build(tmp_path / "runs", store)
    return studio_context(tmp_path, store, {})


@pytest.fixture
def served(ctx):
    with gr.Blocks() as demo:
        on_open = build_leaderboard(ctx)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield Client(demo.local_url, verbose=False), on_open
    finally:
        demo.close()


def test_leaderboard_api_ranks_the_stored_votes(served, ctx):
    client, _ = served
    data = client.predict(api_name="/leaderboard")
    # v2 against v1: 15 wins, 6 losses, 2 ties, 1 both bad; against base: 1 win.
    assert data["leaderboard"][0]["model version"] == "v2"
    assert {row["model version"] for row in data["leaderboard"]} == {"v2", "v1", "base"}
    v2 = data["leaderboard"][0]
    assert (v2["votes"], v2["won"], v2["lost"], v2["ties"], v2["both bad"]) == (25, 16, 6, 2, 1)
    assert v2["95 % low"] < v2["strength"] < v2["95 % high"]
    assert data["pairs"] == [
        {"version 1": "v1", "version 2": "v2", "votes": 24, "1 won": 6, "2 won": 15, "ties": 2, "both bad": 1},
        {"version 1": "base", "version 2": "v2", "votes": 1, "1 won": 0, "2 won": 1, "ties": 0, "both bad": 0},
    ]
    assert {row["persona"] for row in data["personas"]} == {"speaker"}  # scorecard_runs.vote's persona
    assert set(client.predict("", api_name="/pick_pair")) <= set(ctx.pool.versions())


def test_refresh_fills_the_section(served):
    _, on_open = served
    table, figure, notes, pairs, personas = on_open["fn"]()
    assert list(table["model version"])[0] == "v2" and len(pairs) == 2 and len(personas) == 3
    ax = figure.axes[0]
    by_height = dict(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels()), strict=True))
    assert by_height[max(by_height)] == "#1 v2 (n=25)"  # the best on top
    assert "25 votes" in notes


def test_empty_figure_says_there_are_no_votes():
    import pandas as pd

    fig = leaderboard_figure(pd.DataFrame(columns=["strength"]))
    assert fig.axes[0].texts[0].get_text() == "no A/B votes yet"


def test_pick_versions_fills_the_compare_dropdowns(ctx):
    key = next(iter(ctx.personas()[0]))
    first, second = pick_versions(ctx)(key)
    assert first["value"] != second["value"] and {first["value"], second["value"]} <= set(ctx.pool.versions())
