"""The Compare tab's votes through the app's API (gradio_client), on the tiny model: /vote
stores a preference row from two /compare conversations, and refuses what is not a pair."""

import re

import pytest
from gradio_client import Client

from store import Store
from tests.conftest import serving, studio_context


@pytest.fixture(scope="module")
def app(tiny_engine, tmp_path_factory):
    """(client, store) of the app serving `base` and `tuned` (the same tiny weights)."""
    tmp = tmp_path_factory.mktemp("compare")
    with Store(f"sqlite:///{tmp / 'votes.db'}") as store:
        ctx = studio_context(tmp, store, {"base": tiny_engine, "tuned": tiny_engine})
        with serving(ctx) as url:
            yield Client(url, verbose=False), store


def compare(client, message="Hello there", **kwargs):
    """(conversation_a, reply_a, conversation_b, reply_b) of base (a) and tuned (b)."""
    kwargs = dict(persona="ada", version_a="base", version_b="tuned") | kwargs
    return client.predict(message=message, api_name="/compare", **kwargs)


def test_a_vote_by_name_is_stored_as_a_preference_row(app, ada):
    client, store = app
    conv_base, reply_base, conv_tuned, reply_tuned = compare(client)
    before = len(store.preferences())
    # The script calls tuned "A": a and b are the conversations in the order it passes them.
    saved = client.predict(conversation_a=conv_tuned, conversation_b=conv_base, vote="a", rater="rita",
                           api_name="/vote")  # fmt: skip
    assert saved == "saved: a (A = tuned, B = base) by rita"
    row = store.preferences(("base", "tuned"))[before]
    assert (row.rater, row.vote, row.version_a, row.version_b) == ("rita", "a", "tuned", "base")
    assert (row.reply_a, row.reply_b) == (reply_tuned, reply_base)
    assert row.persona == ada.model_dump() and row.persona_name == "Ada"
    assert row.context == [{"role": "assistant", "content": ada.greeting}, {"role": "user", "content": "Hello there"}]
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT conversation_a_id, conversation_b_id FROM preferences").all()[before]
    assert tuple(stored) == (conv_tuned, conv_base)


def test_what_is_not_a_pair_is_refused_with_the_fix_and_not_stored(app):
    client, store = app
    conv_a, _, conv_b, _ = compare(client, "First question")
    other, _, _, _ = compare(client, "Another question")
    before = len(store.preferences())
    refused = [
        (dict(conversation_a=conv_a, conversation_b=conv_b, vote="left"), "vote 'a' (A is better)"),
        (dict(conversation_a=conv_a, conversation_b=other, vote="a"), "answer different messages"),
        (dict(conversation_a=conv_a, conversation_b=conv_a, vote="a"), "the same conversation"),
        (dict(conversation_a=conv_a, conversation_b=99_999, vote="a"), "no conversation 99999"),
    ]
    for call, message in refused:
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(rater="rita", api_name="/vote", **call)
    with pytest.raises(Exception, match="Enter your name"):
        client.predict(conversation_a=conv_a, conversation_b=conv_b, vote="tie", api_name="/vote")
    assert len(store.preferences()) == before
    assert client.predict(conversation_a=conv_a, conversation_b=conv_b, vote="both_bad", rater="lee",
                          api_name="/vote").startswith("saved: both_bad")  # fmt: skip


def test_vote_takes_named_parameters(app):
    client, _ = app
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/vote"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert names == ["conversation_a", "conversation_b", "vote", "rater"]
    vote = next(p for p in endpoint["parameters"] if p["parameter_name"] == "vote")
    assert set(vote["type"]["enum"]) == {"a", "b", "tie", "both_bad"}  # typed: the API page lists the votes
