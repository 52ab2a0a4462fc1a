"""Routed questions (`route: true`): Nova's gas-leak and opening-hours entries are answered by the
scope guard with the file's answer, on its held-out split and on wordings the file never has;
gas questions that are not emergencies, and the rest of its topic, still reach the model."""

import pytest

from chatbot import scope
from chatbot.session import ChatSession
from core.errors import PersonaError
from core.persona import Persona, load_persona
from engines.config import GenerationSettings
from tests.conftest import REPO

NOVA = REPO / "personas" / "nova.yaml"
GAS = "I smell gas. What should I do?"
HOURS = "What are your opening hours?"

# Written for this test, none of them in nova.yaml: a gas leak must get the safety answer however it is put.
SAFETY = [
    "Help, I can smell gas in the hallway!",
    "There's a smell of rotten eggs near my cooker.",
    "I think gas is leaking from my meter.",
    "The gas hob is hissing and it smells funny.",
    "My neighbour says she can smell gas outside my door.",
    "gas leak!!",
    "what do i do my kitchen smells of gas",
    "Do you have an emergency number for gas?",
    "Is there a number to call if gas is escaping?",
    "Strong smell of gas in the basement, should I get out?",
]
OPENING = ["What time do you close today?", "Can I reach you on Saturday morning?", "How late is your phone line open?"]
# Gas, but no emergency; and the rest of the topic: the model answers these.
MODEL = [
    "Why is my gas bill so high?",
    "How do I submit a gas meter reading?",
    "Do you have a cheaper gas tariff?",
    "Can I pay my gas bill by card?",
    "My gas smart meter shows no readings.",
    "When will my final bill arrive?",
    "Who are you?",
    "Is there a power cut in my street?",
]


def answer_of(persona: Persona, question: str) -> str:
    return next(qa.answer for qa in persona.knowledge if qa.question == question)


def test_routed_entries_are_classes_and_recalled_on_the_held_out_split():
    nova = load_persona(NOVA)
    assert [qa.question for qa in scope.routes(nova)] == [HOURS, GAS]
    texts, labels = scope.examples(nova)
    assert labels.count(3) == 1 + len(nova.knowledge[-1].paraphrases)  # the gas question and its wordings
    report = scope.evaluate(nova)
    for name in (f"route: {HOURS}", f"route: {GAS}"):  # measured: 1.0 / 1.0 on 3 held-out wordings each
        assert report[name]["support"] >= 2 and report[name]["recall"] == 1.0, (name, report[name])
    assert report["sizes"]["routed"] == labels.count(2) + labels.count(3)
    # Left out of the examples entirely: eval.identity's guard never sees its held-out wordings.
    held = ["I think I have a gas leak.", "Are you open on Sundays?"]
    assert not set(held) & set(scope.examples(nova, exclude=held)[0]) and set(held) <= set(texts)


def test_guard_routes_new_safety_and_hours_wordings_and_lets_the_rest_through(scope_cache):
    nova = load_persona(NOVA)
    gas, hours = answer_of(nova, GAS), answer_of(nova, HOURS)
    routed = {q: scope.guard(nova, q) for q in SAFETY + OPENING + MODEL}
    wrong = [q for q in SAFETY if routed[q] != scope.Guarded(gas, routed=True)]
    wrong += [q for q in OPENING if routed[q] != scope.Guarded(hours, routed=True)]
    wrong += [q for q in MODEL if routed[q] is not None]
    assert not wrong, wrong
    assert scope.guard(nova, "Who won the football last night?") == scope.Guarded(nova.scope.deflection, False)
    assert scope.deflection(nova, "I think the cooker is leaking gas.") is None  # a route is not a deflection


def test_session_gives_the_routed_answer_without_the_model(tiny_engine, scope_cache, monkeypatch):
    nova = load_persona(NOVA)
    calls = []
    monkeypatch.setattr(tiny_engine, "stream", lambda *a: calls.append(a) or iter(["..."]))
    session = ChatSession(tiny_engine, nova, GenerationSettings(temperature=0, max_new_tokens=8))
    assert session.reply("There's a strong gas smell in the kitchen!") == answer_of(nova, GAS)
    assert not calls and not session.deflected  # answered by the guard, and not as off-topic
    assert "deflected" not in session.history[-1]
    unguarded = ChatSession(tiny_engine, nova, GenerationSettings(max_new_tokens=8), scope_guard=False)
    unguarded.reply("There's a strong gas smell in the kitchen!")
    assert len(calls) == 1


def test_a_route_needs_a_scope_and_unrouted_entries_dump_as_before(tmp_path):
    path = tmp_path / "loose.yaml"
    path.write_text(
        "name: Loose\nfacts: [I sell gas.]\nknowledge:\n  - {question: Gas leak?, answer: Get out., route: true}\n"
    )
    with pytest.raises(PersonaError, match="needs a `scope:`"):
        load_persona(path)
    nova = load_persona(NOVA)
    dumped = nova.model_dump()["knowledge"]
    assert [qa.get("route") for qa in dumped] == [None] * 5 + [True, True]
