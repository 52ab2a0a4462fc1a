"""The scope guard: a purpose-made persona's classifier on its held-out split, the cache, the
deflection in a chat session (the model not called), and a scope with no questions."""

import pytest

from chatbot import scope
from chatbot.session import ChatSession
from core.errors import PersonaError
from core.persona import Persona, load_persona
from engines.config import GenerationSettings
from tests.conftest import REPO

GREEDY = GenerationSettings(temperature=0, max_new_tokens=8)

# A beekeeper: a topic the generic pool does not cover, with only a few questions of its own.
BEEKEEPER = {
    "name": "Bea",
    "facts": ["I keep forty hives of honeybees on a hill farm.", "I sell honey and beeswax candles."],
    "knowledge": [
        {"question": "How many hives do you keep?", "answer": "Forty, on the hill behind the farm."},
        {"question": "When do you harvest honey?", "answer": "In late summer, once the frames are capped."},
        {"question": "Do bees sting you?", "answer": "Now and then; the veil and smoke keep it rare."},
    ],
    "scope": {
        "topic": "bees, hives, honey and beeswax",
        "deflection": "I'm only a beekeeper, love: ask me about bees, hives or honey!",
        "in_scope": [
            "How does a queen bee lay eggs?",
            "Why do bees swarm in spring?",
            "What do bees do in winter?",
            "How do you use a smoker on a hive?",
            "What is royal jelly?",
            "How do bees make honey?",
            "How do you catch a swarm?",
            "What flowers do honeybees like best?",
            "Is raw honey healthier?",
            "How do I start my first beehive?",
            "What is varroa mite and how do you treat it?",
            "How long does a worker bee live?",
            "What are drones for in a colony?",
            "How is beeswax made?",
            "Why is my honey crystallising?",
            "How much honey does one hive give in a year?",
            "What do you wear when you open a hive?",
            "How do bees find their way back to the hive?",
            "Can I keep bees in a city garden?",
            "What is a nuc colony?",
            "How do you make beeswax candles?",
            "Why do bees dance?",
            "How many bees live in one hive?",
            "What kills bee colonies?",
        ],  # fmt: skip
        "out_of_scope": ["Can you recommend a good action film?"],
    },
}


def test_classifier_of_a_purpose_made_persona_on_its_held_out_split():
    report = scope.evaluate(Persona.model_validate(BEEKEEPER), test_size=0.3, seed=0)
    sizes = report["sizes"]
    assert sizes["in_scope"] == 3 + 24 + len(scope.read_questions(scope.SMALL_TALK))
    assert sizes["out_of_scope"] > 200 and sizes["test"] == round(0.3 * (sizes["in_scope"] + sizes["out_of_scope"]))
    for name in scope.CLASSES:  # measured: in 0.94 / 1.00, out 1.00 / 0.99
        assert report[name]["precision"] >= 0.85 and report[name]["recall"] >= 0.85, (name, report[name])


def test_guard_deflects_off_topic_questions_and_caches_the_model(scope_cache, monkeypatch):
    bea = Persona.model_validate(BEEKEEPER)
    assert scope.deflection(bea, "Who won the basketball game yesterday?") == bea.scope.deflection
    assert scope.deflection(bea, "How do I make my python script run faster?") == bea.scope.deflection
    assert scope.deflection(bea, "Do your bees make honey in autumn too?") is None  # not one of its examples
    assert scope.deflection(bea, "Hello, nice to meet you!") is None  # small talk is never off-topic
    [saved] = (scope_cache / "scope").glob("*.joblib")
    assert saved.name.startswith("bea-") and saved == scope.model_path(bea)

    # Another process loads the saved model instead of training; a changed persona retrains.
    scope._classifier.cache_clear()
    monkeypatch.setattr(scope, "build_classifier", lambda: pytest.fail("trained although the model was saved"))
    assert scope.deflection(bea, "What's the capital of Peru?") == bea.scope.deflection
    edited = Persona.model_validate({**BEEKEEPER, "scope": {**BEEKEEPER["scope"], "in_scope": ["What is a hive?"]}})
    assert scope.model_path(edited) != saved


def test_no_scope_never_deflects(ada):
    assert ada.scope is None and scope.deflection(ada, "What's the weather tomorrow?") is None


def test_session_answers_off_topic_with_the_deflection_without_the_model(tiny_engine, scope_cache, monkeypatch):
    bea = Persona.model_validate(BEEKEEPER)
    calls = []
    stream = tiny_engine.stream
    monkeypatch.setattr(tiny_engine, "stream", lambda *a: calls.append(a) or stream(*a))
    session = ChatSession(tiny_engine, bea, GREEDY)
    assert session.reply("Can you help me with my tax return?") == bea.scope.deflection
    assert not calls and session.deflected
    assert session.history[-2:] == [
        {"role": "user", "content": "Can you help me with my tax return?"},
        {"role": "assistant", "content": bea.scope.deflection, "deflected": True},
    ]
    session.reply("How many hives do you keep?")
    assert len(calls) == 1 and not session.deflected

    unguarded = ChatSession(tiny_engine, bea, GREEDY, scope_guard=False)
    assert unguarded.reply("Can you help me with my tax return?") != bea.scope.deflection
    assert len(calls) == 2 and not unguarded.deflected


def test_scope_without_questions_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "quiet.yaml"
    path.write_text('name: Quiet\nfacts: [I keep bees.]\nscope: {topic: bees, deflection: "Only bees, please."}\n')
    with pytest.raises(PersonaError, match=r"quiet\.yaml: field `scope`.*example questions") as info:
        load_persona(path)
    assert "in_scope" in info.value.fix and "lovelace_guide.yaml" in info.value.fix


def test_scope_command_reports_per_class_scores_and_saves(scope_cache, capsys):
    assert scope.main(["--persona", str(REPO / "personas" / "lovelace_guide.yaml")]) == 0
    out = capsys.readouterr().out
    assert "in_scope" in out and "out_of_scope" in out and "precision" in out
    assert len(list((scope_cache / "scope").glob("grace-*.joblib"))) == 1
    assert scope.main(["--persona", str(REPO / "personas" / "ada.yaml")]) == 2  # no scope: a clear error
    assert "has no `scope:`" in capsys.readouterr().err
