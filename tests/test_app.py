"""The app through its public API (gradio_client), on the tiny model."""

import pytest
from gradio_client import Client

from app import _text, build_demo
from chatbot.engine import GenerationSettings
from chatbot.persona import load_personas
from tests.conftest import REPO


@pytest.fixture(scope="module")
def client(tiny_engine):
    personas = load_personas(REPO / "personas")
    demo = build_demo(tiny_engine, personas, GenerationSettings(temperature=0, max_new_tokens=8))
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield Client(demo.local_url, verbose=False)
    demo.close()


def test_two_turn_chat_through_the_api(client):
    history, cleared = client.predict("Hello!", [], "ada", api_name="/chat")
    assert cleared == ""
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[1]["content"]
    history, _ = client.predict("And what else?", history, "ada", api_name="/chat")
    assert [m["role"] for m in history] == ["user", "assistant"] * 2


def test_switching_persona_starts_with_its_greeting(client):
    nova = load_personas(REPO / "personas")["nova"]
    history = client.predict("nova", api_name="/switch_persona")
    assert [(m["role"], _text(m["content"])) for m in history] == [("assistant", nova.greeting)]


def test_empty_message_is_an_error(client):
    with pytest.raises(Exception, match="empty"):
        client.predict("   ", [], "ada", api_name="/chat")
