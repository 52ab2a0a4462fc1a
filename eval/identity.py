"""Identity accuracy: asked wordings it never trained on, does the model answer as the persona?

    python -m eval.identity --model base --persona personas/nova.yaml
    python -m eval.identity --model nova-identity --persona personas/nova.yaml

The questions are the persona file's held-out paraphrases (`corpus/persona_data.py`: the test
split of the file as a dataset), each asked alone under the persona's system prompt with greedy
decoding. For a trained version the held-out settings it was trained with (its data.json) are
used, and a wording it was trained on is refused. The check (`states_identity`) is automatic,
from the reference answer's proper names (runs of capitalised words not opening a sentence, "I"
aside; matched in any case, a plural "s" ignored): an answer passes when it names the persona
(if the reference does) and at least half of those names, so "Who are you?" needs "Nova",
"Who made you?" needs "Brightline Energy", the opening hours two of the four days named. A
reference without proper names ("Bills, meter readings, ...") needs a third of its content
words instead. `identity_accuracy` is the share that pass. Every answer also goes to
the label queue so raters judge the same answers. Writes `runs/<version>/eval/<timestamp>/identity.json`.

As in chat, the persona's scope guard (`chatbot.scope`) sees each wording first (`--scope_guard`):
a wording of a `route: true` entry (Nova's opening hours, a gas leak) gets that entry's answer and
an off-topic one the deflection, the model not asked; each row says which (`guard`). The guard
is trained here without the held-out wordings, so they stay held out from it too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from pydantic import Field

from chatbot import scope
from core.cli import entry_point
from core.errors import DatasetError
from core.persona import Persona, load_persona
from core.versions import DATA_FILE, find_version, results_dir
from corpus.examples import DataConfig, Example, load_examples
from corpus.persona_data import HELDOUT_SHARE
from engines.config import EngineConfig, GreedySettings
from engines.factory import load_engine
from eval.config import EvalConfig
from eval.run import version_name
from store import NewItem, Store

log = logging.getLogger("eval")
RESULT_FILE = "identity.json"
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d[\d:.-]*")
# Words too common to show that an answer is about the reference's content.
_STOPWORDS_TEXT = """the and for you your are our was with that this not can from have has into out any all but
its who what how when where which will been were they them their there then than also just only"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


class IdentityConfig(EngineConfig):
    persona: Path = Field(description="Persona file whose held-out wordings are asked, e.g. personas/nova.yaml.")
    split_seed: int = Field(0, description="Held-out seed (a version's own training setting wins).")
    heldout_share: float = Field(HELDOUT_SHARE, description="Held-out share (a version's own setting wins).")
    batch_size: int = Field(8, ge=1, description="Prompts per generation batch.")
    generation: GreedySettings = Field(default_factory=GreedySettings)
    scope_guard: bool = Field(True, description="Ask the persona's scope guard first, as chat does.")
    register_labels: bool = Field(True, description="Put every answer in the label queue.")
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")
    out: str | None = Field(None, description="Output folder (default: runs/<version>/eval/<timestamp>/).")


def _stem(word: str) -> str:
    word = word.lower().strip("'-")
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def key_terms(reference: str) -> tuple[list[str], list[str]]:
    """(proper names, content words) of a reference answer, each lower-cased and stemmed."""
    names, content, run = [], [], []
    opening = True  # the first word of a sentence is capitalised anyway
    for token in re.findall(r"[A-Za-z][A-Za-z'-]*|\d[\d:.-]*|[.!?;:]", reference):
        capitalised = token[0].isupper() and token != "I" and not opening
        if run and not capitalised:  # a name ends at the first word that is not one
            names.append(" ".join(run))
            run = []
        if capitalised:
            run.append(_stem(token))
        if token[0].isalpha() and len(token) >= 3 and token.lower() not in _STOPWORDS:
            content.append(_stem(token))
        opening = token in ".!?;:"
    if run:
        names.append(" ".join(run))
    return list(dict.fromkeys(names)), list(dict.fromkeys(content))


def _said(text: str) -> str:
    return " ".join(_stem(word) for word in _WORD.findall(text))


def states_identity(answer: str, reference: str, persona_name: str | None = None) -> bool:
    """The module docstring's rule: the persona's name (when the reference has it) and at least
    half of the reference's proper names; without proper names, a third of its content words."""
    said = _said(answer)
    names, content = key_terms(reference)
    if names:
        found = [name for name in names if re.search(rf"\b{re.escape(name)}\b", said)]
        own = _said(persona_name) if persona_name else None
        return (own not in names or own in found) and 2 * len(found) >= len(names)
    words = set(said.split())
    return bool(content) and sum(word in words for word in content) * 3 >= len(content)


def heldout_examples(cfg: IdentityConfig) -> tuple[list[Example], dict]:
    """The held-out wordings as examples, and the settings that chose them."""
    data = DataConfig(path=cfg.persona, format="persona", split_seed=cfg.split_seed)
    data = data.model_copy(update={"persona_heldout_share": cfg.heldout_share})
    version = find_version(cfg.model, cfg.runs_dir)
    record = json.loads((version.run_dir / DATA_FILE).read_text()) if version and version.run_dir else {}
    for source in record.get("mix", [record]):
        if source.get("format") == "persona" and Path(source["path"]) == cfg.persona.resolve():
            update = {"split_seed": source["split_seed"], "persona_heldout_share": source["persona_heldout_share"]}
            data = data.model_copy(update=update)
            log.info("held-out settings of %s's training: %s", cfg.model, update)
    examples, _ = load_examples(data, "test")
    if not examples:
        raise DatasetError(
            f"persona file {cfg.persona} has no held-out wordings",
            "give its knowledge questions `paraphrases:` (two or more each) and a --heldout_share above 0",
        )
    seen = version.train_conversation_ids() if version else set()
    trained = [ex.messages[-1]["content"] for ex in examples if ex.conversation_id in seen]
    if trained:
        raise DatasetError(
            f"{len(trained)} held-out wordings were in {cfg.model}'s training data (e.g. {trained[0]!r})",
            "use the --split_seed and --heldout_share it was trained with",
        )
    return examples, {"split_seed": data.split_seed, "heldout_share": data.persona_heldout_share}


def guard_replies(persona: Persona, examples: list[Example]) -> list[scope.Guarded | None]:
    """The scope guard's reply to each wording (None: the model answers), from a classifier
    trained without these wordings; all None for a persona without a scope."""
    if persona.scope is None:
        return [None] * len(examples)
    questions = [ex.messages[-1]["content"] for ex in examples]
    fitted = scope.fit(persona, exclude=questions)
    return [scope.guard(persona, question, fitted) for question in questions]


def score(
    examples: list[Example], answers: list[str], persona_name: str, guarded: list[scope.Guarded | None] | None = None
) -> tuple[list[dict], dict]:
    """(one row per wording, the summary with `identity_accuracy` and its share per question).
    `guarded`: the guard's replies (`guard_replies`), to say per row who answered."""
    guarded = guarded or [None] * len(examples)
    rows = []
    for ex, answer, by in zip(examples, answers, guarded, strict=True):
        question = ex.messages[-1]["content"]
        rows.append(
            {
                "question": question,
                "reference": ex.target,
                "answer": answer,
                "passed": states_identity(answer, ex.target, persona_name),
                "guard": None if by is None else ("routed" if by.routed else "deflected"),
            }
        )
    by_reference: dict[str, list[bool]] = {}
    for row in rows:
        by_reference.setdefault(row["reference"], []).append(row["passed"])
    summary = {
        "identity_accuracy": sum(r["passed"] for r in rows) / len(rows),
        "items": len(rows),
        "per_answer": {ref: sum(passed) / len(passed) for ref, passed in by_reference.items()},
        "guard": {kind: sum(r["guard"] == kind for r in rows) for kind in ("routed", "deflected")},
    }
    return rows, summary


def register(cfg: IdentityConfig, name: str, persona: Persona, rows: list[dict], out: Path, summary: dict) -> None:
    """One eval run in the store (summary with identity_accuracy) and each answer as a label item."""
    with Store(cfg.database_url) as store:
        run_id = store.add_eval_run(name, str(out), cfg.model_dump(mode="json"), summary)
        items = [
            NewItem(
                source="eval",
                persona_name=persona.name,
                persona=persona.model_dump(),
                context=[{"role": "user", "content": row["question"]}],
                answer=row["answer"],
                model_version=name,
                eval_run_id=run_id,
            )  # fmt: skip
            for row in rows
        ]
        for row, item_id in zip(rows, store.add_label_items(items), strict=True):
            row["item_id"] = item_id


def latest_identity(runs_dir: str | Path, version: str) -> dict | None:
    """The newest identity result of `version` (its identity.json: summary, rows, config), or None."""
    files = sorted(Path(runs_dir).glob(f"{version}/eval/*/{RESULT_FILE}"), key=lambda p: p.parent.name)
    return json.loads(files[-1].read_text()) if files else None


@entry_point(IdentityConfig, __doc__)
def main(cfg: IdentityConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = version_name(EvalConfig(model=cfg.model, runs_dir=cfg.runs_dir))
    persona = load_persona(cfg.persona)
    examples, heldout = heldout_examples(cfg)
    guarded = guard_replies(persona, examples) if cfg.scope_guard else [None] * len(examples)
    asked = [ex.messages for ex, by in zip(examples, guarded, strict=True) if by is None]
    engine = load_engine(cfg)
    log.info("asking %s %d held-out wordings of %s's questions (%d answered by the scope guard)",
             engine.name, len(asked), persona.name, len(examples) - len(asked))  # fmt: skip
    generated = iter(engine.generate(asked, cfg.generation, batch_size=cfg.batch_size, progress=True) if asked else [])
    answers = [next(generated) if by is None else by.reply for by in guarded]
    rows, summary = score(examples, answers, persona.name, guarded)
    summary |= {"model_version": name, "persona": persona.name, "heldout": heldout}
    out = Path(cfg.out) if cfg.out else results_dir(cfg.runs_dir, name, "eval")
    out.mkdir(parents=True, exist_ok=True)
    result = {"summary": summary, "rows": rows, "config": cfg.model_dump(mode="json")}
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2, ensure_ascii=False))  # before the store
    if cfg.register_labels:
        register(cfg, name, persona, rows, out, summary)
        (out / RESULT_FILE).write_text(json.dumps(result, indent=2, ensure_ascii=False))  # with the item ids
    passed = sum(r["passed"] for r in rows)
    print(f"{name}: identity accuracy {summary['identity_accuracy']:.1%} ({passed}/{len(rows)} held-out wordings; "
          f"scope guard: {summary['guard']['routed']} routed, {summary['guard']['deflected']} deflected)")  # fmt: skip
    for reference, share in summary["per_answer"].items():
        print(f"  {share:6.1%}  {reference}")
    print(f"written to {out / RESULT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
