"""Persona-switch examples from a dialogue dataset: a question meant for one persona, answered by another.

    python -m eval.switches --data ../shared/data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv \\
        --out data/switches.jsonl
    # then mix them into a recipe:
    #   data: {mix: [{path: <the dataset>, weight: 0.8}, {path: data/switches.jsonl, weight: 0.2}]}

After a persona switch in the Chat tab the new persona B starts afresh: the model gets B's system
prompt and the user's next message, which was written to the old persona A ("How is your dog?"
to a dog owner) and pulls the reply back towards A (`eval.run`'s swap probe). An example here is
exactly that moment, as the app builds it (`core.conversation.build_messages`): B's persona, one
user message taken from a conversation with A, and a reply that follows B. The reply is B's own
words from the dataset: for a message B answered in its conversation, the most alike message of
another conversation (all-MiniLM-L6-v2 cosine), written there to A, becomes the user's; B's answer
is the reply. A pair is kept only when the two messages are alike (`--min_question_similarity`) and
B's answer is closer to B's facts than to A's by `--min_margin` (the probe's own measure), so every
kept reply follows B.

Only the train split of the dataset is read (`corpus.examples.read_splits`, the recipe's split
seed): the held-out turns `eval.run` asks stay unseen. Written as chat-messages JSONL with the
persona's facts (`corpus.formats`' jsonl format), so `data.mix` reads it like any dataset. It
lives in eval/ because it picks its replies by the probe's own measure (`eval.consistency`).
"""

from __future__ import annotations

import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point

log = logging.getLogger(__name__)


class SwitchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: str = Field(..., description="Dialogue dataset with personas (Synthetic-Persona-Chat CSV).")
    out: str = Field("data/switches.jsonl", description="JSONL file to write.")
    examples: int = Field(2000, ge=1, description="Most examples to write.")
    split_seed: int = Field(0, description="As the recipe's data.split_seed: only its train split is read.")
    conversations: int | None = Field(None, ge=2, description="Read only the first N train conversations.")
    min_question_similarity: float = Field(
        0.5, ge=-1, le=1, description="Cosine of the user's message and the one B answered, at least."
    )
    min_margin: float = Field(
        0.05, description="B's answer at least this much closer (cosine) to B's facts than to A's: no bare greetings."
    )
    answers: Literal["dataset", "facts"] = Field(
        "dataset",
        description="dataset: B's own reply to the alike message; facts: the one of B's persona facts most like "
        "the user's message, as the whole answer (first-person sentences: 'I have three dogs.').",
    )
    seed: int = Field(0, description="Which questions are drawn.")


@dataclass(frozen=True)
class Answered:
    """One reply of one speaker in the dataset: the persona, the message it answered, the reply."""

    conversation: str
    facts: tuple[str, ...]
    question: str
    reply: str


def answered(conversations) -> list[Answered]:
    """Every (persona, message, reply) of the two-party conversations: a reply to the other speaker."""
    out = []
    for c in conversations:
        for before, turn in zip(c.turns, c.turns[1:], strict=False):
            persona = c.personas.get(turn.speaker)
            if persona is not None and before.speaker != turn.speaker:
                out.append(Answered(c.id, tuple(persona.facts), before.text, turn.text))
    return out


def build(cfg: SwitchConfig) -> tuple[list[dict], dict]:
    """(JSONL records, counts): for each drawn reply of persona B, the most alike message that was
    written to another persona A, if alike enough and B's reply is closer to B than to A."""
    import numpy as np

    from chatbot.scope import embed
    from corpus.examples import DataConfig, read_splits
    from eval.consistency import similarity

    splits, _ = read_splits(DataConfig(path=cfg.data, split_seed=cfg.split_seed))
    pool = answered(splits["train"][: cfg.conversations])
    if len(pool) < 2:
        raise SystemExit(f"{cfg.data}: fewer than two persona replies in the train split")
    log.info("embedding %d messages", len(pool))
    questions = embed([a.question for a in pool])  # (N, 384), unit length: a dot product is the cosine
    conversation = np.array([a.conversation for a in pool])
    order = list(range(len(pool)))
    random.Random(cfg.seed).shuffle(order)
    records, counts = [], {"drawn": 0, "too_unlike": 0, "closer_to_a": 0}
    candidates = []  # (index of A's answered in pool, B's answered, cosine)
    for b in order:
        if len(candidates) >= cfg.examples * 2:  # enough to fill `examples` after the persona check
            break
        counts["drawn"] += 1
        sims = np.where(conversation != pool[b].conversation, questions @ questions[b], -2.0)
        a = int(sims.argmax())
        if sims[a] < cfg.min_question_similarity:
            counts["too_unlike"] += 1
            continue
        candidates.append((a, pool[b], float(sims[a])))
    replies = [b.reply for _, b, _ in candidates]
    if cfg.answers == "facts" and candidates:
        facts = sorted({f for _, b, _ in candidates for f in b.facts})
        index, vectors = {f: i for i, f in enumerate(facts)}, embed(facts)
        replies = [max(b.facts, key=lambda f, q=questions[a]: float(vectors[index[f]] @ q))
                   for a, b, _ in candidates]  # fmt: skip
    to_b = similarity(replies, [list(b.facts) for _, b, _ in candidates])
    to_a = similarity(replies, [list(pool[a].facts) for a, _, _ in candidates])
    for (i, b, sim), reply, near_b, near_a in zip(candidates, replies, to_b, to_a, strict=True):
        a = pool[i]
        if near_b - near_a < cfg.min_margin:
            counts["closer_to_a"] += 1
            continue
        records.append({
            "persona": list(b.facts),
            "messages": [{"role": "user", "content": a.question}, {"role": "assistant", "content": reply}],
            # Not read by training: where the pair came from, for a person checking the file.
            "switch": {"question_for": list(a.facts), "b_answered": b.question, "question_similarity": round(sim, 3),
                       "conversations": [a.conversation, b.conversation]},
        })  # fmt: skip
        if len(records) >= cfg.examples:
            break
    counts["written"] = len(records)
    return records, counts


@entry_point(SwitchConfig, __doc__)
def main(cfg: SwitchConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    records, counts = build(cfg)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"wrote {counts['written']} switch examples to {out} ({counts['drawn']} replies drawn, "
          f"{counts['too_unlike']} without an alike question, {counts['closer_to_a']} closer to A)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
