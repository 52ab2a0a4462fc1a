"""A simulated rater: labels an eval run's answers good or bad by one stated rule, so the
label -> export -> KTO loop can be run (and measured) without people.

    python -m eval.simulated_rater --rows runs/my-sft/eval/20261201-101500/rows.jsonl

The rule: an answer is good when it uses at least one content word of its persona's facts
(a lower-case word of 4+ letters outside a stop list, a trailing "s" dropped), and bad when
it ignores every fact. A crude proxy for "stays in persona", nothing more: it cannot see a
contradiction or a bad answer that happens to name a fact. Each answer's label item (the
`item_id` column eval.run writes) gets the verdict under `--rater`; the share of good answers
is printed (and is that rater's human accuracy for the version in the Results tab).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.errors import DatasetError

# fmt: off
STOP = frozenset({
    "about", "after", "also", "been", "before", "being", "could", "does", "doing", "from", "have", "having",
    "here", "just", "like", "love", "make", "many", "more", "most", "much", "only", "other", "over", "really",
    "some", "such", "than", "that", "their", "them", "then", "there", "these", "they", "this", "very", "want",
    "well", "were", "what", "when", "where", "which", "while", "with", "would", "your", "yours",
})
# fmt: on
WORD = re.compile(r"[a-z][a-z']+")


class RaterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: Path = Field(description="rows.jsonl of an eval.run (its item_id, persona and reply columns).")
    rater: str = Field("simulated", description="Rater name the labels are stored under.")
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")
    dry_run: bool = Field(False, description="Only print the verdicts' share; store nothing.")


def content_words(text: str) -> set[str]:
    return {w.removesuffix("s") for w in WORD.findall(text.lower()) if len(w) >= 4 and w not in STOP}


def verdict(persona_facts: str, reply: str) -> str:
    """ "good" when the reply uses a content word of the facts, else "bad"."""
    return "good" if content_words(persona_facts) & content_words(reply) else "bad"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"{path} does not exist", "pass the rows.jsonl of an eval.run (runs/<version>/eval/<time>/)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@entry_point(RaterConfig, __doc__)
def main(cfg: RaterConfig) -> int:
    rows = read_rows(cfg.rows)
    verdicts = [verdict(row["persona"], row["reply"]) for row in rows]
    if not cfg.dry_run:
        from store import Store

        ids = [row.get("item_id") for row in rows]
        if any(i is None for i in ids):
            raise DatasetError(
                f"{cfg.rows} has answers without a label item (eval.run --register_labels false?)",
                "run eval.run with its default --register_labels true, or pass --dry_run true",
            )
        with Store(cfg.database_url) as store:
            for item_id, value in zip(ids, verdicts, strict=True):
                store.label(int(item_id), cfg.rater, value)
    good = verdicts.count("good")
    print(f"{cfg.rater}: {good} of {len(verdicts)} answers good ({good / max(len(verdicts), 1):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
