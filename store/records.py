"""The allowed values, and what the store takes or hands back that is not one table row:
`NewItem` (an answer to register), `BlindItem`, `LabelRow` (a join), `Progress`, `Next` (what a
rater labels next), `Labelled` (what a label did), `NewPreference` (an A/B vote to record) and
`PreferenceRow` (a join); and the checks of the allowed values. The rows (`Turn`, `Item`,
`EvalRun`) are declared once, in `store.schema`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

from store.db import StoreError

if TYPE_CHECKING:  # store.schema builds its records on this module's values
    from store.schema import Item

Verdict = Literal["good", "bad"]
VERDICTS = ("good", "bad")
# A blind A/B vote: A better, B better, both as good, both bad.
Vote = Literal["a", "b", "tie", "both_bad"]
VOTES = ("a", "b", "tie", "both_bad")
CONVERSATION_SOURCES = ("chat", "compare", "eval")
ITEM_SOURCES = ("chat", "eval")
# `notice` is a system notice shown in the chat ("switched to model v2"), not a prompt.
ROLES = ("user", "assistant", "system", "notice")
# Why the user took a turn back: both take back the last exchange; retry then sends it again.
WITHDRAW_REASONS = ("undo", "retry")
WithdrawReason = Literal["undo", "retry"]


def prompt_key(persona: dict, context: list[dict]) -> str:
    """The same question (persona and the messages before the answer) -> the same key, whatever
    version answered it: what training exports record and scoring excludes."""
    content = [persona, [{"role": m["role"], "content": m["content"]} for m in context]]
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class NewItem:
    """An answer to put in front of raters: the persona, the messages so far, the answer."""

    source: str  # "chat" | "eval"
    persona_name: str
    persona: dict  # Persona.model_dump()
    context: list[dict]  # the messages before the answer, {"role", "content"}
    answer: str
    model_version: str
    conversation_id: int | None = None
    eval_run_id: int | None = None
    priority: int = 0  # higher comes first in the queue (eval.regress: 1 for failed/changed replies)

    @property
    def key(self) -> str:
        """Same question to raters -> same key, so registering an answer twice is a no-op
        (except that a higher priority raises the stored one). Where the answer came from
        (conversation, eval run) and its priority are not part of the question."""
        content = [self.source, self.model_version, self.persona, self.context, self.answer]
        return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class BlindItem:
    """What a rater may see: no model version, no source, no priority."""

    id: int
    persona: dict
    context: list[dict]
    answer: str


@dataclass(frozen=True)
class LabelRow:
    item_id: int
    rater: str
    verdict: Verdict
    comment: str
    model_version: str
    source: str
    created_at: datetime  # first verdict on this item by this rater
    updated_at: datetime  # last change (a relabel moves it)


@dataclass(frozen=True)
class RepeatRow:
    """A rater's two verdicts on an item shown to them twice (store.quality): `first` is their
    label, `again` the verdict on the repeat."""

    item_id: int
    rater: str
    first: Verdict
    again: Verdict
    answered_at: datetime


class Progress(NamedTuple):
    done: int  # items this rater labelled
    total: int  # done + items still available to them


class Next(NamedTuple):
    """What the rater labels next (None: nothing left) and how far they are: what the Label tab shows."""

    item: Item | None
    progress: Progress


@dataclass(frozen=True)
class Labelled:
    """What `Store.label` did: the label (committed); with `and_next`, the rater's next item and
    progress (`next`) or, when none could be assigned, why (`next_error`)."""

    label: LabelRow
    next: Next | None = None
    next_error: StoreError | None = None


@dataclass(frozen=True)
class NewPreference:
    """A rater's vote between two versions' replies to the same persona and messages. A and B
    are as the rater saw them (the blind order), so `vote` "a" means `reply_a` and `version_a`."""

    persona_name: str
    persona: dict  # Persona.model_dump()
    context: list[dict]  # the messages before the replies, {"role", "content"}, the user message last
    reply_a: str
    reply_b: str
    version_a: str
    version_b: str
    vote: Vote
    rater: str
    # The Compare tab's stored conversations the replies belong to (None: they came from a script).
    conversation_a: int | None = None
    conversation_b: int | None = None


@dataclass(frozen=True)
class PreferenceRow:
    """A stored vote, with its rater's name."""

    id: int
    rater: str
    persona_name: str
    persona: dict
    context: list[dict]
    reply_a: str
    reply_b: str
    version_a: str
    version_b: str
    vote: Vote
    created_at: datetime


def check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise StoreError(f"{what} {value!r} is not one of {', '.join(allowed)}", f"pass one of {', '.join(allowed)}")


def check_verdict(verdict: str) -> None:
    if verdict not in VERDICTS:
        raise StoreError(f"a verdict must be 'good' or 'bad', not {verdict!r}", "label the answer good or bad")


def check_overlap(overlap: int) -> None:
    if overlap < 1:
        raise StoreError(f"overlap must be at least 1, not {overlap}", "ask for 1 (each item labelled once) or more")


def rater_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise StoreError("the rater name is empty", "type your name before labelling")
    return name
