"""Dataset reading, per-turn examples and splits: on the shared Synthetic-Persona-Chat file and on
small files written under tmp_path."""

import csv
import hashlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.errors import DatasetError
from core.persona import Persona, persona_from_facts, render_system_prompt
from corpus.examples import (
    DataConfig,
    Utterance,
    fingerprint,
    load_examples,
    read_conversations,
    split_conversations,
    turn_examples,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).resolve().parents[3] / "shared"  # beside the repo, as in CI
SPC_CSV = SHARED / "data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv"
SPC_HEADER = ["user 1 personas", "user 2 personas", "Best Generated Conversation"]
SPEAKER_PREFIX = re.compile(r"user\s*[12]\s*:", re.IGNORECASE)
needs_spc = pytest.mark.skipif(not SPC_CSV.is_file(), reason=f"shared dataset not found at {SPC_CSV}")


@pytest.fixture(scope="module")
def spc():
    if not SPC_CSV.is_file():
        pytest.skip(f"shared dataset not found at {SPC_CSV}")
    return read_conversations(SPC_CSV)


@pytest.fixture(scope="module")
def spc_rows() -> list[list[str]]:
    with open(SPC_CSV, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))[1:]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([header, *rows])
    return path


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def roles(messages: list[dict]) -> list[str]:
    return [m["role"] for m in messages]


# --- the real Synthetic-Persona-Chat validation file ------------------------------------------


def test_real_file_counts_and_skipped_rows(spc):
    conversations, report = spc
    assert (report.format, report.rows, report.conversations, report.skipped) == ("spc", 1000, 973, 27)
    assert report.skipped == report.rows - report.conversations == 1000 - len(conversations)
    # These rows hold stage directions ("Ingredients:", "[A few minutes later]", "*User 1:* Hi").
    assert [row for row, _ in report.first_skipped] == [19, 30, 111, 149, 154]
    assert report.first_skipped[0] == (19, "line 14 has no 'User 1:'/'User 2:' speaker")
    summary = report.summary()
    assert summary.startswith(f"read 1000 rows from {SPC_CSV} (spc): 973 conversations, skipped 27 malformed")
    assert "row 19: line 14 has no 'User 1:'/'User 2:' speaker" in summary
    assert len({c.id for c in conversations}) == 973


def test_real_first_conversation(spc):
    first = spc[0][0]
    assert first.row == 1 and len(first.turns) == 25
    assert first.turns[:2] == (Utterance("User 1", "Hi!"), Utterance("User 2", "Hello!"))
    assert first.personas["User 2"] == persona_from_facts(
        ["I am a boy.", "I can move objects with my mind.", "I had to have a transplant.",
         "I was born with my heart outside my body."]
    )  # fmt: skip
    assert first.system is None


def test_real_turn_and_example_counts(spc):
    conversations = spc[0]
    total_turns = sum(len(c.turns) for c in conversations)
    assert total_turns == 26973
    user_1, user_2 = turn_examples(conversations, "User 1"), turn_examples(conversations, "User 2")
    assert (len(user_1), len(user_2)) == (13685, 13288)
    assert len(turn_examples(conversations)) == total_turns == len(user_1) + len(user_2)
    assert {e.speaker for e in user_1} == {"User 1"}


def test_real_turns_alternate_and_no_prefix_leaks(spc):
    conversations = spc[0]
    for conversation in conversations:
        speakers = [t.speaker for t in conversation.turns]
        assert all(a != b for a, b in zip(speakers, speakers[1:], strict=False)), conversation.row
    for example in turn_examples(conversations):
        texts = [m["content"] for m in example.messages[1:]] + [example.target]
        assert not any(SPEAKER_PREFIX.search(text) for text in texts), example.conversation_id


def test_real_examples_roles_and_persona(spc):
    conversations = spc[0]
    by_id = {c.id: c for c in conversations}
    for example in turn_examples(conversations):
        chat = example.chat()
        assert chat[0] == {
            "role": "system",
            "content": render_system_prompt(by_id[example.conversation_id].personas[example.speaker]),
        }
        rest = roles(chat[1:])
        assert rest[-1] == "assistant" and len(rest) == example.turn_index + 1
        assert all(a != b for a, b in zip(rest, rest[1:], strict=False))
    first = turn_examples(conversations[:1], "User 1")
    assert roles(first[0].messages) == ["system"] and first[0].target == "Hi!"  # opening turn
    assert [m["content"] for m in first[1].messages[1:]] == ["Hi!", "Hello!"]
    assert roles(first[1].messages) == ["system", "assistant", "user"]
    second = turn_examples(conversations[:1], "User 2")[0]
    assert second.messages[1:] == [{"role": "user", "content": "Hi!"}] and second.target == "Hello!"
    assert "I am a boy." in second.messages[0]["content"]


def test_real_max_history_turns_windows_context(spc):
    conversations = spc[0][:50]
    full, windowed = turn_examples(conversations), turn_examples(conversations, max_history_turns=4)
    assert len(full) == len(windowed)
    for whole, short in zip(full, windowed, strict=True):
        assert short.messages[0] == whole.messages[0] and short.target == whole.target
        assert short.messages[1:] == whole.messages[1:][-4:]
        assert len(short.messages) == 1 + min(4, whole.turn_index)
    assert all(len(e.messages) == 1 for e in turn_examples(conversations, max_history_turns=0))


def test_real_split_is_seeded_disjoint_and_roughly_sized(spc):
    conversations = spc[0]
    ids = lambda splits: {name: [c.id for c in part] for name, part in splits.items()}  # noqa: E731
    first, again = split_conversations(conversations, seed=0), split_conversations(conversations, seed=0)
    assert ids(first) == ids(again)
    assert {k: len(v) for k, v in first.items()} == {"train": 789, "validation": 85, "test": 99}
    assert ids(split_conversations(conversations, seed=1)) != ids(first)
    sets = [set(part) for part in ids(first).values()]
    assert sum(map(len, sets)) == len(set().union(*sets)) == 973
    assert 0.75 < len(first["train"]) / 973 < 0.85 and 0.06 < len(first["test"]) / 973 < 0.14
    wide = split_conversations(conversations, seed=0, fractions=(0.5, 0.0, 0.5))
    assert wide["validation"] == [] and 0.45 < len(wide["train"]) / 973 < 0.55


def test_real_split_survives_added_removed_and_reordered_rows(spc, spc_rows, tmp_path):
    conversations = spc[0]
    split_of = {c.id: name for name, part in split_conversations(conversations).items() for c in part}
    extra = ["I am new.", "I am also new.", "User 1: Hello\nUser 2: Hi there\nUser 1: Bye"]
    rows = list(reversed(spc_rows[100:])) + [extra]  # first 100 removed, order reversed, one added
    edited, _ = read_conversations(write_csv(tmp_path / "edited.csv", SPC_HEADER, rows))
    moved = {
        c.id
        for name, part in split_conversations(edited).items()
        for c in part
        if c.id in split_of and split_of[c.id] != name
    }
    assert len(edited) == 973 - 98 + 1 and not moved  # rows 19 and 30 were malformed
    assert len([c for c in edited if c.id not in split_of]) == 1


def test_real_load_examples_and_limit(spc):
    train = split_conversations(spc[0])["train"]
    examples, report = load_examples(DataConfig(path=SPC_CSV, limit=10), "train")
    assert report.conversations == 973
    assert [c.id for c in train[:10]] == list(dict.fromkeys(e.conversation_id for e in examples))
    assert len(examples) == sum(len(c.turns) for c in train[:10])
    cfg = DataConfig(path=SPC_CSV, limit=3, speakers="User 2", max_history_turns=2)
    windowed, _ = load_examples(cfg, "test")
    assert windowed and all(e.speaker == "User 2" and len(e.messages) <= 3 for e in windowed)
    with pytest.raises(ValueError, match="split must be one of"):
        load_examples(DataConfig(path=SPC_CSV), "dev")


@needs_spc
def test_cli_prints_summary_splits_and_an_example():
    result = subprocess.run(
        [sys.executable, "-m", "corpus.examples", str(SPC_CSV), "--max-history-turns", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "read 1000 rows" in result.stdout and "973 conversations, skipped 27" in result.stdout
    assert re.search(r"train\s+789 conversations", result.stdout)
    assert "[system] You are the person described below" in result.stdout
    assert f"sha256 {fingerprint(SPC_CSV)}" in result.stdout


# --- small files ----------------------------------------------------------------------------------


def test_bad_rows_are_counted_and_reported(tmp_path, caplog):
    good = ["I like tea.", "I like coffee.", "User 1: Hi\nUser 2: Hello"]
    rows = [
        good,
        ["I like tea.", "I like coffee."],  # row 2: dialogue cell missing
        ["I like tea.", "I like coffee.", "  \n "],  # row 3: empty dialogue
        ["I like tea.", "I like coffee.", "User 1: Hi\n\n[they wave]\nUser 2: Hi"],  # row 4: line 3
        ["", "I like coffee.", "User 1: Hi"],  # row 5: empty persona
        ["I like tea.", "I like coffee.", "User 1: Hi\nUser 1: again\nUser 2: Hello\n"],
        ["I like tea.", "I like coffee.", "User 2: a User 1: b"],  # row 7: two turns on one line
    ]
    with caplog.at_level(logging.WARNING, logger="corpus.formats"):
        conversations, report = read_conversations(write_csv(tmp_path / "bad.csv", SPC_HEADER, rows))
    assert (report.rows, report.conversations, report.skipped) == (7, 2, 5)
    assert report.first_skipped == (
        (2, "empty 'best generated conversation' cell"),
        (3, "empty 'best generated conversation' cell"),
        (4, "line 3 has no 'User 1:'/'User 2:' speaker"),
        (5, "empty 'user 1 personas' cell"),
        (7, "line 1 holds more than one 'User N:' turn"),
    )
    assert report.summary() in caplog.text and caplog.records[0].levelno == logging.WARNING
    assert [c.row for c in conversations] == [1, 6]
    assert conversations[1].turns == (Utterance("User 1", "Hi\nagain"), Utterance("User 2", "Hello"))


def test_only_first_five_skipped_rows_are_listed(tmp_path):
    rows = [["a", "b", f"no speaker {i}"] for i in range(8)] + [["a", "b", "User 2: hi"]]
    _, report = read_conversations(write_csv(tmp_path / "many.csv", SPC_HEADER, rows))
    assert report.skipped == 8 and [row for row, _ in report.first_skipped] == [1, 2, 3, 4, 5]


def test_header_is_case_and_space_insensitive_and_extra_columns_ignored(tmp_path):
    header = ["", " User 1 Personas ", "USER 2 PERSONAS", "best generated  conversation", "score"]
    row = [["0", "I run.", "I swim.", "User 1: Hi\nUser 2: Yo", "9"]][0]
    path = write_csv(tmp_path / "upstream.csv", header, [row])
    (conversation,), report = read_conversations(path)
    assert report.format == "spc" and conversation.turns == (Utterance("User 1", "Hi"), Utterance("User 2", "Yo"))
    assert conversation.personas["User 1"].facts == ["I run."]


def test_wrong_columns_name_found_and_expected(tmp_path):
    path = write_csv(tmp_path / "other.csv", ["prompt", "response"], [["a", "b"]])
    with pytest.raises(DatasetError) as err:
        read_conversations(path)
    for text in (
        "'prompt', 'response'",
        "'user 1 personas'",
        "'Best Generated Conversation'",
        "'question', 'answer'",
    ):
        assert text in str(err.value)
    with pytest.raises(DatasetError, match="'question', 'answer'"):
        read_conversations(write_csv(tmp_path / "spc.csv", SPC_HEADER, [["a", "b", "User 1: c"]]), "qa_csv")


def test_missing_file_names_path_and_fix(tmp_path):
    with pytest.raises(DatasetError) as err:
        read_conversations(tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in err.value.problem
    assert "leave data.path unset for the hub's google/Synthetic-Persona-Chat" in err.value.fix


@pytest.mark.parametrize("name", ["garbage.csv", "garbage.jsonl", "garbage.bin"])
def test_binary_file_is_rejected(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        read_conversations(path)


def test_json_without_messages_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "numbers.jsonl", ["[1, 2]", '{"text": "hi"}', "not json"])
    with pytest.raises(DatasetError, match="no usable conversations") as err:
        read_conversations(path)
    assert '{"messages"' in err.value.fix


def test_qa_csv(tmp_path):
    rows = [["Who are you?", "I am Ada.", "You are Ada."], ["What is 2+2?", "4", ""], ["", "orphan", ""]]
    path = write_csv(tmp_path / "qa.csv", ["Question", "ANSWER", "system"], rows)
    conversations, report = read_conversations(path)
    assert (report.format, report.conversations, report.first_skipped) == (
        "qa_csv",
        2,
        ((3, "empty 'question' cell"),),
    )
    ada = Persona(name="Ada", facts=["I am a mathematician."])
    first, second = turn_examples(conversations, default_persona=ada)
    assert first.chat() == [
        {"role": "system", "content": "You are Ada."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am Ada."},
    ]
    assert second.messages[0]["content"] == render_system_prompt(ada) and second.target == "4"
    assert roles(turn_examples(conversations, speakers="User 1")[1].messages) == ["user"]  # no default


def test_jsonl_persona_mapping_list_and_system(tmp_path):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    lines = [
        {"messages": chat, "persona": {"name": "Ada", "facts": ["I love maths."]}},
        {"messages": chat, "persona": ["I love tea.", "I live in Leeds."]},
        {"messages": chat, "system": "Be brief."},
        {"messages": [{"role": "system", "content": "Be kind."}, *chat, {"role": "user", "content": "Bye"}]},
    ]
    conversations, report = read_conversations(write_jsonl(tmp_path / "chats.jsonl", lines))
    assert (report.format, report.conversations, report.skipped) == ("jsonl", 4, 0)
    systems = [e.messages[0]["content"] for e in turn_examples(conversations)]
    assert systems[0] == render_system_prompt(Persona(name="Ada", facts=["I love maths."]))
    assert systems[1] == render_system_prompt(persona_from_facts(["I love tea.", "I live in Leeds."]))
    assert systems[2:] == ["Be brief.", "Be kind."]
    assert conversations[3].turns[-1] == Utterance("user", "Bye") and len(turn_examples(conversations)) == 4
    assert len({c.id for c in conversations}) == 4


def test_jsonl_malformed_lines_are_skipped(tmp_path):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    lines = [
        {"messages": chat},
        "{not json",
        "",  # blank lines are not rows
        {"text": "no messages"},
        {"messages": [{"role": "bot", "content": "beep"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": chat, "persona": {"name": "Ada"}},
        {"messages": [*chat, {"role": "assistant", "content": "More."}]},
    ]
    conversations, report = read_conversations(write_jsonl(tmp_path / "mixed.jsonl", lines))
    assert (report.rows, report.conversations, report.skipped) == (7, 2, 5)
    assert [row for row, _ in report.first_skipped] == [2, 4, 5, 6, 7]
    reasons = " | ".join(reason for _, reason in report.first_skipped)
    for text in (
        "not valid JSON",
        "'messages' list",
        "role 'bot'",
        "no assistant message",
        "persona field 'facts'",
    ):
        assert text in reasons
    assert conversations[1].turns[-1] == Utterance("assistant", "Hello!\nMore.")
    assert report.summary().startswith("read 7 lines") and "line 2: not valid JSON" in report.summary()


def test_auto_detects_jsonl_without_suffix(tmp_path):
    path = write_jsonl(tmp_path / "chats.txt", [{"messages": [{"role": "assistant", "content": "Hi!"}]}])
    conversations, report = read_conversations(path)
    assert report.format == "jsonl" and turn_examples(conversations)[0].messages == []


def test_conversation_ids_depend_on_content_only(tmp_path):
    rows = [["a", "b", "User 1: x\nUser 2: y"], ["a", "b", "User 1: x\nUser 2: z"]]
    forward, _ = read_conversations(write_csv(tmp_path / "f.csv", SPC_HEADER, rows))
    backward, _ = read_conversations(write_csv(tmp_path / "b.csv", SPC_HEADER, rows[::-1]))
    assert [c.id for c in forward] == [c.id for c in backward][::-1] and forward[0].id != forward[1].id


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="sum to 1"):
        split_conversations([], fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="non-negative"):
        split_conversations([], fractions=(1.2, -0.1, -0.1))
    with pytest.raises(ValidationError, match="sum to 1"):
        DataConfig(split_fractions=(0.9, 0.2, 0.0))
    with pytest.raises(ValidationError, match="extra"):
        DataConfig(speaker="both")
    with pytest.raises(ValueError, match="speakers"):
        turn_examples([], speakers="User 3")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        read_conversations(tmp_path / "x.csv", "parquet")


def test_fingerprint_is_sha256_of_bytes(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"x" * 3_000_000)
    assert fingerprint(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    path.write_bytes(b"x" * 2_999_999 + b"y")
    assert fingerprint(path) != hashlib.sha256(b"x" * 3_000_000).hexdigest()
