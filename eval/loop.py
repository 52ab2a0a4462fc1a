"""The label loop without people: rounds of sample -> label by a rule -> export -> train the child
-> score it against its parent on held-out prompts, each step through the commands people run.

    python -m eval.loop --data ../shared/data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv \\
        --rule persona_facts --rounds 2 --out runs/loop

Per round, from the parent version (round 1: `--start`, or a `start` version made here: the base
model with a fresh LoRA adapter, one SFT step at a negligible learning rate, since KTO/DPO continue
an adapter):

1. the parent answers `train_prompts` turns of the validation split, `samples` times each at
   `temperature` (good and bad replies to the same prompt to contrast); the replies are queued as
   the Organise tab queues them (`eval.run.label_items`, `Store.add_label_items`);
2. a simulated rater labels each by the rule (`eval.simulated_rater.verdict`) and votes A/B between
   sample 1 and 2, 3 and 4, ... of each prompt (the rule's preference; a tie when both are equal);
3. `eval.export_labels --format kto|dpo --version PARENT`, `training.train --method kto|dpo
   --from_version PARENT` (the child);
4. `eval.run` on `heldout_prompts` turns of the test split (conversations no round samples from)
   for the child (and, in round 1, the parent), `eval.simulated_rater` labels them, A/B votes child
   vs parent by the rule, and `eval.report --versions CHILD,PARENT` prints the scorecard.

Training labels and held-out labels live in two stores (`train.db`, `heldout.db` under `--out`):
the export takes every label of the parent, and a held-out label in it would train round 2 on the
prompts that score it. Every round's numbers are printed at the end and written to `loop.md`/`.json`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.default_model import DEFAULT_MODEL
from core.errors import ConfigError
from corpus.examples import DataConfig
from corpus.hub import DEFAULT_DATASET
from eval.simulated_rater import verdict
from store import NewPreference, Store
from store.votes import votable  # the store's own rule: a vote answers a user message

log = logging.getLogger("eval.loop")

RECIPES = Path(__file__).resolve().parent.parent / "training" / "recipes"
START = "start"  # the version round 1 starts from when no --start is given


class LoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: Literal["persona_facts"] = Field(
        "persona_facts", description="The rater's rule: persona_facts = good when a reply uses a fact's content word."
    )
    model: str = Field(DEFAULT_MODEL, description="Base model of the start version (`default`, a folder, a hub id).")
    data: Path = Field(DEFAULT_DATASET, description="Persona-chat file: validation split to train, test to score.")
    max_history_turns: int | None = Field(4, ge=0, description="Dialogue turns before each prompt (shorter: faster).")
    out: Path = Field(Path("runs/loop"), description="Folder of everything: versions (runs/), stores, rounds.")
    start: str | None = Field(None, description="Version (with an adapter, in OUT/runs) round 1 starts from.")
    rounds: int = Field(1, ge=1, description="Rounds; round r trains on round r-1's child.")
    first_round: int = Field(
        1, ge=1, description="Number of the first round: >1 continues the loop in OUT from --start (the last child)."
    )
    method: Literal["kto", "dpo"] = Field("dpo", description="Export format and training method.")
    train_prompts: int = Field(64, ge=1, description="Validation turns the parent answers per round.")
    samples: int = Field(4, ge=2, description="Sampled replies per training prompt (votes: samples // 2).")
    temperature: float = Field(1.0, gt=0, le=5, description="Sampling temperature of the training replies.")
    heldout_prompts: int = Field(200, ge=1, description="Test turns both versions answer (greedy) for the scorecard.")
    max_new_tokens: int = Field(48, ge=1, description="Most tokens per reply, training and held-out.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    learning_rate: float = Field(5e-4, gt=0, description="KTO/DPO peak learning rate (LoRA).")
    beta: float = Field(0.1, gt=0, description="KTO/DPO beta: how far the child may move from its parent.")
    max_steps: int = Field(30, ge=1, description="Optimizer steps per round.")
    per_device_train_batch_size: int = Field(4, ge=2, description="Pairs (dpo) or answers (kto) per step.")
    max_seq_length: int = Field(256, ge=16, description="Training sequence length (prompt cut to fit).")
    recipe: Path = Field(RECIPES / "smollm2-135m-kto-cpu.yaml", description="training.train recipe of each child.")
    start_recipe: Path = Field(RECIPES / "smollm2-135m-lora-cpu.yaml", description="Recipe of the start version.")
    start_trained: bool = Field(
        False,
        description="Round 1's parent: the start recipe trained as written (the default SFT version, ~6 min on "
        "2 cores) instead of the base model with an identity adapter.",
    )
    train_args: list[str] = Field(default_factory=list, description="More training.train flags, e.g. [--seed,1].")
    rater: str = Field("simulated", description="Rater name of the labels and votes.")
    seed: int = Field(0, description="Seed of the prompt samples (round r: seed + r) and of sampling.")
    n_resamples: int = Field(2000, ge=100, description="Bootstrap resamples of the scorecard's intervals.")


def run_step(main, flags: dict, extra: list[str] = ()) -> None:
    """One command's `main(argv)` with `--key value` flags (then `extra` as they are), as a person
    would type it; a refusal stops the loop."""
    args = [str(a) for key, value in flags.items() for a in (f"--{key}", value)] + list(extra)
    log.info("$ python -m %s %s", main.__module__, " ".join(args))
    if main(args) != 0:
        raise RuntimeError(f"python -m {main.__module__} {' '.join(args)} failed (its error is printed above)")


def db_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def make_start(cfg: LoopConfig, runs: Path) -> str:
    """`start`: with `start_trained`, the start recipe trained as written (what a team labels after
    its first SFT run); otherwise the base model with a LoRA adapter that is still (almost) the
    identity: one SFT step at lr 1e-9 on 4 train-split conversations. KTO/DPO need an adapter."""
    from training.train import main as train_main

    if not (runs / START).is_dir():
        flags = {"config": cfg.start_recipe, "model.name": cfg.model, "data.path": cfg.data,
                 "output.dir": runs, "output.version": START}  # fmt: skip
        if not cfg.start_trained:  # validation: one example (it runs before and after the step)
            flags |= {"data.limit": 4, "validation.max_examples": 1, "max_steps": 1, "sft.learning_rate": 1e-9,
                      "sft.warmup_steps": 0}  # fmt: skip
        run_step(train_main, flags)
    return START


def eval_config(cfg: LoopConfig, runs: Path, version: str, rnd: int):
    from engines.config import GreedySettings
    from eval.config import EvalConfig

    data = DataConfig(path=cfg.data, max_history_turns=cfg.max_history_turns)
    sampling = GreedySettings(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + rnd)
    return EvalConfig(
        model=version,
        runs_dir=str(runs),
        data=data,
        split="validation",
        limit=cfg.train_prompts,
        seed=cfg.seed + rnd,
        batch_size=cfg.batch_size,
        generation=sampling,
    )


def rule_vote(facts: str, reply_a: str, reply_b: str) -> str:
    """The rule's A/B preference: the good reply over the bad one, a tie when both are equal."""
    a, b = verdict(facts, reply_a), verdict(facts, reply_b)
    return "tie" if a == b else "a" if a == "good" else "b"


def sample_and_rate(cfg: LoopConfig, runs: Path, parent: str, rnd: int, store: Store) -> dict:
    """Steps 1-2: the parent's sampled replies queued, labelled and voted on by the rule."""
    from engines.factory import load_engine
    from eval.evaluate import generate, persona_facts
    from eval.run import label_items, select_turns

    ecfg = eval_config(cfg, runs, parent, rnd)
    examples, conversations = select_turns(ecfg)  # prompts an ancestor trained on are left out
    engine = load_engine(ecfg)
    repeated = [ex for ex in examples for _ in range(cfg.samples)]  # (prompt, sample) order
    started = time.monotonic()
    replies = generate(engine, repeated, ecfg)
    generate_s = time.monotonic() - started
    del engine
    facts = persona_facts(repeated, conversations)
    items = label_items(parent, repeated, facts, replies)
    ids = store.add_label_items(items)  # what the Organise tab's job does with each batch
    good = 0
    for item_id, own, reply in zip(ids, facts, replies, strict=True):
        value = verdict("\n".join(own), reply)
        store.label(item_id, cfg.rater, value)
        good += value == "good"
    votes = []
    for first in range(0, len(items) - 1, 2):
        if first // cfg.samples != (first + 1) // cfg.samples:  # an odd sample count: not across prompts
            continue
        a, b = items[first], items[first + 1]
        if not votable(a.context):
            continue
        vote = rule_vote("\n".join(facts[first]), a.answer, b.answer)
        store.add_preference(
            NewPreference(a.persona_name, a.persona, a.context, a.answer, b.answer, parent, parent, vote, cfg.rater)
        )
        votes.append(vote)
    return {
        "prompts": len(examples),
        "replies": len(replies),
        "labels": len(set(ids)),
        "good": good,
        "votes": len(votes),
        "votes_decided": sum(v != "tie" for v in votes),
        "generate_s": round(generate_s),
    }


def heldout(cfg: LoopConfig, runs: Path, version: str, out: Path, db: str) -> Path:
    """`eval.run` of the version on the held-out test turns (greedy), labelled by the rule."""
    from eval.run import main as eval_main
    from eval.simulated_rater import main as rater_main

    flags = {"model": version, "runs_dir": runs, "data": cfg.data, "split": "test",
             "data.max_history_turns": json.dumps(cfg.max_history_turns), "limit": cfg.heldout_prompts,
             "seed": cfg.seed, "batch_size": cfg.batch_size, "generation.max_new_tokens": cfg.max_new_tokens,
             "swap_probe_items": 0, "hits_items": 0, "consistency": "false",
             "database_url": db, "out": out}  # fmt: skip
    run_step(eval_main, flags)
    run_step(rater_main, {"rows": out / "rows.jsonl", "rater": cfg.rater, "database_url": db})
    return out / "rows.jsonl"


def heldout_votes(cfg: LoopConfig, child: str, parent: str, child_rows: Path, parent_rows: Path, db: str) -> int:
    """A/B votes child vs parent on each held-out turn both answered, by the rule; the blind order
    alternates. Returns the number of votes."""
    read = lambda p: pd.read_json(p, lines=True, dtype=False)  # noqa: E731
    rows = read(child_rows).merge(read(parent_rows), on=["persona", "context"], suffixes=("_c", "_p"))
    rows = rows[[votable(json.loads(c)) for c in rows["context"]]]
    with Store(db) as store:
        for n, row in enumerate(rows.itertuples()):
            sides = [(child, row.reply_c), (parent, row.reply_p)][:: 1 if n % 2 == 0 else -1]
            persona = {"facts": row.persona.split("\n") if row.persona else []}
            vote = rule_vote(row.persona, sides[0][1], sides[1][1])
            (a, reply_a), (b, reply_b) = sides
            context = json.loads(row.context)
            store.add_preference(
                NewPreference("persona-chat speaker", persona, context, reply_a, reply_b, a, b, vote, cfg.rater)
            )
    return len(rows)


def train_child(cfg: LoopConfig, runs: Path, parent: str, child: str, export: Path) -> float:
    """Steps 3: export the parent's labels (and votes), train the child from it; seconds taken."""
    from eval.export_labels import main as export_main
    from training.train import main as train_main

    store = db_url(cfg.out / "train.db")
    run_step(export_main, {"database_url": store, "format": cfg.method, "version": parent, "out": export})
    m = cfg.method
    started = time.monotonic()
    flags = {"config": cfg.recipe, "method": m, "from_version": parent, "data.path": export, "output.dir": runs,
             "output.version": child, "max_steps": cfg.max_steps, "model.max_seq_length": cfg.max_seq_length,
             f"{m}.learning_rate": cfg.learning_rate, f"{m}.beta": cfg.beta, f"{m}.save_steps": cfg.max_steps,
             f"{m}.per_device_train_batch_size": cfg.per_device_train_batch_size}  # fmt: skip
    run_step(train_main, flags, cfg.train_args)
    return time.monotonic() - started


def scorecard_rows(cfg: LoopConfig, runs: Path, child: str, parent: str, out: Path) -> list[dict]:
    """`eval.report --versions CHILD,PARENT` (printed, and written to OUT); its rows."""
    from eval.report import main as report_main

    flags = {"versions": f"{child},{parent}", "runs_dir": runs, "database_url": db_url(cfg.out / "heldout.db"),
             "out": out, "n_resamples": cfg.n_resamples}  # fmt: skip
    run_step(report_main, flags)
    return json.loads((out / "scorecard.json").read_text())


SUMMARY_ROWS = {  # scorecard metric -> column of the loop's table
    "human accuracy, same prompts": "accuracy",
    "A/B win rate of the child": "win rate",
    "BLEU (sentence, mean)": "BLEU",
    "ROUGE-L": "ROUGE-L",
    "BERTScore F1": "BERTScore",
    "perplexity (geometric mean)": "ref. PPL",
}


def cell(row: dict | None) -> str:
    """child vs parent, delta [95 % CI], p; ▲/▼ where the scorecard calls it significant."""
    if row is None:
        return "n/a"
    arrow = ("▲" if row["delta"] > 0 else "▼") if row["significant"] else ""
    p = f", p={row['p_value']:.2g}" if row["p_value"] is not None else ""
    ci = f" [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]" if row["ci_low"] is not None else ""
    return f"{row['child']:.3g} vs {row['parent']:.3g}: {arrow}{row['delta']:+.3g}{ci}{p} (n={row['n']})"


def summary_table(rounds: list[dict]) -> str:
    lines = []
    for r in rounds:
        by_metric = {row["metric"]: row for row in r["scorecard"]}
        line = {
            "round": r["round"],
            "child vs parent": f"{r['child']} vs {r['parent']}",
            "labels (good)": f"{r['labels']} ({r['good']})",
            "votes (decided)": f"{r['votes']} ({r['votes_decided']})",
            "export rows": r["export_rows"],
            "steps": r["steps"],
        }
        line |= {column: cell(by_metric.get(metric)) for metric, column in SUMMARY_ROWS.items()}
        lines.append(line | {"minutes": r["minutes"]})
    return pd.DataFrame(lines).to_markdown(index=False)


def one_round(cfg: LoopConfig, runs: Path, parent: str, rnd: int) -> dict:
    started = time.monotonic()
    folder, child = cfg.out / f"round-{rnd}", f"round-{rnd}-{cfg.method}"
    with Store(db_url(cfg.out / "train.db")) as store:
        rated = sample_and_rate(cfg, runs, parent, rnd, store)
    log.info("round %d: %s", rnd, rated)
    train_s = train_child(cfg, runs, parent, child, folder / "export")
    manifest = json.loads((folder / "export" / "manifest.json").read_text())
    (folder / "loop.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    db = db_url(cfg.out / "heldout.db")
    parent_rows = cfg.out / f"round-{rnd - 1}" / "eval-child" / "rows.jsonl"  # the parent as last round's child
    if not parent_rows.is_file():
        parent_rows = heldout(cfg, runs, parent, folder / "eval-parent", db)
    child_rows = heldout(cfg, runs, child, folder / "eval-child", db)
    heldout_votes(cfg, child, parent, child_rows, parent_rows, db)
    rows = scorecard_rows(cfg, runs, child, parent, folder / "scorecard")
    return {
        "round": rnd,
        "child": child,
        "parent": parent,
        **rated,
        "export_rows": manifest["counts"]["rows"],
        "steps": cfg.max_steps,
        "train_s": round(train_s),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "scorecard": rows,
    }


@entry_point(LoopConfig, __doc__)
def main(cfg: LoopConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = cfg.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    numbers = range(cfg.first_round, cfg.first_round + cfg.rounds)
    for rnd in numbers:
        if (cfg.out / f"round-{rnd}").exists():
            raise ConfigError(f"{cfg.out / f'round-{rnd}'} exists", "pass a new --out or --first_round")
    if cfg.first_round > 1 and not cfg.start:
        raise ConfigError("--first_round continues a loop from its last child", "pass it as --start")
    parent = cfg.start or make_start(cfg, runs)
    done = cfg.out / "loop.json"
    rounds = [r for r in json.loads(done.read_text()) if r["round"] < cfg.first_round] if done.is_file() else []
    for rnd in numbers:
        rounds.append(one_round(cfg, runs, parent, rnd))
        parent = rounds[-1]["child"]
        table = summary_table(rounds)
        (cfg.out / "loop.md").write_text(table + "\n")
        done.write_text(json.dumps(rounds, indent=2, default=str))
    print(f"\n## The loop ({cfg.rule} rule, {cfg.method})\n\n{table}\n\nwritten to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
