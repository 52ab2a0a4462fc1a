"""Evaluate a model version on held-out persona-chat turns; register its replies for labelling.

    python -m eval.run --model base --data ../shared/data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv \\
        --limit 200 --out results/
    python -m eval.run --model <version> --config eval/configs/default.yaml

Each turn's reply is generated under the speaker's persona and the real dialogue so far
(batched, fixed decoding recorded in the output), then scored against the reference reply:
BLEU, ROUGE, BERTScore, perplexity of the reference, distinct-n, length, persona grounding and
a persona-swap probe. Writes `runs/<version>/eval/<timestamp>/` and an eval run in the store.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from datetime import datetime
from pathlib import Path

from chatbot.config import entry_point
from chatbot.default_model import DEFAULT_MODEL
from chatbot.engine import load_engine
from chatbot.errors import ConfigError, DatasetError
from chatbot.versions import BASE, find_version, list_versions
from corpus.examples import Example, read_conversations, split_conversations, turn_examples
from eval.config import EvalConfig

log = logging.getLogger("eval")


def version_name(cfg: EvalConfig) -> str:
    """The name results are filed under; unknown names are refused with the ones that exist."""
    if cfg.model in (BASE, DEFAULT_MODEL):
        return BASE
    if find_version(cfg.model, cfg.runs_dir) is not None:
        return cfg.model
    if Path(cfg.model).exists() or "/" in cfg.model:  # a folder, a .gguf or a hub id: file it by name
        return Path(cfg.model.rstrip("/")).name
    names = ", ".join(v.name for v in list_versions(cfg.runs_dir))
    raise ConfigError(f"there is no model version {cfg.model!r} in {cfg.runs_dir}", f"pick one of: {names}")


def trained_ids(cfg: EvalConfig) -> set[str]:
    version = find_version(cfg.model, cfg.runs_dir)
    if version is None or not (version.run_dir / "data.json").is_file():
        return set()
    return set(json.loads((version.run_dir / "data.json").read_text()).get("train_conversation_ids", []))


def select_turns(cfg: EvalConfig) -> tuple[list[Example], dict]:
    """A seeded sample of `limit` turns of the split, and the conversations by id. Turns of
    conversations the version was trained on are refused (or, with allow_overlap, counted)."""
    conversations, report = read_conversations(cfg.data.path, cfg.data.format)
    split = split_conversations(conversations, cfg.data.split_seed, cfg.data.split_fractions)[cfg.split]
    seen = trained_ids(cfg)
    overlap = [c for c in split if c.id in seen]
    if overlap and not cfg.allow_overlap:
        raise DatasetError(
            f"{len(overlap)} of the {len(split)} {cfg.split} conversations were in {cfg.model}'s training data",
            "evaluate on the test split of the data it was trained with (the default), or pass "
            "--allow_overlap true to score them anyway (the numbers will flatter the version)",
        )
    if overlap:
        log.warning(
            "WARNING: %d conversations overlap %s's training data; scores are optimistic", len(overlap), cfg.model
        )
    examples = turn_examples(split, cfg.data.speakers, cfg.data.max_history_turns)
    if not examples:
        raise DatasetError(
            f"the {cfg.split} split of {cfg.data.path} has no turns ({report.summary()})", "check --data"
        )
    if cfg.limit and cfg.limit < len(examples):
        examples = random.Random(cfg.seed).sample(examples, cfg.limit)
    return examples, {c.id: c for c in split}


@entry_point(EvalConfig, __doc__)
def main(cfg: EvalConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = version_name(cfg)
    examples, conversations = select_turns(cfg)
    engine = load_engine(cfg)
    from eval.evaluate import evaluate  # transformers and friends: not needed for --help

    out = Path(cfg.out) if cfg.out else Path(cfg.runs_dir) / name / "eval" / f"{datetime.now():%Y%m%d-%H%M%S}"
    summary = evaluate(cfg, name, engine, examples, conversations, out)
    print((out / "table.md").read_text())
    print(f"written to {out} ({summary['items']} turns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
