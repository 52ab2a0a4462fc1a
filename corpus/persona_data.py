"""A persona file as a dataset: its knowledge Q&A (and facts) as chat examples for identity training.

    python -m corpus.examples personas/nova.yaml      # row counts per split, one example

Every wording of a question is one single-turn conversation (system = the persona's system
prompt, the one chat uses; user = the wording; assistant = the answer). Wordings come from:

- the entry's `question` and its `paraphrases` (personas/nova.yaml has 10-12 per question);
- variations the product adds to every trained wording (`VARIATIONS`): all lower case without
  the final punctuation, "Hi! " before it, "Quick question: " before it, " Thanks!" after it;
- the facts: "Tell me about yourself." and `FACT_QUESTIONS`, answered by the facts in order.

Held out: per knowledge entry, `heldout_share` of its paraphrases (rounded, at least one when
it has two or more), those with the lowest sha256 of (seed, wording). They form the `test`
split, never varied and never trained on (a trained wording that normalises to a held-out one
is dropped); `eval.identity` asks them. The question itself and the facts wordings always
train. A new paraphrase moves at most one other between train and test. Persona files have
no validation split: the validation loss of a mix comes from its dialogue sources.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from core.persona import Persona, QAPair, load_persona, render_system_prompt
from corpus.formats import DialogueRow, LoadReport, Utterance

PERSONA_SUFFIXES = (".yaml", ".yml")
HELDOUT_SHARE = 0.25
FACTS_QUESTION = "Tell me about yourself."
FACT_QUESTIONS = ("What should I know about you?", "Describe yourself.", "Say a few words about yourself.")


def _lower_bare(text: str) -> str:
    return text.lower().rstrip(" ?.!")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# Name -> wording. Simple surface changes a user types; the meaning stays the same.
VARIATIONS = {
    "lower_bare": _lower_bare,
    "hi": lambda text: f"Hi! {text}",
    "quick_question": lambda text: f"Quick question: {_lower_first(text)}",
    "thanks": lambda text: f"{text} Thanks!",
}


def is_persona_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PERSONA_SUFFIXES


def normalize(text: str) -> str:
    """Lower case, punctuation removed, spaces collapsed: two wordings that differ only there are one."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass(frozen=True)
class Phrasing:
    question: str  # the knowledge entry's own question (FACTS_QUESTION for the facts)
    text: str  # what the user types
    answer: str
    heldout: bool
    variation: str | None = None  # a VARIATIONS name when the product made this wording


def heldout_paraphrases(entry: QAPair, seed: int, share: float) -> list[str]:
    """The paraphrases of `entry` kept out of training, in file order."""
    n = len(entry.paraphrases)
    k = 0
    if n >= 2 and share > 0:  # at least one held out, at least one trained
        k = min(n - 1, max(1, round(share * n)))
    rank = sorted(entry.paraphrases, key=lambda p: hashlib.sha256(f"{seed}:{normalize(p)}".encode()).hexdigest())
    chosen = set(rank[:k])
    return [p for p in entry.paraphrases if p in chosen]


def _facts_entry(persona: Persona) -> QAPair:
    return QAPair(question=FACTS_QUESTION, answer=" ".join(persona.facts), paraphrases=list(FACT_QUESTIONS))


def phrasings(persona: Persona, seed: int = 0, heldout_share: float = HELDOUT_SHARE, variations: bool = True):
    """Every wording of every question, held-out ones first. A normalised wording belongs to
    the first question that has it (two answers never compete for one question), and a trained
    wording that normalises to a held-out one is dropped."""
    heldout, trained = [], []
    for entry in persona.knowledge:
        held = set(heldout_paraphrases(entry, seed, heldout_share))
        for text in [entry.question, *entry.paraphrases]:
            (heldout if text in held else trained).append(Phrasing(entry.question, text, entry.answer, text in held))
    facts = _facts_entry(persona)
    trained += [Phrasing(facts.question, text, facts.answer, False) for text in [facts.question, *facts.paraphrases]]
    if variations:
        trained += [
            Phrasing(p.question, vary(p.text), p.answer, False, name)
            for p in list(trained)
            for name, vary in VARIATIONS.items()
        ]
    held = {normalize(p.text) for p in heldout}  # a trained twin of a held-out wording is dropped
    owner: dict[str, str] = {}  # normalised wording -> the first question that has it
    kept, texts = list(heldout), set()
    for p in trained:
        key = normalize(p.text)
        if key in held or owner.setdefault(key, p.question) != p.question or p.text in texts:
            continue
        kept.append(p)
        texts.add(p.text)
    return kept


def _conversation(persona: Persona, system: str, number: int, p: Phrasing) -> DialogueRow:
    # The id hashes the persona's name and the normalised wording only: editing an answer or a
    # fact keeps ids stable, and eval's overlap check (ids) also catches a case/punctuation twin.
    digest = hashlib.sha256(f"persona:{persona.name}:{normalize(p.text)}".encode()).hexdigest()
    turns = (Utterance("user", p.text), Utterance("assistant", p.answer))
    return DialogueRow(id=digest[:16], row=number, turns=turns, system=system)


def persona_splits(
    path: str | Path, seed: int = 0, heldout_share: float = HELDOUT_SHARE, variations: bool = True
) -> tuple[dict[str, list[DialogueRow]], LoadReport]:
    """{"train": trained wordings, "validation": [], "test": held-out wordings} of a persona file."""
    persona = load_persona(path)
    system = render_system_prompt(persona)
    splits: dict[str, list[DialogueRow]] = {"train": [], "validation": [], "test": []}
    for number, p in enumerate(phrasings(persona, seed, heldout_share, variations), 1):
        splits["test" if p.heldout else "train"].append(_conversation(persona, system, number, p))
    rows = sum(map(len, splits.values()))
    return splits, LoadReport(str(path), "persona", rows, rows, 0, ())


def check_share(share: float) -> float:
    if not (math.isfinite(share) and 0 <= share < 1):
        raise ValueError(f"persona_heldout_share must be in [0, 1), e.g. 0.25, not {share}")
    return share
