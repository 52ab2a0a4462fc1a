"""The Results tab's scorecard through the app's API (gradio_client), on runs and labels made
here (tests/eval/scorecard_runs.py); no model loads."""

import pytest
from gradio_client import Client

from eval.scorecard import scorecard
from tests.conftest import serving, studio_context
from tests.eval import scorecard_runs
from ui.results import CHANGE_COLOURS, scorecard_figure


@pytest.fixture
def ctx(store, tmp_path):
    scorecard_runs.build(tmp_path / "runs", store)
    return studio_context(tmp_path, store, {})


def test_scorecard_api_picks_the_parent_and_takes_an_override(ctx):
    with serving(ctx) as url:
        client = Client(url, verbose=False)
        card = client.predict("v2", "", api_name="/scorecard")
        against_base = client.predict("v2", "base", api_name="/scorecard")
        with pytest.raises(Exception, match="no model version 'v9'.*pick one of: base, v2, v1"):
            client.predict("v9", "", api_name="/scorecard")
    assert (card["child"], card["parent"]) == ("v2", "v1")  # from v2's lineage
    rouge = next(row for row in card["rows"] if row["metric"] == "ROUGE-1")
    assert rouge["delta"] == pytest.approx(1 / 6) and rouge["significant"] and rouge["n"] == 3
    assert card["flips"]["pass_to_fail"] == ["nova_identity turn 1 identity"]
    assert any("trained on 1 prompts" in note for note in card["notes"])
    assert against_base["parent"] == "base"
    assert [row["section"] for row in against_base["rows"]] == ["A/B", "retention"]


def test_scorecard_plot_has_a_strip_per_row_coloured_when_significant(ctx):
    card = scorecard(ctx.store, "v2", runs_dir=ctx.pool.cfg.runs_dir, n_resamples=1000)
    fig = scorecard_figure(card)
    assert [ax.get_yticklabels()[0].get_text() for ax in fig.axes] == [row["metric"] for row in card.rows]
    rouge = fig.axes[[row["metric"] for row in card.rows].index("ROUGE-1")]
    assert rouge.lines[0].get_color() == CHANGE_COLOURS["better"]  # the point: a significant improvement
    retention = fig.axes[-1]  # not significant: grey
    assert retention.lines[0].get_color() == "tab:gray"


def test_the_scorecard_hint_says_what_to_do_when_there_is_no_version_to_compare(store, tmp_path):
    import gradio as gr

    from ui.results import NO_CHILD, PICK_CHILD, build_scorecard_section

    with gr.Blocks():
        _, pickers = build_scorecard_section(studio_context(tmp_path, store, {}))
    version, parent, compare, hint = pickers(None, None)
    assert version["value"] is None and compare["interactive"] is False and hint == NO_CHILD
    assert "press Compare" not in hint and "train" in hint.lower()

    scorecard_runs.build(tmp_path / "runs", store)  # now v1 and v2 exist
    version, parent, compare, hint = pickers(None, None, NO_CHILD)
    assert (version["value"], parent["value"], compare["interactive"], hint) == ("v2", "v1", True, PICK_CHILD)
