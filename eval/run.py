"""Evaluate a model version on held-out persona-chat turns; register its replies for labelling.

    python -m eval.run --model base --data ../shared/data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv \\
        --limit 200 --out results/
    python -m eval.run --model <version> --config eval/configs/quick.yaml   # a quick look

Each turn's reply is generated under the speaker's persona and the real dialogue so far
(batched, fixed decoding recorded in the output), then scored against the reference reply:
BLEU, ROUGE, BERTScore, perplexity of the reference, distinct-n, length, persona grounding and
a persona-swap probe. Writes `runs/<version>/eval/<timestamp>/` and an eval run in the store.
"""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

from core.cli import entry_point
from core.default_model import DEFAULT_MODEL
from core.errors import ConfigError, DatasetError
from core.versions import BASE, ancestors, find_version, list_versions, results_dir
from corpus.examples import Example, read_conversations, split_conversations, turn_examples
from engines.factory import load_engine
from eval.config import EvalConfig
from store import NewItem, Store
from store.records import prompt_key

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


def select_turns(cfg: EvalConfig) -> tuple[list[Example], dict]:
    """`sample_turns` without the turns whose prompts trained the version (`drop_trained_prompts`)."""
    examples, conversations = sample_turns(cfg)
    return drop_trained_prompts(cfg, examples, conversations)[0], conversations


def sample_turns(cfg: EvalConfig) -> tuple[list[Example], dict]:
    """A seeded sample of `limit` turns of the split, and the conversations by id. Turns of
    conversations the version was trained on are refused (or, with allow_overlap, counted)."""
    conversations, report = read_conversations(cfg.data.path, cfg.data.format)
    split = split_conversations(conversations, cfg.data.split_seed, cfg.data.split_fractions)[cfg.split]
    version = find_version(cfg.model, cfg.runs_dir)
    seen = version.train_conversation_ids() if version else set()
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


def label_items(name: str, examples, facts, replies, run_id: int | None = None) -> list[NewItem]:
    """Each reply as a label item: the turn's persona facts, the dialogue before it, the reply.
    Shared with the app's Organise tab (eval/jobs.py), so both queue the same items."""
    return [
        NewItem(
            source="eval",
            persona_name="persona-chat speaker",
            persona={"facts": own},
            # The system message is the persona (shown apart); a file without one has none to drop.
            context=ex.messages[1:] if ex.messages and ex.messages[0]["role"] == "system" else ex.messages,
            answer=reply,
            model_version=name,
            eval_run_id=run_id,
        )  # fmt: skip
        for ex, own, reply in zip(examples, facts, replies, strict=True)
    ]


def drop_trained_prompts(cfg: EvalConfig, examples: list[Example], conversations: dict) -> tuple[list[Example], int]:
    """(the turns left, how many were skipped): a turn whose prompt (persona + messages) trained
    the version or one of its ancestors through raters' labels (`lineage.json` prompt_keys) is
    skipped, as its labels would score the version on its own training data. Skipped after the
    seeded sample, so the turns left are a subset of what its parent is scored on."""
    version = find_version(cfg.model, cfg.runs_dir)
    chain = ancestors(version, cfg.runs_dir) if version else []
    trained = {key for v in chain for key in v.lineage().get("prompt_keys", [])}
    if not trained:
        return examples, 0
    from eval.evaluate import persona_facts

    # Keyed as the label items of these turns are (label_items), which is what the export recorded.
    items = label_items(cfg.model, examples, persona_facts(examples, conversations), [""] * len(examples))
    kept = [
        ex for ex, item in zip(examples, items, strict=True) if prompt_key(item.persona, item.context) not in trained
    ]
    skipped = len(examples) - len(kept)
    if skipped:
        log.warning("skipped %d of %d turns: their prompts trained %s (lineage.json prompt_keys)",
                    skipped, len(examples), cfg.model)  # fmt: skip
    if not kept:
        raise DatasetError(
            f"all {len(examples)} sampled turns have prompts that {cfg.model} was trained on (raters' labels)",
            "evaluate on another split or file (e.g. --split test when the labels came from validation), "
            "or another --seed / a larger --limit",
        )
    return kept, skipped


def register_outputs(store: Store, out: Path, name: str) -> int:
    """Register a finished run from its files (written with `--register_labels false`): the eval
    run under `name` and every reply as a label item of it, as `main` does; the rows get their
    item ids. The app's background evaluation (eval/run_job.py) runs `main` in a child process
    and registers here, in the app's store, only once the run has finished. Returns the run id."""
    import json

    import pandas as pd
    import yaml

    from eval.outputs import write_outputs

    summary = json.loads((out / "summary.json").read_text()) | {"model_version": name}
    cfg = EvalConfig.model_validate(yaml.safe_load((out / "config.yaml").read_text()))
    rows = pd.read_json(out / "rows.jsonl", lines=True, dtype=False)
    run_id = store.add_eval_run(name, str(out), cfg.model_dump(mode="json"), summary)
    items = [  # as label_items makes them: the turn's facts, the dialogue before it, the reply
        NewItem(source="eval", persona_name="persona-chat speaker",
                persona={"facts": facts.split("\n") if facts else []}, context=json.loads(context),
                answer=reply, model_version=name, eval_run_id=run_id)
        for facts, context, reply in zip(rows["persona"], rows["context"], rows["reply"], strict=True)
    ]  # fmt: skip
    rows["item_id"] = store.add_label_items(items)
    write_outputs(out, rows, summary, cfg)
    return run_id


def register(cfg: EvalConfig, name: str, examples, facts, replies, out: Path, summary: dict) -> list[int | None]:
    """One eval run in the store, and every reply as a label item of it; the items' ids."""
    if not cfg.register_labels:
        return [None] * len(examples)
    with Store(cfg.database_url) as store:
        run_id = store.add_eval_run(name, str(out), cfg.model_dump(mode="json"), summary)
        return store.add_label_items(label_items(name, examples, facts, replies, run_id))


@entry_point(EvalConfig, __doc__)
def main(cfg: EvalConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = version_name(cfg)
    examples, conversations = sample_turns(cfg)
    examples, skipped = drop_trained_prompts(cfg, examples, conversations)
    engine = load_engine(cfg)
    from eval.evaluate import evaluate, persona_facts  # transformers and friends: not needed for --help
    from eval.outputs import write_outputs

    out = Path(cfg.out) if cfg.out else results_dir(cfg.runs_dir, name, "eval")
    rows, summary = evaluate(cfg, name, engine, examples, conversations)
    summary["skipped_trained_prompts"] = skipped  # label-trained prompts left out (lineage.json)
    rows.insert(0, "item_id", None)
    write_outputs(out, rows, summary, cfg)  # before the store: a database problem loses no replies
    facts = persona_facts(examples, conversations)
    rows["item_id"] = register(cfg, name, examples, facts, rows["reply"].tolist(), out, summary)
    write_outputs(out, rows, summary, cfg)  # again, with the label item ids
    print((out / "table.md").read_text())
    print(f"written to {out} ({summary['items']} turns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
