"""The conversation service over both histories: the same transcript in memory and in the store;
a chat message is one store read and one write, a thumb one call, the prompt counted once."""

import pytest

from chatbot import service
from chatbot.history import MemoryHistory, StoreHistory, shown
from core.conversation import build_messages, opening, under
from core.persona import load_persona
from engines.config import GenerationSettings
from engines.engine import Fitted
from tests.conftest import REPO, studio_context
from ui import conversations

GREEDY = GenerationSettings(temperature=0, max_new_tokens=8)


@pytest.fixture
def ctx(tmp_path, store, tiny_engine):
    """The app's context on the tiny model; `ctx.calls` lists the store methods called."""
    ctx = studio_context(tmp_path, store, {"base": tiny_engine})
    ctx.calls = []
    crossing = ctx.store._call
    ctx.store._call = lambda method, args, kwargs: ctx.calls.append(method) or crossing(method, args, kwargs)
    return ctx


def play(history, engine, ada, nova):
    """Send, switch persona, send, retry, undo; the transcript as (role, content) after each."""
    seen = []

    def send(message, persona):
        *_, last = service.exchange(history, lambda: engine, message, persona, "base", GREEDY)
        seen.append([(m["role"], m["content"]) for m in last.messages])

    send("Hi Ada", ada)
    send("Who are you?", nova)
    *_, last = service.retry(history, lambda: engine, nova, "base", GREEDY)
    seen.append([(m["role"], m["content"]) for m in last.messages])
    assert service.undo(history) == "Who are you?"
    seen.append([(m["role"], m["content"]) for m in shown(history.load())])
    return seen


def test_memory_and_store_histories_hold_the_same_conversation(ctx, tiny_engine, ada):
    nova = load_persona(REPO / "personas" / "nova.yaml")
    in_memory = play(MemoryHistory(opening(ada), ada), tiny_engine, ada, nova)
    in_store = play(StoreHistory(ctx.store, None, dict(source="chat", persona_key="ada", persona=ada.model_dump(),
                                                         model_version="base")), tiny_engine, ada, nova)  # fmt: skip
    assert in_memory == in_store
    assert [role for role, _ in in_store[1]] == ["assistant", "user", "assistant", "notice", "user", "assistant"]
    assert in_store[-1] == in_store[0] + [("notice", "From here on the model speaks as Nova, starting afresh.")]


def test_after_a_switch_the_model_is_given_only_the_turns_since_it(ctx, tiny_engine, ada, monkeypatch):
    """The new persona's system prompt and the turns since the switch: the old persona's replies
    are not in its prompt (nor the cold prefill of the whole conversation under a new prompt)."""
    nova = load_persona(REPO / "personas" / "nova.yaml")
    streamed, negatives, stream = [], [], tiny_engine.stream
    monkeypatch.setattr(
        tiny_engine, "stream", lambda m, s, n=None: streamed.append(list(m)) or negatives.append(n) or stream(m, s, n)
    )
    *_, step = conversations.exchange(ctx, "Hi Ada", "ada", ada, "base", GREEDY)
    conv = step.conversation_id
    *_, step = conversations.exchange(ctx, "Who are you?", "nova", nova, "base", GREEDY, conv)
    assert streamed[-1] == build_messages(nova, [], "Who are you?")
    reply = step.messages[-1]["content"]
    *_, step = conversations.exchange(ctx, "And Ada?", "nova", nova, "base", GREEDY, conv)
    assert [(m["role"], m["content"]) for m in streamed[-1][1:]] == [
        ("user", "Who are you?"), ("assistant", reply), ("user", "And Ada?")]  # fmt: skip
    list(conversations.retry(ctx, conv, "nova", nova, "base", GREEDY))
    assert streamed[-1] == streamed[-2]  # a retry asks the same
    # Every reply since the switch is steered away from the same prompt under Ada; none before it.
    assert negatives[0] is None
    assert negatives[1:] == [under(ada, prompt) for prompt in streamed[1:]]
    *_, step = conversations.exchange(ctx, "Back to you, Ada.", "ada", ada, "base", GREEDY, conv)
    assert negatives[-1] == under(nova, streamed[-1])  # switched back: away from Nova now


def test_a_message_is_one_store_read_and_one_write_and_a_thumb_one_call(ctx, ada):
    *_, first = conversations.exchange(ctx, "Hi Ada", "ada", ada, "base", ctx.settings)
    assert ctx.calls == ["add_exchange"]  # a new conversation: nothing to read
    ctx.calls.clear()
    *_, second = conversations.exchange(ctx, "And then?", "ada", ada, "base", ctx.settings, first.conversation_id)
    assert ctx.calls == ["conversation", "add_exchange"]
    assert second.messages == conversations.stored_messages(ctx.store.conversation(first.conversation_id))

    ctx.calls.clear()
    *_, again = conversations.retry(ctx, first.conversation_id, "ada", ada, "base", ctx.settings)
    assert ctx.calls == ["conversation", "add_exchange"]  # the old exchange withdrawn in the same write
    turns = ctx.store.conversation(first.conversation_id)
    assert [t.withdrawn for t in turns if t.id in (second.turn_id, second.turn_id - 1)] == ["retry", "retry"]

    ctx.calls.clear()
    assert conversations.label_reply(ctx, again.turn_id, "good", "kim").verdict == "good"
    conversations.unlabel_reply(ctx, again.turn_id, "kim")
    assert ctx.calls == ["thumb", "thumb"]
    assert ctx.store.label_rows() == []


def test_the_prompt_is_counted_once_and_streamed_as_fitted(ctx, tiny_engine, ada, monkeypatch):
    counted, streamed = [], []
    count, stream = tiny_engine.count_tokens, tiny_engine.stream
    monkeypatch.setattr(tiny_engine, "count_tokens", lambda m: counted.append(len(m)) or count(m))
    monkeypatch.setattr(tiny_engine, "stream", lambda m, s, n=None: streamed.append(m) or stream(m, s, n))
    *_, step = conversations.exchange(ctx, "Hi Ada", "ada", ada, "base", ctx.settings)
    assert len(counted) == 1 and not step.trimmed
    assert isinstance(streamed[0], Fitted) and streamed[0].tokens == count(streamed[0])


def test_a_long_history_is_trimmed_once_and_the_step_says_so(tmp_path, store, tiny_model_dir, ada):
    from engines.config import EngineConfig
    from engines.factory import load_engine

    small = load_engine(EngineConfig(model=str(tiny_model_dir), max_context_tokens=400))
    ctx = studio_context(tmp_path, store, {"base": small})
    conversation, steps = None, []
    for n in range(6):
        *_, step = conversations.exchange(ctx, f"Tell me about engine number {n}, at length " * 3, "ada", ada, "base",
                                          ctx.settings, conversation)  # fmt: skip
        conversation = step.conversation_id
        steps.append(step)
    assert steps[-1].trimmed and not steps[0].trimmed
    assert len(steps[-1].messages) == 1 + 2 * 6  # the transcript keeps what the prompt left out
