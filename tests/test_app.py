"""The app through its public API (gradio_client), on the tiny model and a SQLite store."""

import subprocess
import sys

import pytest
from gradio_client import Client

from app import AppConfig, build_demo, parse_auth
from core.errors import ConfigError
from core.persona import load_persona
from store import Store
from tests.conftest import REPO, serving, studio_context


@pytest.fixture(scope="module")
def app(tiny_engine, tmp_path_factory):
    """(client, store) of the app serving `base` and `tuned` (the same tiny weights)."""
    tmp = tmp_path_factory.mktemp("app")
    with Store(f"sqlite:///{tmp / 'labels.db'}") as store:
        ctx = studio_context(tmp, store, {"base": tiny_engine, "tuned": tiny_engine})
        with serving(ctx) as url:
            yield Client(url, verbose=False), store


HEAVY = ("torch", "transformers", "gradio")


@pytest.mark.parametrize("command", [["app.py"], ["-m", "persona_studio", "app"]])
def test_help_and_a_bad_flag_answer_before_torch_transformers_and_gradio_are_imported(command):
    # Those take 10-20 s to import on 2 cores; `-X importtime` lists every module imported.
    def run(*flags):
        return subprocess.run([sys.executable, "-X", "importtime", *command, *flags], cwd=REPO, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    def imported(stderr: str) -> set[str]:
        names = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
        return {name.split(".")[0] for name in names} & set(HEAVY)

    shown = run("--help")
    assert shown.returncode == 0 and "--label_overlap" in shown.stdout and "--generation.max_new_tokens" in shown.stdout
    assert imported(shown.stderr) == set()
    typo = run("--prot", "8000")
    assert typo.returncode == 2 and "prot" in typo.stderr and imported(typo.stderr) == set()


def chat(client, message, persona="ada", conversation_id=None, **kwargs):
    """(conversation_id, reply, turn_id) once the reply is complete."""
    return client.predict(message=message, persona=persona, conversation_id=conversation_id, api_name="/chat", **kwargs)


def active(store, conversation_id):
    return [t for t in store.conversation(conversation_id) if t.withdrawn is None]


def test_three_turn_chat_is_streamed_and_saved(app):
    client, store = app
    job = client.submit(message="Hello!", persona="ada", api_name="/chat")
    steps = list(job)
    assert len(steps) > 1 and steps[0][2] is None  # streamed: the turn id comes with the last step
    conv_id, reply, turn_id = steps[-1]
    assert reply and turn_id is not None
    for turn in ["What are you building?", "And the bees?"]:
        conv_id, reply, turn_id = chat(client, turn, conversation_id=conv_id)
    stored = store.conversation(conv_id)
    assert [t.role for t in stored] == ["assistant"] + ["user", "assistant"] * 3  # the greeting opens it
    assert stored[1].content == "Hello!" and stored[-1].id == turn_id and stored[-1].content == reply
    assert stored[-1].model_version == "base" and stored[-1].persona["name"] == "Ada"
    assert stored[0].model_version is None  # the greeting comes from the persona file
    history = client.predict(conversation_id=conv_id, api_name="/history")
    assert [m["content"] for m in history] == [t.content for t in stored]


def test_a_chat_turn_starts_from_the_previous_turns_kv_cache(app, tiny_engine, monkeypatch):
    """Turn 2 is built from the stored turns exactly as generated, so it only prefills what is new."""
    client, _ = app
    taken = []
    take = tiny_engine.prefix_cache.take

    def spy(ids, **kw):
        cache, reused = take(ids, **kw)
        taken.append((len(ids), reused))
        return cache, reused

    monkeypatch.setattr(tiny_engine.prefix_cache, "take", spy)
    conv_id, _, _ = chat(client, "Tell me about your workshop, please.", persona="marco")
    chat(client, "Which tool do you like best?", persona="marco", conversation_id=conv_id)
    (first_prompt, _), (second_prompt, reused) = taken
    assert first_prompt <= reused < second_prompt  # at least all of turn 1's prompt came from the cache


def test_persona_switch_mid_chat_is_marked_in_the_store(app):
    client, store = app
    conv_id, _, _ = chat(client, "Hi Ada")
    conv_id, _, turn_id = chat(client, "Who are you?", persona="nova", conversation_id=conv_id)
    turns = store.conversation(conv_id)
    assert [t.role for t in turns] == ["assistant", "user", "assistant", "notice", "user", "assistant"]
    assert "Nova" in turns[3].content and turns[3].persona_name == "Nova"
    assert store.turn(turn_id).persona["name"] == "Nova"
    chat(client, "Still Nova?", persona="nova", conversation_id=conv_id)  # no second notice
    assert [t.role for t in store.conversation(conv_id)].count("notice") == 1


def test_identical_replies_of_two_versions_are_labelled_under_their_own_version(app):
    """Labels name the stored turn, not its text: `base` replies, the same message is retried on
    `tuned` (the same weights: the same words, in the same conversation), and each thumbs-up
    lands on the version that wrote the reply."""
    client, store = app
    conv_id, reply_base, turn_base = chat(client, "Say something nice.", persona="sam")
    conv_id, reply_tuned, turn_tuned = client.predict(
        conversation_id=conv_id, persona="sam", version="tuned", api_name="/retry"
    )
    assert reply_base == reply_tuned and turn_base != turn_tuned
    client.predict(turn_id=turn_base, verdict="bad", rater="kim", api_name="/label_reply")
    client.predict(turn_id=turn_tuned, verdict="good", comment="nice", rater="kim", api_name="/label_reply")
    rows = {r.verdict: r for r in store.label_rows() if r.rater == "kim"}
    assert (rows["bad"].model_version, rows["good"].model_version) == ("base", "tuned")
    assert rows["good"].comment == "nice"
    item = store.item(rows["good"].item_id)
    assert item.context == [{"role": "assistant", "content": store.conversation(conv_id)[0].content},
                            {"role": "user", "content": "Say something nice."}]  # fmt: skip
    greeting = store.conversation(conv_id)[0]
    with pytest.raises(Exception, match="only the model's replies"):
        client.predict(turn_id=greeting.id, verdict="good", rater="kim", api_name="/label_reply")


def test_undo_and_retry_are_recorded_in_the_store(app):
    client, store = app
    conv_id, first, _ = chat(client, "Hi", persona="rusty")
    conv_id, _, _ = chat(client, "Tell me about the sea.", persona="rusty", conversation_id=conv_id)
    assert client.predict(conversation_id=conv_id, api_name="/undo") == "Tell me about the sea."
    assert [t.content for t in active(store, conv_id)][-2:] == ["Hi", first]
    assert [t.withdrawn for t in store.conversation(conv_id)][-2:] == ["undo", "undo"]

    conv_id, again, turn_id = client.predict(conversation_id=conv_id, persona="rusty", api_name="/retry")
    kept = active(store, conv_id)
    assert [t.role for t in kept] == ["assistant", "user", "assistant"] and kept[-1].id == turn_id
    assert kept[1].content == "Hi" and kept[-1].content == again
    assert sorted(t.withdrawn for t in store.conversation(conv_id) if t.withdrawn) == ["retry", "retry", "undo", "undo"]
    history = client.predict(conversation_id=conv_id, api_name="/history")
    assert [m["turn_id"] for m in history] == [t.id for t in kept]


def test_empty_message_sends_nothing(app):
    client, store = app
    before = len(store.label_rows())
    with pytest.raises(Exception, match="empty"):
        chat(client, "   ")
    assert len(store.label_rows()) == before


def test_a_typed_in_persona_and_a_seeded_history(app):
    client, store = app
    mira = {"name": "Captain Mira", "facts": ["I sail cargo ships.", "I love tea."], "greeting": "Ahoy!"}
    seed = [{"role": "user", "content": "Are you at sea?"}, {"role": "assistant", "content": "Aye, near Oslo."}]
    conv_id, reply, turn_id = chat(client, "What cargo?", persona="", custom_persona=mira, history=seed)
    turns = store.conversation(conv_id)
    assert [t.content for t in turns[:2]] == ["Are you at sea?", "Aye, near Oslo."]  # the seed, not the greeting
    assert turns[1].model_version is None  # not the model's words: never labelled as if they were
    assert store.turn(turn_id).persona_name == "Captain Mira"
    with pytest.raises(Exception, match="facts"):
        chat(client, "Hi", persona="", custom_persona={"name": "No facts"})


def test_scope_guard_deflects_off_topic_questions_without_the_model(app, tiny_engine, monkeypatch):
    """Grace (lovelace_guide) has a scope: the weather gets her deflection, stored and marked,
    the model not asked; with scope_guard=False the same question reaches the model."""
    client, store = app
    grace = load_persona(REPO / "personas" / "lovelace_guide.yaml")
    calls = []
    stream = tiny_engine.stream
    monkeypatch.setattr(tiny_engine, "stream", lambda *a: calls.append(a) or stream(*a))
    question = "Will it rain in Manchester tomorrow?"
    conv_id, reply, turn_id = chat(client, question, persona="lovelace_guide")
    assert reply == grace.scope.deflection and not calls
    assert store.turn(turn_id).model_version is None  # not the model's words: nothing to label
    history = client.predict(conversation_id=conv_id, api_name="/history")
    assert [m["deflected"] for m in history] == [False, False, True]  # greeting, question, deflection
    with pytest.raises(Exception, match="deflections"):
        client.predict(turn_id=turn_id, verdict="good", rater="rita", api_name="/label_reply")
    _, reply, turn_id = chat(client, question, persona="lovelace_guide", conversation_id=conv_id, scope_guard=False)
    assert reply != grace.scope.deflection and len(calls) == 1
    assert store.turn(turn_id).model_version == "base"


def test_compare_streams_two_versions(app):
    client, store = app
    conv_a, left, conv_b, right = client.predict(
        message="Hello there", persona="sam", version_a="base", version_b="tuned", api_name="/compare"
    )
    assert left and left == right  # same weights, greedy: same text
    assert [t.model_version for t in store.conversation(conv_a)][-1] == "base"
    assert [t.model_version for t in store.conversation(conv_b)][-1] == "tuned"
    conv_a2, _, conv_b2, _ = client.predict(
        message="And now?", persona="sam", version_a="base", version_b="tuned", conversation_a=conv_a,
        conversation_b=conv_b, api_name="/compare",
    )  # fmt: skip
    assert (conv_a2, conv_b2) == (conv_a, conv_b)
    assert [t.role for t in store.conversation(conv_b)][-4:] == ["user", "assistant"] * 2


def test_labelling_round_lands_in_the_database(app):
    client, store = app
    from store import NewItem

    persona = {"name": "Ada", "facts": ["I build clocks."]}
    items = [NewItem("eval", "Ada", persona, [{"role": "user", "content": f"q{i}"}], f"answer {i}", "base")
             for i in range(3)]  # fmt: skip
    store.add_label_items(items)
    first = client.predict("rita", api_name="/next_item")
    second = client.predict(first[0], "good", "nice", "rita", api_name="/label")
    client.predict(second[0], "bad", "", "rita", api_name="/label")
    rows = [r for r in store.label_rows() if r.rater == "rita"]
    assert sorted(r.verdict for r in rows) == ["bad", "good"]
    assert any(r.comment == "nice" for r in rows)


def test_html_in_a_message_is_sent_and_stored_raw(app):
    client, store = app
    text = "<b>hi</b> <script>alert(1)</script>"
    conv_id, _, _ = chat(client, text)
    assert store.conversation(conv_id)[1].content == text
    assert client.predict(conversation_id=conv_id, api_name="/history")[1]["content"] == text


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


# Every variable app.py read through its `_env` lambdas before pydantic-settings, with the field it sets.
APP_ENV = {
    "PERSONA_STUDIO_MODEL": ("model", "me/model"),
    "PERSONA_STUDIO_RUNS": ("runs_dir", "/srv/runs"),
    "GRADIO_SERVER_NAME": ("host", "0.0.0.0"),
    "GRADIO_SERVER_PORT": ("port", 8001),
    "DATABASE_URL": ("database_url", "sqlite:////srv/labels.db"),
    "PERSONA_STUDIO_AUTH": ("auth", "ana:pw"),
    "PERSONA_STUDIO_VOLUME": ("volume", "/mnt/bucket"),
    "PERSONA_STUDIO_BACKUP_REPO": ("backup_repo", "me/labels"),
    "PERSONA_STUDIO_LABEL_OVERLAP": ("label_overlap", 3),
    "PERSONA_STUDIO_ENGINE_URL": ("engine_url", "http://localhost:8011"),
}


def test_every_app_env_var_sets_its_field_and_a_flag_beats_it(monkeypatch):
    from core.cli import parse_config

    for name, (_, value) in APP_ENV.items():
        monkeypatch.setenv(name, str(value))
    cfg = parse_config(AppConfig, [])
    assert {name: (field, getattr(cfg, field)) for name, (field, _) in APP_ENV.items()} == APP_ENV
    assert parse_config(AppConfig, ["--port", "9000", "--runs_dir", "r"]).model_dump(include={"port", "runs_dir"}) == {
        "port": 9000,
        "runs_dir": "r",
    }
    monkeypatch.setenv("PERSONA_STUDIO_GENERATION__MAX_NEW_TOKENS", "12")  # a section's key: double underscore
    assert AppConfig().generation.max_new_tokens == 12


def test_broken_persona_file_is_listed_and_explained(store, tmp_path):
    import shutil

    from ui.chat import resolve_persona

    personas = tmp_path / "personas"
    shutil.copytree(REPO / "personas", personas)
    (personas / "broken.yaml").write_text("name: Bo\n")
    ctx = studio_context(tmp_path, store, {}, personas_dir=personas)
    labels = dict((key, label) for label, key in ctx.persona_choices())
    assert "broken" in labels["broken"] and "facts" in labels["broken"]
    with pytest.raises(Exception, match="field `facts`"):
        resolve_persona(ctx, "broken")
    build_demo(ctx)  # the app still builds with a broken file present


def test_the_store_is_served_by_a_child_process_unless_asked_not_to(store, monkeypatch):
    """`--store_process auto`: a child process (raters' writes do not wait on the app's
    interpreter lock), except on Windows; `app` keeps it in the app's process."""
    from app import serve_store
    from store.process import StoreProcess

    served = serve_store(AppConfig(), store)
    try:
        assert isinstance(served, StoreProcess)
        assert served.next_item("kim").progress == store.next_item("kim").progress
    finally:
        served.close()
    assert serve_store(AppConfig(store_process="app"), store) is store
    monkeypatch.setattr("sys.platform", "win32")
    assert serve_store(AppConfig(), store) is store


def test_a_local_model_runs_in_a_child_process_on_cpu(monkeypatch):
    """`--model_process auto`: a child process on CPU (generation does not hold the app's interpreter lock),
    the app's own process on a GPU; a model server is its own process already."""
    from engines.child import ProcessEngine
    from engines.factory import engine_loader

    made = []
    monkeypatch.setattr(ProcessEngine, "__init__", lambda self, cfg, nice, threads: made.append(cfg))
    monkeypatch.setattr("engines.factory.load_engine", lambda cfg: ("in the app", cfg.engine_url))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert isinstance(engine_loader()(AppConfig()), ProcessEngine)
    assert engine_loader("app")(AppConfig()) == ("in the app", None)
    url = "http://127.0.0.1:8011/v1"
    assert engine_loader()(AppConfig(engine_url=url)) == ("in the app", url)  # a server: no child
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert engine_loader()(AppConfig()) == ("in the app", None)
    assert isinstance(engine_loader("child")(AppConfig()), ProcessEngine)
    assert len(made) == 2
