"""The app through its public API (gradio_client), on the tiny model and a SQLite store."""

import pytest
from gradio_client import Client

from app import AppConfig, build_demo, parse_auth
from chatbot.engine import GenerationSettings
from chatbot.errors import ConfigError
from chatbot.loading import EngineConfig
from chatbot.pool import EnginePool
from store import Store
from tests.conftest import REPO
from ui.common import text_of
from ui.context import AppContext


@pytest.fixture(scope="module")
def app(tiny_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    pool = EnginePool(EngineConfig(runs_dir=str(tmp / "runs")))
    pool.put("base", tiny_engine)
    pool.put("tuned", tiny_engine)  # a second version to compare against
    store = Store(f"sqlite:///{tmp / 'labels.db'}")
    ctx = AppContext(pool, store, str(REPO / "personas"), GenerationSettings(temperature=0, max_new_tokens=8))
    demo = build_demo(ctx)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield Client(demo.local_url, verbose=False), store
    demo.close()
    store.close()


def chat(client, message, history, persona="ada", conv_id=None, last=None):
    args = [message, history, persona, "base", 0, 0.9, 50, 8, conv_id, last, "", ""]
    return client.predict(*args, api_name="/chat")


def roles(history):
    return [(m["role"], bool((m.get("metadata") or {}).get("title"))) for m in history]


def test_three_turn_chat_is_streamed_and_saved(app):
    client, store = app
    history, conv_id, last = [], None, "ada"
    for turn in ["Hello!", "What are you building?", "And the bees?"]:
        history, cleared, conv_id, last = chat(client, turn, history, conv_id=conv_id, last=last)
        assert cleared == ""
    assert [r for r, _ in roles(history)] == ["user", "assistant"] * 3
    assert all(text_of(m["content"]) for m in history)
    stored = store.conversation(int(conv_id))
    assert [t.role for t in stored] == ["user", "assistant"] * 3
    assert stored[0].content == "Hello!" and stored[0].model_version == "base"


def test_a_chat_turn_starts_from_the_previous_turns_kv_cache(app, tiny_engine, monkeypatch):
    """The app sends the history back as the engine produced it, so turn 2 only prefills what is new."""
    client, _ = app
    taken = []
    take = tiny_engine.prefix_cache.take

    def spy(ids):
        cache, reused = take(ids)
        taken.append((len(ids), reused))
        return cache, reused

    monkeypatch.setattr(tiny_engine.prefix_cache, "take", spy)
    history, _, conv_id, last = chat(client, "Tell me about your workshop, please.", [], persona="marco")
    chat(client, "Which tool do you like best?", history, persona="marco", conv_id=conv_id, last=last)
    (first_prompt, _), (second_prompt, reused) = taken
    assert first_prompt <= reused < second_prompt  # at least all of turn 1's prompt came from the cache


def test_persona_switch_mid_chat_is_marked_in_the_transcript(app):
    client, store = app
    history, _, conv_id, last = chat(client, "Hi Ada", [], conv_id=None, last="ada")
    history, _, conv_id, last = chat(client, "Who are you?", history, persona="nova", conv_id=conv_id, last=last)
    assert last == "nova"
    assert roles(history) == [("user", False), ("assistant", False), ("assistant", True), ("user", False),
                              ("assistant", False)]  # fmt: skip
    assert "Nova" in text_of(history[2]["content"])
    assert [t.role for t in store.conversation(int(conv_id))][2] == "notice"


def test_empty_message_sends_nothing(app):
    client, _ = app
    history, cleared, conv_id, _ = chat(client, "   ", [])
    assert history == [] and conv_id is None


def test_compare_streams_two_versions(app):
    client, store = app
    left, right, cleared = client.predict("Hello there", [], [], "sam", "base", "tuned", api_name="/compare")
    assert cleared == ""
    assert [m["role"] for m in left] == ["user", "assistant"] == [m["role"] for m in right]
    assert text_of(left[1]["content"]) == text_of(right[1]["content"])  # same weights, greedy: same text


def test_labelling_round_lands_in_the_database(app):
    client, store = app
    from store import NewItem

    persona = {"name": "Ada", "facts": ["I build clocks."]}
    items = [NewItem("eval", "Ada", persona, [{"role": "user", "content": f"q{i}"}], f"answer {i}", "base")
             for i in range(3)]  # fmt: skip
    store.add_label_items(items)
    first = client.predict("rita", api_name="/next_item")
    item_id = first[0]
    second = client.predict(item_id, "good", "nice", "rita", api_name="/label")
    client.predict(second[0], "bad", "", "rita", api_name="/label")
    rows = [r for r in store.label_rows() if r.rater == "rita"]
    assert sorted(r.verdict for r in rows) == ["bad", "good"]
    assert any(r.comment == "nice" for r in rows)


def test_auth_spec_is_parsed_and_checked():
    assert parse_auth("ana:pw1, ben:pw:2") == [("ana", "pw1"), ("ben", "pw:2")]
    assert parse_auth(None) is None
    with pytest.raises(ConfigError, match="user:password"):
        parse_auth("ana")


def test_app_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://x:y@db/z")
    monkeypatch.setenv("PERSONA_STUDIO_LABEL_OVERLAP", "2")
    cfg = AppConfig()
    assert cfg.database_url == "postgresql://x:y@db/z" and cfg.label_overlap == 2


def test_html_in_a_message_is_shown_as_text_and_sent_raw(app):
    client, store = app
    history, _, conv_id, _ = chat(client, "<b>hi</b> <script>alert(1)</script>", [])
    assert text_of(history[0]["content"]) == "&lt;b&gt;hi&lt;/b&gt; &lt;script&gt;alert(1)&lt;/script&gt;"
    assert store.conversation(int(conv_id))[0].content == "<b>hi</b> <script>alert(1)</script>"


def test_broken_persona_file_is_listed_and_explained(tiny_engine, tmp_path):
    import shutil

    from ui.chat import resolve_persona

    personas = tmp_path / "personas"
    shutil.copytree(REPO / "personas", personas)
    (personas / "broken.yaml").write_text("name: Bo\n")
    pool = EnginePool(EngineConfig(runs_dir=str(tmp_path / "runs")))
    ctx = AppContext(pool, Store(f"sqlite:///{tmp_path / 'db.sqlite'}"), str(personas))
    labels = dict((key, label) for label, key in ctx.persona_choices())
    assert "broken" in labels["broken"] and "facts" in labels["broken"]
    with pytest.raises(Exception, match="field `facts`"):
        resolve_persona(ctx, "broken", "", "")
    build_demo(ctx)  # the app still builds with a broken file present
