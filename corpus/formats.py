"""Dataset files -> `DialogueRow`s: Synthetic-Persona-Chat CSV, Q&A CSV, chat-messages JSONL.

`read_conversations(path)` detects the format, skips malformed rows (counted in a `LoadReport`,
never fatal) and raises `DatasetError` only when the file as a whole cannot be used.
`corpus/examples.py` turns conversations into training examples and splits.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from core.errors import DatasetError
from core.persona import Persona, persona_from_facts, render_system_prompt
from corpus.hub import cached_file, is_hub

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Where tests and CI find the one split that ships with the project (see its README): a test
# fixture, not a product default (that is corpus.hub.DEFAULT_DATASET).
SHARED_VALID_CSV = REPO_ROOT.parent / "shared/data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv"

FORMATS = ("spc", "qa_csv", "jsonl")
CHAT_SPEAKERS = ("user", "assistant")  # speakers of Q&A and JSONL conversations
SPC_SPEAKERS = ("User 1", "User 2")
# Header names are compared lower-cased with whitespace collapsed.
_CSV_COLUMNS = {
    "spc": ("user 1 personas", "user 2 personas", "best generated conversation"),
    "qa_csv": ("question", "answer"),
}
_EXPECTED = {
    "spc": "a CSV with columns 'user 1 personas', 'user 2 personas', 'Best Generated Conversation' "
    "(one dialogue line per turn, prefixed 'User 1: ' or 'User 2: ')",
    "qa_csv": "a CSV with columns 'question', 'answer' (and optionally 'system')",
    "jsonl": 'one JSON object per line: {"messages": [{"role": "user"|"assistant", "content": "..."}, ...]}',
}
_ANY_FORMAT = "; or ".join(_EXPECTED.values())
_SPEAKER_LINE = re.compile(r"\s*user\s*([12])\s*:(.*)", re.IGNORECASE | re.DOTALL)
_SPEAKER_ANYWHERE = re.compile(r"\buser\s*[12]\s*:", re.IGNORECASE)
_MAX_REPORTED = 5  # skipped rows listed by number in the report; the rest are only counted


@dataclass(frozen=True)
class Utterance:
    speaker: str  # "User 1" / "User 2" (Synthetic-Persona-Chat) or "user" / "assistant"
    text: str


@dataclass(frozen=True)
class DialogueRow:
    id: str  # content hash: the same dialogue gets the same id wherever it sits in the file
    row: int  # 1-based data row (CSV) or line number (JSONL) it was read from
    turns: tuple[Utterance, ...]  # speakers alternate: consecutive lines by one speaker are merged
    personas: dict[str, Persona] = field(default_factory=dict)  # speaker -> persona
    system: str | None = None  # explicit system prompt (Q&A `system` column, JSONL)

    def system_prompt(self, speaker: str, default_persona: Persona | None = None) -> str | None:
        """The system message for `speaker`: its persona, else the explicit system prompt,
        else the caller's default persona, else None (no system message)."""
        if speaker in self.personas:
            return render_system_prompt(self.personas[speaker])
        if self.system:
            return self.system
        return render_system_prompt(default_persona) if default_persona else None


@dataclass(frozen=True)
class LoadReport:
    path: str
    format: str
    rows: int  # data rows (CSV) or non-blank lines (JSONL) read
    conversations: int  # rows kept
    skipped: int  # malformed rows dropped; rows == conversations + skipped
    first_skipped: tuple[tuple[int, str], ...] = ()  # (row number, reason), first few

    def summary(self) -> str:
        unit = "line" if self.format == "jsonl" else "row"
        head = f"read {self.rows} {unit}s from {self.path} ({self.format})"
        text = f"{head}: {self.conversations} conversations"
        if not self.skipped:
            return text
        first = ", ".join(f"{unit} {number}: {reason}" for number, reason in self.first_skipped)
        return f"{text}, skipped {self.skipped} malformed {unit}s (first: {first})"


Loaded = tuple[list[DialogueRow], LoadReport]


class _BadRow(Exception):
    """One row cannot be used; the message is the reason shown in the report."""


# --- building conversations --------------------------------------------------------------------


def _merge_turns(lines: list[tuple[str, str]]) -> list[Utterance]:
    """(speaker, text) lines -> turns; consecutive lines by one speaker become one turn, so roles
    alternate as chat templates require."""
    merged: list[tuple[str, list[str]]] = []
    for speaker, text in lines:
        if merged and merged[-1][0] == speaker:
            merged[-1][1].append(text)
        else:
            merged.append((speaker, [text]))
    return [Utterance(speaker, "\n".join(texts)) for speaker, texts in merged]


def _conversation(
    row: int,
    turns: list[Utterance],
    personas: dict[str, Persona],
    system: str | None,
) -> DialogueRow:
    # Hash only what came from the file: defaults (and the placeholder name of an anonymous
    # persona) are left out, so a new Persona field or name does not change ids and splits.
    persona_data = {
        speaker: p.model_dump(mode="json", exclude_defaults=True, exclude={"name"} if p.anonymous else None)
        for speaker, p in personas.items()
    }
    payload = {"turns": [[t.speaker, t.text] for t in turns], "personas": persona_data, "system": system}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return DialogueRow(id=digest[:16], row=row, turns=tuple(turns), personas=personas, system=system)


def _cell(cells: dict[str, str | None], column: str) -> str:
    value = cells.get(column)
    if value is None or not value.strip():
        raise _BadRow(f"empty '{column}' cell")
    return value


def _spc_turns(dialogue: str) -> list[Utterance]:
    lines = []
    for number, line in enumerate(dialogue.splitlines(), 1):  # line numbers as seen in the cell
        if not line.strip():
            continue
        match = _SPEAKER_LINE.fullmatch(line)
        if match is None:
            raise _BadRow(f"line {number} has no 'User 1:'/'User 2:' speaker")
        text = match.group(2).strip()
        if not text:
            raise _BadRow(f"line {number} has an empty turn")
        if _SPEAKER_ANYWHERE.search(text):  # a second speaker glued onto the line would leak
            raise _BadRow(f"line {number} holds more than one 'User N:' turn")
        lines.append((f"User {match.group(1)}", text))
    return _merge_turns(lines)


def _parse_spc(row: int, cells: dict[str, str | None]) -> DialogueRow:
    personas = {}
    for speaker, column in zip(SPC_SPEAKERS, _CSV_COLUMNS["spc"][:2], strict=True):
        facts = [line.strip() for line in _cell(cells, column).splitlines() if line.strip()]
        personas[speaker] = persona_from_facts(facts)
    turns = _spc_turns(_cell(cells, "best generated conversation"))
    return _conversation(row, turns, personas, None)


def _parse_qa(row: int, cells: dict[str, str | None]) -> DialogueRow:
    turns = [
        Utterance("user", _cell(cells, "question").strip()),
        Utterance("assistant", _cell(cells, "answer").strip()),
    ]
    system = (cells.get("system") or "").strip() or None
    return _conversation(row, turns, {}, system)


def _jsonl_persona(value: object) -> Persona:
    try:
        if isinstance(value, dict):
            return Persona.model_validate(value)
        if isinstance(value, list) and all(isinstance(fact, str) for fact in value):
            return persona_from_facts(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "facts"
        raise _BadRow(f"persona field '{where}': {first['msg']}") from None
    raise _BadRow("'persona' must be a mapping of Persona fields or a list of fact strings")


def _jsonl_messages(messages: list) -> tuple[list[Utterance], str | None]:
    lines = []
    system = None
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise _BadRow(f"message {number} is not an object with a 'content' string")
        role, content = message.get("role"), message["content"].strip()
        if role == "system" and number == 1:
            system = content or None
            continue
        if role not in CHAT_SPEAKERS:
            raise _BadRow(f"message {number} has role {role!r}; expected 'user' or 'assistant'")
        if not content:
            raise _BadRow(f"message {number} is empty")
        lines.append((role, content))
    return _merge_turns(lines), system


def _parse_jsonl(row: int, line: str) -> DialogueRow:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise _BadRow(f"not valid JSON ({err.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise _BadRow("not an object with a 'messages' list")
    turns, leading_system = _jsonl_messages(record["messages"])
    if not any(turn.speaker == "assistant" for turn in turns):
        raise _BadRow("no assistant message to learn from")
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise _BadRow("'system' must be a string")
    system = (system or "").strip() or None
    # Two different system prompts for one conversation is ambiguous: skip rather than guess.
    if system and leading_system and system != leading_system:
        raise _BadRow("'system' differs from the leading system message")
    personas = {} if record.get("persona") is None else {"assistant": _jsonl_persona(record["persona"])}
    return _conversation(row, turns, personas, system or leading_system)


# --- reading files -----------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DatasetError(
            f"dataset file {path} does not exist",
            "pass the path of a .csv or .jsonl file, or leave data.path unset for the hub's "
            "google/Synthetic-Persona-Chat",
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: spreadsheet exports start with a BOM
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise DatasetError(
            f"dataset file {path} is not UTF-8 text (binary?)",
            f"expected {_ANY_FORMAT}",
        )
    if not text.strip():
        raise DatasetError(f"dataset file {path} is empty", f"expected {_ANY_FORMAT}")
    return text


def _normalise(column: str) -> str:
    return " ".join(column.split()).lower()


def _csv_format(path: Path, header: list[str], requested: str) -> str:
    names = {_normalise(column) for column in header}
    candidates = [requested] if requested in _CSV_COLUMNS else list(_CSV_COLUMNS)
    for fmt in candidates:
        if set(_CSV_COLUMNS[fmt]) <= names:
            return fmt
    expected = "; or ".join(f"{fmt}: {_EXPECTED[fmt]}" for fmt in candidates)
    found = ", ".join(repr(column) for column in header) or "none"
    raise DatasetError(f"dataset file {path} has columns {found}", f"expected {expected}")


def _csv_records(path: Path, text: str, requested: str) -> tuple[str, Iterator[tuple[int, dict]]]:
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise DatasetError(
            f"dataset file {path} is not a readable CSV: {err}", f"expected {_EXPECTED['spc']}"
        ) from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]  # blank lines are not rows
    fmt = _csv_format(path, rows[0] if rows else [], requested)
    wanted = _CSV_COLUMNS[fmt] + (("system",) if fmt == "qa_csv" else ())
    # First matching column wins; extra columns (e.g. an unnamed index) are ignored.
    index: dict[str, int] = {}
    for position, column in enumerate(rows[0]):
        if _normalise(column) in wanted:
            index.setdefault(_normalise(column), position)
    records = (
        (number, {name: row[i] if i < len(row) else None for name, i in index.items()})
        for number, row in enumerate(rows[1:], 1)
    )
    return fmt, records


def _jsonl_records(text: str) -> Iterator[tuple[int, str]]:
    # Split on "\n" only: str.splitlines would also break on U+2028, which is legal inside JSON strings.
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield number, line


def _sniff(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (suffix != ".csv" and text.lstrip().startswith("{")):
        return "jsonl"
    return "csv"  # the header decides between spc and qa_csv


def _collect(path: Path, fmt: str, records: Iterator, parse: Callable) -> Loaded:
    conversations, skipped, rows = [], [], 0
    for number, record in records:
        rows += 1
        try:
            conversations.append(parse(number, record))
        except _BadRow as bad:
            skipped.append((number, str(bad)))
    first = tuple(skipped[:_MAX_REPORTED])
    report = LoadReport(str(path), fmt, rows, len(conversations), len(skipped), first)
    logger.log(logging.WARNING if skipped else logging.INFO, report.summary())
    if not conversations:
        raise DatasetError(
            f"dataset file {path} has no usable conversations: {report.summary()}",
            f"expected {_EXPECTED[fmt]}",
        )
    return conversations, report


def read_conversations(path: str | Path, format: str = "auto") -> Loaded:
    """Every well-formed conversation in `path`, in file order, and a report of what was skipped.

    `format` is "auto" (`.jsonl` -> jsonl, otherwise the CSV header decides), "spc", "qa_csv" or
    "jsonl". Raises `DatasetError` when the file is missing, unreadable or has no usable row.
    """
    if format not in ("auto", *FORMATS):
        raise DatasetError(f"unknown dataset format {format!r}", f"use one of: auto, {', '.join(FORMATS)}")
    path = cached_file(path) if is_hub(path) else Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):  # corpus/persona_data.py reads those, by split
        raise DatasetError(
            f"{path} is a persona file, not a file of conversations",
            "train on it with --data.path (or data.mix); ask its held-out questions with "
            f"python -m eval.identity --persona {path}",
        )
    text = _read_text(path)
    if format == "jsonl" or (format == "auto" and _sniff(path, text) == "jsonl"):
        return _collect(path, "jsonl", _jsonl_records(text), _parse_jsonl)
    fmt, records = _csv_records(path, text, format)
    return _collect(path, fmt, records, _parse_spc if fmt == "spc" else _parse_qa)
