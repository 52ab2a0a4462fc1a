"""Raters' verdicts and A/B votes -> a training set in TRL's formats (KTO, DPO or SFT).

    python -m eval.export_labels --format kto --version my-sft --out exports/kto-1
    python -m training.train --method kto --from_version my-sft --data.path exports/kto-1

- `kto`: conversational prompt (the persona's system message + the messages before the answer,
  built as chat builds them), completion (the answer), label (good -> true): TRL's unpaired
  preference format.
- `dpo`: prompt, chosen, rejected: from A/B votes (`a`/`b`; tie and both_bad are counted and
  dropped) and from a good and a bad answer to the same prompt (`store.prompt_key`).
- `sft`: the answers labelled good as prompt/completion (what `training.train --data.path DIR`
  trains on), and `sft.jsonl` in the chat-messages JSONL any `--data.path` reads (there every
  assistant turn of the context is a target too).

An item's verdict is its raters' verdict: items with fewer than `min_raters` labels are left
out; where raters disagree the item is dropped, or takes the strict majority (a tie is dropped).
Votes on the same two replies to the same prompt are resolved the same way. With
`--min_gold_accuracy 0.7`, the labels of raters below that gold accuracy are left out first
(eval.rater_quality.left_out). `OUT/` gets the `datasets` dataset (`dataset/`, `save_to_disk`),
the same rows as JSONL and `manifest.json`: the label item ids, vote ids and prompt keys used
(so the trained version is never scored on them), the counts, a fingerprint of the rows, the
raters left out, and each label behind the rows (`labels`: item, rater, verdict, seconds from
shown to labelled or null when not timed, the item's gold verdict or null, the rater's verdict
on a repeat of it or null), so a training set says which verdicts it trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.conversation import build_messages
from core.errors import DatasetError
from core.persona import Persona, persona_from_facts
from eval.rater_quality import trusted_rows
from store import Store
from store.records import prompt_key

log = logging.getLogger("eval")

MANIFEST_FILE = "manifest.json"
DATASET_DIR = "dataset"


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["kto", "dpo", "sft"] = Field(description="Training method the data is for: kto, dpo or sft.")
    out: Path = Field(description="Output folder (dataset/, <format>.jsonl, manifest.json); must not exist yet.")
    version: str | None = Field(None, description="Only answers of this model version (and votes it took part in).")
    min_raters: int = Field(1, ge=1, description="Leave out items (and vote pairs) with fewer raters than this.")
    disagreement: Literal["drop", "majority"] = Field(
        "drop", description="Raters disagree: drop the item, or take the strict majority (a tie is dropped)."
    )
    min_gold_accuracy: float | None = Field(
        None, ge=0, le=1, description="Leave out raters whose gold accuracy is below this (eval.rater_quality)."
    )
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")
    push_to_hub: str | None = Field(None, description="Also push the dataset to this hub repo (USER/REPO; network).")


@dataclass(frozen=True)
class Rated:
    """One answer with its raters' resolved verdict."""

    item_id: int
    persona: dict
    context: list[dict]
    answer: str
    model_version: str
    good: bool

    @property
    def key(self) -> str:
        return prompt_key(self.persona, self.context)


def consensus(verdicts: list[str], min_raters: int, disagreement: str) -> tuple[str | None, str]:
    """(the agreed value or None, why it was left out: "", "too_few_raters", "disagreement", "tie")."""
    if len(verdicts) < min_raters:
        return None, "too_few_raters"
    counts = Counter(verdicts).most_common()
    if len(counts) == 1:
        return counts[0][0], ""
    if disagreement == "drop":
        return None, "disagreement"
    if counts[0][1] == counts[1][1]:
        return None, "tie"
    return counts[0][0], ""


def persona_of(persona: dict) -> Persona:
    """The persona a stored item was answered under: a persona file's dump, or the bare
    `{"facts": [...]}` of an eval item (a dataset speaker, rendered as eval renders it)."""
    if "name" in persona:
        return Persona.model_validate(persona)
    return persona_from_facts(list(persona.get("facts", [])))


def prompt_messages(persona: dict, context: list[dict]) -> list[dict]:
    """What the model was asked: the same system message and dialogue as chat and eval build."""
    return build_messages(persona_of(persona), context)


def rated_items(store: Store, cfg: ExportConfig, counts: Counter, labels: list) -> list[Rated]:
    """Every item with `labels` (of `cfg.version`) with a resolved verdict, oldest item first."""
    verdicts: dict[int, list[str]] = defaultdict(list)
    for row in labels:
        verdicts[row.item_id].append(row.verdict)
    counts["items_labelled"] = len(verdicts)
    rated, items = [], store.items(verdicts)
    for item_id in sorted(verdicts):
        verdict, dropped = consensus(verdicts[item_id], cfg.min_raters, cfg.disagreement)
        if verdict is None:
            counts[f"items_dropped_{dropped}"] += 1
            continue
        item = items[item_id]
        rated.append(Rated(item_id, item.persona, item.context, item.answer, item.model_version, verdict == "good"))
    return rated


def kto_rows(rated: list[Rated]) -> list[dict]:
    return [
        {
            "prompt": prompt_messages(r.persona, r.context),
            "completion": [{"role": "assistant", "content": r.answer}],
            "label": r.good,
        }
        for r in rated
    ]


def sft_rows(rated: list[Rated]) -> list[dict]:
    return [row for row in kto_rows(rated) if row.pop("label")]


def label_pairs(rated: list[Rated]) -> list[tuple[Rated, Rated]]:
    """(good, bad) answers to the same prompt: every good one with every bad one (different texts)."""
    by_prompt: dict[str, list[Rated]] = defaultdict(list)
    for r in rated:
        by_prompt[r.key].append(r)
    pairs = []
    for answers in by_prompt.values():
        goods = [r for r in answers if r.good]
        bads = [r for r in answers if not r.good]
        pairs += [(g, b) for g in goods for b in bads if g.answer != b.answer]
    return pairs


def vote_pairs(store: Store, cfg: ExportConfig, counts: Counter) -> list[dict]:
    """Resolved A/B votes as {prompt, chosen, rejected, ids, key}: the votes of all raters on
    the same two replies to the same prompt (in either blind order) are resolved together."""
    groups: dict[tuple, list] = defaultdict(list)
    for vote in store.preferences():
        if cfg.version and cfg.version not in (vote.version_a, vote.version_b):
            continue
        counts[f"votes_{vote.vote}"] += 1
        replies = tuple(sorted((vote.reply_a, vote.reply_b)))
        groups[(prompt_key(vote.persona, vote.context), replies)].append(vote)
    pairs = []
    for (key, replies), votes in groups.items():
        winners = [{"a": v.reply_a, "b": v.reply_b}.get(v.vote, v.vote) for v in votes]  # tie / both_bad stay
        winner, dropped = consensus(winners, cfg.min_raters, cfg.disagreement)
        if winner is None or winner in ("tie", "both_bad") or replies[0] == replies[1]:
            counts[f"pairs_dropped_{dropped or 'no_preference'}"] += 1
            continue
        loser = replies[1] if winner == replies[0] else replies[0]
        first = votes[0]
        pairs.append({"prompt": prompt_messages(first.persona, first.context), "chosen": winner,
                      "rejected": loser, "preference_ids": [v.id for v in votes], "key": key})  # fmt: skip
    return pairs


def dpo_rows(store: Store, cfg: ExportConfig, rated: list[Rated], counts: Counter) -> tuple[list[dict], dict]:
    """(DPO rows, provenance): votes first, then good/bad label pairs."""
    from_votes = vote_pairs(store, cfg, counts)
    from_labels = label_pairs(rated)
    counts["pairs_from_votes"], counts["pairs_from_labels"] = len(from_votes), len(from_labels)
    rows, keys, item_ids, preference_ids = [], set(), set(), set()
    for p in from_votes:
        rows.append(_dpo_row(p["prompt"], p["chosen"], p["rejected"]))
        keys.add(p["key"])
        preference_ids.update(p["preference_ids"])
    for good, bad in from_labels:
        rows.append(_dpo_row(prompt_messages(good.persona, good.context), good.answer, bad.answer))
        keys.add(good.key)
        item_ids.update((good.item_id, bad.item_id))
    return rows, {"item_ids": item_ids, "preference_ids": preference_ids, "prompt_keys": keys}


def _dpo_row(prompt: list[dict], chosen: str, rejected: str) -> dict:
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def build_rows(store: Store, cfg: ExportConfig) -> tuple[list[dict], dict, Counter]:
    """(rows, provenance {item_ids, preference_ids, prompt_keys}, counts) for `cfg.format`."""
    counts: Counter = Counter()
    labels, dropped = trusted_rows(store, cfg.min_gold_accuracy)
    labels = [r for r in labels if cfg.version is None or r.model_version == cfg.version]
    counts["raters_left_out"] = len(dropped)
    rated = rated_items(store, cfg, counts, labels)
    if cfg.format == "dpo":
        rows, used = dpo_rows(store, cfg, rated, counts)
    else:
        kept = rated if cfg.format == "kto" else [r for r in rated if r.good]
        rows = kto_rows(kept) if cfg.format == "kto" else sft_rows(kept)
        counts["good"], counts["bad"] = sum(r.good for r in kept), sum(not r.good for r in kept)
        used = {"item_ids": {r.item_id for r in kept}, "preference_ids": set(), "prompt_keys": {r.key for r in kept}}
    used["left_out"] = dropped
    used["labels"] = label_provenance(store, [r for r in labels if r.item_id in used["item_ids"]])
    return rows, used, counts


def label_provenance(store: Store, labels: list) -> list[dict]:
    """Each label behind the rows: item, rater, verdict, seconds (shown -> labelled; null: not
    handed out by the queue), gold (the item's known verdict) and repeat (the rater's verdict when
    the item was shown to them again), null where there is none."""
    seconds = {(t.item_id, t.rater): round(t.seconds, 3) for t in store.label_times()}
    gold = store.gold_items()
    again = {(r.item_id, r.rater): r.again for r in store.repeat_rows()}
    return [
        {
            "item_id": r.item_id,
            "rater": r.rater,
            "verdict": r.verdict,
            "seconds": seconds.get((r.item_id, r.rater)),
            "gold": gold.get(r.item_id),
            "repeat": again.get((r.item_id, r.rater)),
        }  # fmt: skip
        for r in sorted(labels, key=lambda r: (r.item_id, r.rater))
    ]


def fingerprint(rows: list[dict]) -> str:
    """sha256 of the rows as canonical JSON: the same labels give the same fingerprint."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def no_rows_error(cfg: ExportConfig, counts: Counter) -> DatasetError:
    which = f"of version {cfg.version} " if cfg.version else ""
    seen = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "no labels or votes at all"
    need = {
        "kto": "labelled answers",
        "sft": "answers labelled good",
        "dpo": "A/B votes for A or B, or a good and a bad answer to the same prompt",
    }[cfg.format]
    return DatasetError(
        f"no {need} {which}to export for {cfg.format} ({seen})",
        "label answers in the Label tab (or vote in Compare) first, pick another --version, "
        "or lower --min_raters / use --disagreement majority",
    )


def chat_jsonl_rows(rows: list[dict]) -> list[dict]:
    """SFT rows as the chat-messages JSONL `corpus.formats` reads: the system message (the
    rendered persona) leads, then the dialogue and the good answer."""
    return [{"messages": [*row["prompt"], *row["completion"]]} for row in rows]


def write_export(cfg: ExportConfig, rows: list[dict], used: dict, counts: Counter, database: str) -> dict:
    from datasets import Dataset

    out = cfg.out
    out.mkdir(parents=True)
    Dataset.from_list(rows).save_to_disk(str(out / DATASET_DIR))
    jsonl = chat_jsonl_rows(rows) if cfg.format == "sft" else rows
    (out / f"{cfg.format}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in jsonl))
    manifest = {
        "format": cfg.format,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": database,
        "version": cfg.version,
        "min_raters": cfg.min_raters,
        "disagreement": cfg.disagreement,
        "min_gold_accuracy": cfg.min_gold_accuracy,
        "raters_left_out": used["left_out"],
        "counts": {"rows": len(rows), **dict(sorted(counts.items()))},
        "fingerprint": fingerprint(rows),
        "item_ids": sorted(used["item_ids"]),
        "preference_ids": sorted(used["preference_ids"]),
        "prompt_keys": sorted(used["prompt_keys"]),
        "labels": used["labels"],
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


@entry_point(ExportConfig, __doc__)
def main(cfg: ExportConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if cfg.out.exists():
        raise DatasetError(f"the output folder {cfg.out} already exists", "pass a new --out folder (or delete it)")
    with Store(cfg.database_url) as store:
        rows, used, counts = build_rows(store, cfg)
        if not rows:
            raise no_rows_error(cfg, counts)
        manifest = write_export(cfg, rows, used, counts, store.url)
    if cfg.push_to_hub:
        from datasets import load_from_disk

        load_from_disk(str(cfg.out / DATASET_DIR)).push_to_hub(cfg.push_to_hub)
    summary = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    print(f"{cfg.format}: {summary}\nwritten to {cfg.out} (fingerprint {manifest['fingerprint'][:12]})")
    if cfg.format == "kto" and (hint := balance_hint(counts["good"], counts["bad"])):
        print(hint)
    return 0


def balance_hint(good: int, bad: int) -> str:
    """KTO wants desirable_weight * good / (undesirable_weight * bad) in [1, 4/3] (KTO paper,
    eq. 8; TRL warns outside it): the flag that balances this export, or "" when it is."""
    if not good or not bad or 1 <= good / bad <= 4 / 3:
        return ""
    if good < bad:
        return f"{good} good vs {bad} bad: train with --kto.desirable_weight {bad / good:.2f} to balance them"
    return f"{good} good vs {bad} bad: train with --kto.undesirable_weight {good / bad:.2f} to balance them"


if __name__ == "__main__":
    sys.exit(main())
