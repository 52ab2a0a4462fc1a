"""Persona files in personas/, the system prompt, and the errors a bad persona file gives."""

from pathlib import Path

import pytest

from core import persona as persona_module
from core.errors import PersonaError
from core.persona import (
    Persona,
    load_persona,
    load_personas,
    persona_from_facts,
    render_system_prompt,
    scan_personas,
)

ROOT = Path(__file__).resolve().parents[2]
PERSONA_DIR = ROOT / "personas"
PERSONA_FILES = sorted(PERSONA_DIR.glob("*.yaml")) + sorted(PERSONA_DIR.glob("*.yml"))
ALLOWED_FIELDS = "name, facts, description, style, greeting, knowledge, anonymous"


def identity_answer(persona: Persona) -> str | None:
    return next((qa.answer for qa in persona.knowledge if qa.question == "Who are you?"), None)


# --- the shipped persona files ---------------------------------------------------------------


def test_persona_folder_has_the_required_personas():
    stems = {p.stem for p in PERSONA_FILES}
    assert {"ada", "marco", "nova", "lovelace_guide", "rusty", "sam"} <= stems
    assert len(PERSONA_FILES) >= 7


@pytest.mark.parametrize("path", PERSONA_FILES, ids=lambda p: p.name)
def test_persona_file_loads_and_knows_who_it_is(path):
    persona = load_persona(path)
    assert not persona.anonymous
    assert persona.description and persona.style and persona.greeting
    assert 4 <= len(persona.facts) <= 8
    answer = identity_answer(persona)
    assert answer is not None, f"{path.name} has no `Who are you?` knowledge pair"
    assert persona.name in answer
    # The description is spliced into "You are {name}, {description}." so it must read as
    # a lowercase phrase without its own full stop.
    assert not persona.description.endswith(".")
    assert persona.description[0].islower()


def test_load_personas_keys_every_file_by_stem():
    personas = load_personas(PERSONA_DIR)
    assert len(personas) >= 6
    assert list(personas) == sorted(p.stem for p in PERSONA_FILES)
    assert personas["ada"].name == "Ada"
    assert all(isinstance(p, Persona) for p in personas.values())


def test_nova_knows_its_identity_maker_and_employer():
    nova = load_persona(PERSONA_DIR / "nova.yaml")
    answers = {qa.question: qa.answer for qa in nova.knowledge}
    for question in [
        "Who are you?",
        "Who made you?",
        "What company do you work for?",
        "What can you help with?",
        "Are you ChatGPT?",
        "What are your opening hours?",
    ]:
        assert question in answers, question
    assert answers["Are you ChatGPT?"].startswith("No")
    assert "Nova" in answers["Are you ChatGPT?"]
    assert "Brightline Energy" in answers["What company do you work for?"]
    assert "Brightline Energy" in answers["Who made you?"]


# --- render_system_prompt --------------------------------------------------------------------


@pytest.mark.parametrize("path", PERSONA_FILES, ids=lambda p: p.name)
def test_system_prompt_holds_everything_the_persona_says(path):
    persona = load_persona(path)
    prompt = render_system_prompt(persona)
    assert prompt.startswith(f"You are {persona.name}, {persona.description}.\n")
    for fact in persona.facts:
        assert f"- {fact}" in prompt
    for qa in persona.knowledge:
        assert f"Q: {qa.question}\nA: {qa.answer}" in prompt
    assert f"Style: {persona.style}" in prompt


def test_system_prompt_without_description_or_extras():
    prompt = render_system_prompt(Persona(name="Bo", facts=["  I fish.  "]))
    assert prompt.startswith("You are Bo.\n")
    assert "- I fish." in prompt.splitlines()  # facts are stripped
    assert "Q:" not in prompt and "Style:" not in prompt


def test_anonymous_persona_prompt_hides_the_name_and_keeps_the_facts():
    facts = ["I have two dogs.", "", "I like to hike.", "   "]
    persona = persona_from_facts(facts, name="User 1")
    prompt = render_system_prompt(persona)
    assert persona.anonymous
    assert persona.facts == [
        "I have two dogs.",
        "I like to hike.",
    ]  # blank cells dropped
    assert "User 1" not in prompt
    assert "You are the person described below" in prompt
    assert "- I have two dogs.\n- I like to hike." in prompt


def test_default_anonymous_name_is_not_in_the_prompt():
    persona = persona_from_facts(["I am a nurse."])
    assert persona.name not in render_system_prompt(persona)


# --- malformed persona files -----------------------------------------------------------------

# (file text, field named in the message, pydantic message, words from the fix)
BAD_FIELDS = {
    "missing_name": ("facts:\n  - I fish.\n", "name", "Field required", "name: Ada"),
    "blank_name": (
        "name: '   '\nfacts: [I fish.]\n",
        "name",
        "must not be empty",
        "name: Ada",
    ),
    "missing_facts": ("name: Bo\n", "facts", "Field required", "- sentence"),
    "empty_facts": ("name: Bo\nfacts: []\n", "facts", "at least 1 item", "- sentence"),
    "empty_fact": (
        'name: Bo\nfacts:\n  - I fish.\n  - ""\n',
        "facts",
        "non-empty sentence",
        "- sentence",
    ),
    # pydantic does not split or wrap a plain string into a list[str]: it rejects it.
    "facts_as_string": (
        "name: Bo\nfacts: I fish.\n",
        "facts",
        "valid list",
        "- sentence",
    ),
    "fact_not_a_string": (
        "name: Bo\nfacts: [42]\n",
        "facts.0",
        "valid string",
        "- sentence",
    ),
    "style_as_list": (
        "name: Bo\nfacts: [I fish.]\nstyle: [warm]\n",
        "style",
        "valid string",
        "style:",
    ),
    "knowledge_without_answer": (
        "name: Bo\nfacts: [I fish.]\nknowledge:\n  - question: Who are you?\n",
        "knowledge.0.answer",
        "Field required",
        "question: ...",
    ),
}


@pytest.mark.parametrize("case", BAD_FIELDS)
def test_bad_field_error_names_file_field_and_fix(tmp_path, case):
    text, field, message, fix = BAD_FIELDS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PersonaError) as info:
        load_persona(path)
    err = info.value
    assert str(path) in err.problem
    assert f"field `{field}`" in err.problem
    assert message in err.problem
    assert fix in err.fix
    assert f"fix: {err.fix}" in str(err)


def test_unknown_key_lists_the_allowed_fields(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: Bo\nfacts: [I fish.]\nstlye: warm\n", encoding="utf-8")
    with pytest.raises(PersonaError) as info:
        load_persona(path)
    assert str(path) in str(info.value)
    assert "field `stlye`" in info.value.problem
    assert "`stlye`" in info.value.fix
    assert f"allowed fields: {ALLOWED_FIELDS}" in info.value.fix


def test_fact_typo_names_the_typo_and_the_allowed_fields(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: Bo\nfact:\n  - I fish.\n", encoding="utf-8")
    with pytest.raises(PersonaError) as info:
        load_persona(path)
    assert "`fact`" in str(info.value)
    assert ALLOWED_FIELDS in str(info.value)


def test_unknown_knowledge_key_lists_question_and_answer(tmp_path):
    path = tmp_path / "qa.yaml"
    path.write_text(
        "name: Bo\nfacts: [I fish.]\nknowledge:\n  - question: Hi?\n    answer: Hi.\n    note: x\n",
        encoding="utf-8",
    )
    with pytest.raises(PersonaError) as info:
        load_persona(path)
    assert "field `knowledge.0.note`" in info.value.problem
    assert "allowed fields: question, answer" in info.value.fix


# (file text, words from the problem, words from the fix)
BAD_FILES = {
    "not_yaml": ("name: [unclosed\n", "is not valid YAML", "indentation and quoting"),
    "top_level_list": ("- name: Bo\n  facts: [I fish.]\n", "not list", "name: ..."),
    "empty_file": ("", "is empty", "name: ..."),
    "plain_string": ("just some text\n", "not str", "name: ..."),
    "not_utf8": (b"name: \xff\xfe\n", "is not valid YAML", "indentation and quoting"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_error_names_file_and_fix(tmp_path, case):
    content, problem, fix = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(PersonaError) as info:
        load_persona(path)
    assert f"persona file {path} " in info.value.problem
    assert problem in info.value.problem
    assert fix in info.value.fix


def test_missing_file_error_names_path_and_fix(tmp_path):
    path = tmp_path / "nobody.yaml"
    with pytest.raises(PersonaError) as info:
        load_persona(path)
    assert info.value.problem == f"persona file {path} does not exist"
    assert "personas/ada.yaml" in info.value.fix


def test_load_personas_on_missing_folder(tmp_path):
    folder = tmp_path / "no_such_folder"
    with pytest.raises(PersonaError) as info:
        load_personas(folder)
    assert str(folder) in info.value.problem
    assert info.value.fix


def test_load_personas_reports_the_bad_file(tmp_path):
    (tmp_path / "good.yaml").write_text("name: Bo\nfacts: [I fish.]\n", encoding="utf-8")
    (tmp_path / "bad.yaml").write_text("name: Cy\n", encoding="utf-8")
    with pytest.raises(PersonaError) as info:
        load_personas(tmp_path)
    assert str(tmp_path / "bad.yaml") in info.value.problem


def test_load_personas_reads_yml_and_ignores_other_files(tmp_path):
    (tmp_path / "bo.yml").write_text("name: Bo\nfacts: [I fish.]\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a persona", encoding="utf-8")
    assert {k: p.name for k, p in load_personas(tmp_path).items()} == {"bo": "Bo"}


def test_a_persona_file_is_parsed_again_only_when_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "kim.yaml"
    path.write_text("name: Kim\nfacts: [I fish.]\n")
    first = scan_personas(tmp_path)[0]["kim"]
    parsed = []
    real_load = persona_module.yaml.load
    monkeypatch.setattr(persona_module.yaml, "load", lambda *a, **k: parsed.append(1) or real_load(*a, **k))
    assert scan_personas(tmp_path)[0]["kim"] is first and parsed == []  # unchanged: not read again
    path.write_text("name: Kim\nfacts: [I fish.]\nstyle: terse\n")  # an edit while the app runs
    assert scan_personas(tmp_path)[0]["kim"].style == "terse" and parsed == [1]
    path.write_text("name: Kim\nfacts: [I fish.\n")  # broken by the next edit: its error, every time
    for _ in range(2):
        with pytest.raises(PersonaError, match="not valid YAML"):
            load_persona(path)
    assert scan_personas(tmp_path)[1]["kim"].problem.startswith(f"persona file {path} is not valid YAML")
