"""ChatSession: history, persona switches, undo/retry, bad messages (tiny model)."""

import json

import pytest

from chatbot.session import ChatSession
from core.conversation import MAX_MESSAGE_CHARS, build_messages, notice
from core.errors import MessageError, PersonaError
from core.persona import Persona, load_persona, render_system_prompt
from engines.config import GenerationSettings
from tests.conftest import REPO

GREEDY = GenerationSettings(temperature=0, max_new_tokens=8)


@pytest.fixture
def session(tiny_engine, ada):
    return ChatSession(tiny_engine, ada, GREEDY)


def test_greeting_opens_and_turns_accumulate(session, ada):
    assert session.history == [{"role": "assistant", "content": ada.greeting}]
    first = session.reply("Hi Ada")
    session.reply("What are you building?")
    assert [m["role"] for m in session.history] == ["assistant", "user", "assistant", "user", "assistant"]
    assert session.history[2]["content"] == first


def test_persona_switch_leaves_nothing_of_the_old_persona_prompt(session, ada):
    session.reply("Hi Ada")
    nova = load_persona(REPO / "personas" / "nova.yaml")
    session.switch_persona(nova)
    messages = build_messages(session.persona, session.history, "Who are you?")
    assert messages[0] == {"role": "system", "content": render_system_prompt(nova)}
    system = messages[0]["content"]
    assert not any(fact in system for fact in ada.facts)
    assert "Ada" not in system
    assert [m["role"] for m in messages].count("system") == 1
    assert messages[1:] == [{"role": "user", "content": "Who are you?"}]  # Nova starts afresh
    assert session.history[-1] == {"role": "notice", "content": notice(nova)["content"]}
    assert notice(nova)["content"] == "From here on the model speaks as Nova, starting afresh."
    assert session.history[1]["content"] == "Hi Ada"  # the transcript keeps what came before
    session.reply("Who are you?")
    assert session.history[-2]["content"] == "Who are you?"
    assert session.undo() == "Who are you?" and session.history[-1]["role"] == "notice"  # the switch stays


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_message_is_refused_and_history_unchanged(session, text):
    before = list(session.history)
    with pytest.raises(MessageError, match="empty"):
        session.reply(text)
    assert session.history == before


def test_huge_message_is_refused(session):
    with pytest.raises(MessageError, match="characters"):
        session.reply("a" * (MAX_MESSAGE_CHARS + 1))


def test_message_too_long_for_context_names_tokens(tiny_model_dir, ada):
    from engines.config import EngineConfig
    from engines.factory import load_engine

    engine = load_engine(EngineConfig(model=str(tiny_model_dir), max_context_tokens=512))
    session = ChatSession(engine, ada, GREEDY)
    persona_tokens = engine.count_tokens(build_messages(ada, [])[:1])
    with pytest.raises(
        MessageError, match=rf"message is too long.*tokens, {persona_tokens} of them the persona"
    ) as info:
        session.reply("word " * 1000)
    assert "shorten the message" in info.value.fix
    assert len(session.history) == 1  # only the greeting


def test_persona_too_long_for_the_context_window_says_it_is_the_persona(tiny_model_dir, ada):
    """Ada's system prompt alone overflows a 256-token window: no message could be short enough."""
    from engines.config import EngineConfig
    from engines.factory import load_engine

    engine = load_engine(EngineConfig(model=str(tiny_model_dir), max_context_tokens=256))
    persona_tokens = engine.count_tokens(build_messages(ada, [])[:1])
    assert persona_tokens > 256 - GREEDY.max_new_tokens
    with pytest.raises(PersonaError) as info:
        ChatSession(engine, ada, GREEDY).reply("Hi")
    problem = info.value.problem
    assert "persona is too long" in problem and "You are Ada" in problem and "message" not in problem
    assert f"{persona_tokens} tokens, but only {256 - GREEDY.max_new_tokens} fit (context window 256" in problem
    assert f"by at least {persona_tokens - 248} tokens" in info.value.fix and "longer context window" in info.value.fix


def test_undo_retry_reset(session):
    session.reply("Hi")
    session.reply("Tell me about bees")
    assert session.undo() == "Tell me about bees"
    assert len(session.history) == 3
    again = "".join(session.retry()).strip()
    assert session.history[-2:] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": again}]
    session.reset()
    assert len(session.history) == 1
    assert session.undo() is None
    with pytest.raises(MessageError, match="no reply to retry"):
        list(session.retry())


def test_abandoned_retry_restores_the_old_exchange(session):
    session.reply("Hi")
    before = json.dumps(session.history)
    stream = session.retry()
    next(stream)
    stream.close()
    assert json.dumps(session.history) == before


def test_persona_without_greeting_starts_empty(tiny_engine):
    persona = Persona(name="Bo", facts=["I fish."])
    assert ChatSession(tiny_engine, persona).history == []
