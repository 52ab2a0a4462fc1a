"""Conversations -> per-turn chat examples and stable train/validation/test splits.

Reading files lives in `corpus/formats.py` (re-exported here); this module decides what the
model learns from: one `Example` per reply of the target speaker, with that speaker's persona
as the system message. Used by training and by eval, so both see the same prompts.

    python -m corpus.examples ../shared/data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv
    python -m corpus.examples personas/nova.yaml   # a persona file as a dataset (corpus/persona_data.py)
    (flags: --format, --speakers "User 2", --max-history-turns 6, --split-seed 1)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import PersonaStudioError
from core.persona import Persona
from corpus.formats import (
    CHAT_SPEAKERS,
    FORMATS,
    SPC_SPEAKERS,
    DialogueRow,
    LoadReport,
    Utterance,
    read_conversations,
)
from corpus.hub import DEFAULT_DATASET, cached_file, is_hub
from corpus.persona_data import HELDOUT_SHARE, check_share, is_persona_file, persona_splits

__all__ = [
    "SPLITS",
    "DialogueRow",
    "DataConfig",
    "Example",
    "LoadReport",
    "MixSource",
    "Utterance",
    "fingerprint",
    "load_examples",
    "read_conversations",
    "split_conversations",
    "turn_examples",
]

SPLITS = ("train", "validation", "test")
Speakers = Literal["both", "User 1", "User 2"]


@dataclass(frozen=True)
class Example:
    conversation_id: str
    speaker: str  # whose reply `target` is
    turn_index: int  # index of the target turn in `DialogueRow.turns`
    # System (if any), then the history from `speaker`'s side. Read-only: the dicts are shared
    # by the examples of one conversation (a copy per example adds seconds on the ~9k-row file).
    messages: list[dict[str, str]]
    target: str

    def chat(self) -> list[dict[str, str]]:
        """The full chat for supervised fine-tuning: the prompt messages, then the reply."""
        return [*self.messages, {"role": "assistant", "content": self.target}]


def _target_speakers(conversation: DialogueRow, speakers: str) -> set[str]:
    # Q&A and JSONL chats have one side to learn: the assistant. `speakers` picks the side only
    # in two-party dialogues, where either persona can be the model.
    if {turn.speaker for turn in conversation.turns} <= set(CHAT_SPEAKERS):
        return {"assistant"}
    return set(SPC_SPEAKERS) if speakers == "both" else {speakers}


def _conversation_examples(
    conversation: DialogueRow,
    targets: set[str],
    max_history_turns: int | None,
    default_persona: Persona | None,
) -> list[Example]:
    examples = []
    for speaker in sorted(targets):
        system = conversation.system_prompt(speaker, default_persona)
        head = [{"role": "system", "content": system}] if system else []
        # The target speaker's own earlier turns are the assistant's; everyone else is the user.
        # Built once per speaker: examples share these dicts (treat messages as read-only).
        history = [
            {"role": "assistant" if turn.speaker == speaker else "user", "content": turn.text}
            for turn in conversation.turns
        ]
        for index, turn in enumerate(conversation.turns):
            if turn.speaker == speaker:
                start = 0 if max_history_turns is None else max(0, index - max_history_turns)
                context = head + history[start:index]
                examples.append(Example(conversation.id, speaker, index, context, turn.text))
    return sorted(examples, key=lambda example: example.turn_index)


def turn_examples(
    conversations: Sequence[DialogueRow],
    speakers: str = "both",
    max_history_turns: int | None = None,
    default_persona: Persona | None = None,
) -> list[Example]:
    """One example per turn of the target speaker(s), in conversation then turn order.

    `speakers`: "both" (each Synthetic-Persona-Chat dialogue gives examples for both personas),
    "User 1" or "User 2"; Q&A/JSONL conversations always target the assistant. History keeps the
    last `max_history_turns` turns when set. The history is kept as it happened: an opening turn
    is an example with only the system message, and the history may start with an assistant
    turn. Chat templates that insist on a user turn first (e.g. Gemma) must handle that when
    formatting; dropping those turns here would lose every opening line and the speaker's own
    earlier words.
    """
    if speakers not in ("both", *SPC_SPEAKERS):
        raise ValueError(f"speakers must be 'both', 'User 1' or 'User 2', not {speakers!r}")
    if max_history_turns is not None and max_history_turns < 0:
        raise ValueError(f"max_history_turns must be >= 0 or None, not {max_history_turns}")
    examples = []
    for conversation in conversations:
        targets = _target_speakers(conversation, speakers)
        examples += _conversation_examples(conversation, targets, max_history_turns, default_persona)
    return examples


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    valid = len(fractions) == 3 and all(math.isfinite(f) and f >= 0 for f in fractions)
    if not valid or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split fractions {fractions} must be three non-negative numbers (train, validation, test) "
            "that sum to 1, e.g. (0.8, 0.1, 0.1)"
        )
    return fractions


def _split_of(unit: float, fractions: tuple[float, float, float]) -> str:
    last = max(i for i, f in enumerate(fractions) if f > 0)  # takes any float round-off at the top
    edge = 0.0
    for i, fraction in enumerate(fractions):
        edge += fraction
        if fraction > 0 and (unit < edge or i == last):
            return SPLITS[i]
    raise AssertionError("unreachable: fractions sum to 1")


def split_conversations(
    conversations: Sequence[DialogueRow], seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, list[DialogueRow]]:
    """{"train", "validation", "test"} -> conversations, file order kept within each split.

    Split by conversation, never by turn, so no dialogue is in two splits. Each conversation's
    split comes from a hash of (seed, conversation.id) alone: adding, removing or reordering
    rows never moves the others, and identical dialogues (same id) always land together.
    """
    fractions = check_fractions(fractions)
    splits: dict[str, list[DialogueRow]] = {name: [] for name in SPLITS}
    for conversation in conversations:
        digest = hashlib.sha256(f"{seed}:{conversation.id}".encode()).digest()
        unit = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        splits[_split_of(unit, fractions)].append(conversation)
    return splits


def fingerprint(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """sha256 hex digest of the file's bytes (read in 1 MiB chunks), to record what was trained on."""
    digest = hashlib.sha256()
    with open(cached_file(path) if is_hub(path) else path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


Format = Literal["auto", "spc", "qa_csv", "jsonl", "persona"]


class MixSource(BaseModel):
    """One source of a weighted mix (`data.mix`); the other `data.*` settings apply to all."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="Dataset file (.csv, .jsonl) or persona file (.yaml).")
    weight: float = Field(description="Relative share of the training examples (weights are normalised).")
    format: Format = Field("auto", description="As data.format.")

    @field_validator("weight")
    @classmethod
    def _weight(cls, weight: float) -> float:
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(
                f"a mix weight must be a positive number, not {weight}: give each source a share such as "
                "`weight: 0.3`, or remove the source from data.mix"
            )
        return weight


class DataConfig(BaseModel):
    """Which dataset file (or weighted mix of files), which speakers, how much history, which split."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(
        DEFAULT_DATASET,
        description="Dataset file: a .csv, a .jsonl, a persona .yaml, or hub:OWNER/NAME (a hub dataset's train "
        "split, fetched once with `datasets`).",
    )
    format: Format = Field(
        "auto",
        description="spc, qa_csv, jsonl, persona, or auto (.yaml/.yml persona, .jsonl, else the CSV header).",
    )
    mix: list[MixSource] | None = Field(
        None, description="Train on several sources by weight: [{path: ..., weight: 0.3}, ...] (instead of path)."
    )
    stopping_strategy: Literal["first_exhausted", "all_exhausted"] = Field(
        "all_exhausted",
        description="Mix: stop when the first source runs out, or repeat sources until all ran out "
        "(datasets.interleave_datasets).",
    )
    persona_heldout_share: float = Field(
        HELDOUT_SHARE, description="Persona files: share of each question's paraphrases held out for eval.identity."
    )
    persona_variations: bool = Field(
        True, description="Persona files: add lower-case / 'Hi!' / 'Quick question:' / 'Thanks!' wordings."
    )
    speakers: Speakers = Field("both", description="Whose turns are targets in two-party dialogues.")
    unit: Literal["turn", "conversation"] = Field(
        "turn",
        description="Training sequences: one per reply (turn), or one per (conversation, speaker) with the loss "
        "on every reply of that speaker, split at turn boundaries to fit (conversation). Validation is per turn.",
    )
    max_history_turns: int | None = Field(
        None, ge=0, description="Keep only the last K turns of history (per-turn examples: unit turn, validation)."
    )
    split_seed: int = Field(0, description="Seed of the hash that assigns conversations to splits.")
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="Train, validation, test shares of conversations; sum to 1."
    )
    # Applied after the split, so a small run uses the same conversations as a full one.
    limit: int | None = Field(None, ge=1, description="Use at most this many conversations of the split.")

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, fractions: tuple[float, float, float]) -> tuple[float, float, float]:
        return check_fractions(fractions)

    @field_validator("persona_heldout_share")
    @classmethod
    def _share(cls, share: float) -> float:
        return check_share(share)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.mix is not None and not self.mix:
            raise ValueError("data.mix is empty: list at least one {path, weight} source, or drop data.mix")
        if self.mix and "path" in self.model_fields_set:
            raise ValueError("give data.path or data.mix, not both: put the file into data.mix with a weight")
        return self

    def is_persona(self) -> bool:
        return self.format == "persona" or (self.format == "auto" and is_persona_file(self.path))


def read_splits(cfg: DataConfig) -> tuple[dict[str, list[DialogueRow]], LoadReport]:
    """{"train", "validation", "test"} -> conversations of `cfg.path`: hashed by conversation for
    dialogue files, by held-out wording for persona files (`corpus/persona_data.py`)."""
    if cfg.is_persona():
        return persona_splits(cfg.path, cfg.split_seed, cfg.persona_heldout_share, cfg.persona_variations)
    conversations, report = read_conversations(cfg.path, cfg.format)
    return split_conversations(conversations, cfg.split_seed, cfg.split_fractions), report


def load_examples(
    cfg: DataConfig, split: str, default_persona: Persona | None = None
) -> tuple[list[Example], LoadReport]:
    """Read -> split -> limit -> turn_examples. The list is empty when the split has no conversation."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    splits, report = read_splits(cfg)
    chosen = splits[split]
    # The first `limit` in file order: the slice grows, never reshuffles, as `limit` grows.
    if cfg.limit is not None:
        chosen = chosen[: cfg.limit]
    return turn_examples(chosen, cfg.speakers, cfg.max_history_turns, default_persona), report


def _print_example(example: Example) -> None:
    where = f"conversation {example.conversation_id}, turn {example.turn_index}"
    print(f"\nexample: {where} by {example.speaker}")
    for message in example.chat():
        content = message["content"].replace("\n", "\n    ")
        print(f"  [{message['role']}] {content}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load a dialogue dataset and show its splits.")
    parser.add_argument("path", type=Path, help="dataset file (.csv or .jsonl) or persona file (.yaml)")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    parser.add_argument("--speakers", default="both", choices=("both", *SPC_SPEAKERS))
    parser.add_argument("--max-history-turns", type=int, default=None)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args(argv)
    # The load summary is logged (WARNING when rows were skipped); show it once, on stdout.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        cfg = DataConfig(
            path=args.path,
            format=args.format,
            speakers=args.speakers,
            max_history_turns=args.max_history_turns,
            split_seed=args.split_seed,
        )
        splits, _ = read_splits(cfg)
    except (PersonaStudioError, ValidationError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"sha256 {fingerprint(cfg.path)}")
    for name, chosen in splits.items():
        examples = turn_examples(chosen, cfg.speakers, cfg.max_history_turns)
        print(f"{name:<10} {len(chosen):>6} conversations {len(examples):>7} examples")
    examples = turn_examples(splits["train"][:10], cfg.speakers, cfg.max_history_turns)
    if examples:
        _print_example(examples[min(2, len(examples) - 1)])  # a turn with some history, if any
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
