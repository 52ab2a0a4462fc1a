"""A persona file as a dataset: row counts per split, held-out wordings never trained on, bad paraphrases."""

import pytest
import yaml

from core.errors import DatasetError, PersonaError
from core.persona import load_persona
from corpus.examples import DataConfig, load_examples, main, read_conversations
from corpus.persona_data import FACT_QUESTIONS, VARIATIONS, heldout_paraphrases, normalize
from tests.conftest import REPO

NOVA = REPO / "personas" / "nova.yaml"


def write_persona(path, knowledge):
    path.write_text(
        yaml.safe_dump({"name": "Vega", "facts": ["I am Vega.", "I guide visitors."], "knowledge": knowledge})
    )
    return path


def bare(text: str) -> str:
    """A wording without the product's variation affixes: the question the user asked."""
    return normalize(text).removeprefix("hi ").removeprefix("quick question ").removesuffix(" thanks")


def user_texts(examples):
    return [ex.messages[-1]["content"] for ex in examples]


def test_rows_per_split(tmp_path):
    who = ["Your name?", "Who is this?", "Who's there?", "Name please?"]
    where = ["What place is this?", "Where am I?", "What building is this?", "Which museum?"]
    knowledge = [
        {"question": "Who are you?", "answer": "I am Vega.", "paraphrases": who},
        {"question": "Where are we?", "answer": "In the museum.", "paraphrases": where},
    ]
    cfg = DataConfig(path=write_persona(tmp_path / "vega.yaml", knowledge))
    train, report = load_examples(cfg, "train")
    test, _ = load_examples(cfg, "test")
    validation, _ = load_examples(cfg, "validation")
    # Held out: round(0.25 * 4) = 1 paraphrase per question. Trained: each question + 3
    # paraphrases, and the facts question + its paraphrases; each also in every variation.
    trained_wordings = 2 * (1 + 3) + 1 + len(FACT_QUESTIONS)
    assert (len(train), len(test), len(validation)) == (trained_wordings * (1 + len(VARIATIONS)), 2, 0)
    assert report.format == "persona" and report.rows == len(train) + len(test)
    system = train[0].messages[0]
    assert system["role"] == "system" and "You are Vega" in system["content"]
    assert all(ex.messages[0] == system and len(ex.messages) == 2 for ex in [*train, *test])
    assert {ex.target for ex in test} == {"I am Vega.", "In the museum."}  # one held out per question
    assert "I am Vega. I guide visitors." in {ex.target for ex in train}  # the facts, answered in order
    assert "who are you" in user_texts(train) and "Quick question: who are you?" in user_texts(train)


def test_heldout_wordings_are_never_trained_on_and_stable():
    persona = load_persona(NOVA)
    cfg = DataConfig(path=NOVA)
    train, _ = load_examples(cfg, "train")
    test, _ = load_examples(cfg, "test")
    held = {normalize(text) for text in user_texts(test)}
    assert len(held) == len(test) >= len(persona.knowledge)  # at least one per question
    assert not held & {bare(text) for text in user_texts(train)}
    assert not {ex.conversation_id for ex in test} & {ex.conversation_id for ex in train}
    # Seeded and stable: the same call gives the same wordings; another seed others.
    assert user_texts(load_examples(cfg, "test")[0]) == user_texts(test)
    other = user_texts(load_examples(DataConfig(path=NOVA, split_seed=1), "test")[0])
    assert other != user_texts(test)
    # A new paraphrase moves at most one wording between train and test.
    entry = persona.knowledge[0]
    longer = entry.model_copy(update={"paraphrases": [*entry.paraphrases, "And you are?"]})
    before, after = set(heldout_paraphrases(entry, 0, 0.25)), set(heldout_paraphrases(longer, 0, 0.25))
    assert len(before ^ (after - {"And you are?"})) <= 1


def test_a_paraphrase_list_that_is_not_a_list_is_refused(tmp_path):
    path = write_persona(
        tmp_path / "bad.yaml", [{"question": "Who are you?", "answer": "Vega.", "paraphrases": "Your name?"}]
    )
    with pytest.raises(PersonaError) as err:
        load_examples(DataConfig(path=path), "train")
    message = str(err.value)
    assert "knowledge.0.paraphrases" in message and "valid list" in message
    assert "make `paraphrases:` a list of questions" in message


def test_cli_shows_the_splits_of_a_persona_file(capsys):
    assert main([str(NOVA)]) == 0
    out = capsys.readouterr().out
    assert "test" in out and "[system] You are Nova" in out


def test_a_persona_file_read_as_conversations_says_where_it_belongs():
    with pytest.raises(DatasetError) as err:
        read_conversations(NOVA)
    assert "is a persona file" in str(err.value) and "eval.identity --persona" in str(err.value)
