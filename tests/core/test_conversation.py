"""The pure message-list functions every chat surface shares (no model)."""

import pytest

from core.conversation import build_messages, dialogue, fit, notice, opening, switched, taken_back, undone
from core.persona import Persona

ADA = Persona(name="Ada", facts=["I build clocks."], greeting="Hello, love!")
NOVA = Persona(name="Nova", facts=["I answer for Acme."])


def say(*pairs: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(pairs)]


def test_switch_before_anyone_spoke_greets_mid_chat_marks_the_transcript():
    assert switched(opening(ADA), NOVA) == []  # Nova has no greeting: a fresh chat under Nova
    history = opening(ADA) + say("Hi", "Hello!")
    after = switched(history, NOVA)
    assert after[:-1] == history and after[-1] == notice(NOVA) and after[-1]["role"] == "notice"
    assert dialogue(after) == []  # the new persona starts afresh; a notice is never sent to the model
    assert build_messages(NOVA, after, "Who are you?")[0]["content"].startswith("You are Nova")


def test_the_model_sees_only_the_turns_since_the_last_switch():
    history = opening(ADA) + say("Hi", "Hello!") + [notice(NOVA)] + say("Who are you?", "Nova.")
    messages = build_messages(NOVA, history, "And Ada?")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in messages[1:]] == ["Who are you?", "Nova.", "And Ada?"]
    back = history + [notice(ADA)]  # switched back: Ada starts afresh too
    assert build_messages(ADA, back, "Hi again")[1:] == [{"role": "user", "content": "Hi again"}]
    assert dialogue(opening(ADA) + say("Hi", "Hello!")) == opening(ADA) + say("Hi", "Hello!")  # no switch: all


def test_undo_takes_back_the_last_exchange_and_keeps_notices():
    history = opening(ADA) + say("Hi", "Hello!", "Bees?", "Busy.") + [notice(NOVA)]
    assert taken_back(history) == [3, 4]
    rest, user = undone(history)
    assert user == "Bees?" and rest == opening(ADA) + say("Hi", "Hello!") + [notice(NOVA)]
    assert undone(opening(ADA)) == (opening(ADA), None)  # a greeting is not an exchange


def sequential_fit(messages, count, budget):
    """The rule as first written (one drop at a time), to check the bisection against."""
    system, rest = messages[:1], list(messages[1:])
    while len(rest) > 1 and count(system + rest) > budget:
        rest.pop(0)
        while len(rest) > 1 and rest[0]["role"] != "user":
            rest.pop(0)
    return system + rest


@pytest.mark.parametrize("budget", range(0, 60, 3))
def test_fit_drops_whole_oldest_turns_and_restarts_on_a_user_turn(budget):
    messages = [{"role": "system", "content": "persona"}, {"role": "assistant", "content": "greeting"}]
    messages += say("one two", "three", "four five six", "seven", "eight nine")
    words = lambda ms: sum(len(m["content"].split()) + 2 for m in ms)  # noqa: E731  (2 template tokens each)
    fitted = fit(messages, words, budget)
    assert fitted == sequential_fit(messages, words, budget)
    assert fitted[0]["role"] == "system" and fitted[-1] == messages[-1]
    if len(fitted) < len(messages) and len(fitted) > 2:
        assert fitted[1]["role"] == "user"
    if words(fitted) > budget:  # only the system message and the last one are left
        assert len(fitted) == 2
