"""The scorecard: a model version against its parent, on the same items, with 95 % intervals.

    card = scorecard(store, "v2", runs_dir="runs")   # the parent from v2's lineage, else base
    print(scorecard_markdown(card))

One row per measurement (`eval.scorecard_rows`): child, parent, the delta child - parent with
its 95 % interval, the test and whether the change is significant (`eval.significance`):

- automatic metrics of the two versions' latest eval runs, on the turns both answered (matched
  by `store.prompt_key` of persona + messages, i.e. by dataset turn, not by label item id; the
  turns only one run has are counted and left out): mean of the per-turn scores, paired
  bootstrap. BLEU is the mean sentence BLEU, perplexity the geometric mean over turns.
- human accuracy: on prompts both versions' answers were labelled on (majority verdict per
  prompt, McNemar exact), and over all labels (Fisher exact, Newcombe interval).
- the child's A/B win rate (ties and "both bad" left out and counted; Wilson interval,
  binomial test against 50 %; the delta is win rate - 50 %).
- regression suite: turns passed (McNemar) and the checks that flipped.
- retention (lm-eval): normal interval from the two stderrs (unpaired: per-question scores are
  not saved); identity accuracy when `eval.identity` is there.

What the child or any ancestor was trained on (`ModelVersion.lineage()`: `prompt_keys`,
`preference_ids`) is left out of every row, and the count is shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.errors import ConfigError
from core.versions import BASE, find_version, list_versions, results_files
from eval.scorecard_rows import (
    human_rows,
    identity_rows,
    match_turns,
    metric_rows,
    preference_rows,
    regression_rows,
    retention_rows,
    retention_scores,
)
from eval.significance import ALPHA
from store.boundary import StoreAPI
from store.records import prompt_key


@dataclass
class Scorecard:
    child: str
    parent: str
    rows: list[dict] = field(default_factory=list)  # `delta_row`s
    flips: dict = field(default_factory=dict)  # regression checks that flipped: pass_to_fail, fail_to_pass
    notes: list[str] = field(default_factory=list)  # what was matched, left out or missing


# -- reading what the runs left (runs/ and the store) --------------------------------------


def known_versions(store: StoreAPI, runs_dir: str | Path) -> list[str]:
    """`base`, the trained versions, and any name with eval runs or labels (eval.run files a
    folder or hub model by its name)."""
    names = [v.name for v in list_versions(runs_dir)]
    names += sorted({run.model_version for run in store.eval_runs()} | set(store.model_versions_with_labels()))
    return list(dict.fromkeys(names))


def default_parent(runs_dir: str | Path, child: str) -> str:
    """The version `child` continued from (its lineage), else `base`."""
    version = find_version(child, runs_dir)
    return (version.parent if version else None) or BASE


def trained_on(runs_dir: str | Path, child: str) -> tuple[set[str], set[int]]:
    """(prompt keys, A/B vote ids) the child or any of its ancestors was trained on: a child
    continues from its parent's weights, so its parent's training prompts flatter it too."""
    keys, votes, name, seen = set(), set(), child, set()
    while name and name != BASE and name not in seen:
        seen.add(name)
        version = find_version(name, runs_dir)
        lineage = version.lineage() if version else {}
        keys |= set(lineage.get("prompt_keys", []))
        votes |= set(lineage.get("preference_ids", []))
        name = lineage.get("parent")
    return keys, votes


def latest_eval_rows(store: StoreAPI, runs_dir: str | Path, version: str) -> tuple[pd.DataFrame | None, str | None]:
    """(rows.jsonl, its folder) of the version's latest eval run in the store, else on disk."""
    paths = [Path(run.path) / "rows.jsonl" for run in store.eval_runs(version)]
    paths = [p for p in paths if p.is_file()] or sorted((Path(runs_dir) / version / "eval").glob("*/rows.jsonl"))
    if not paths:
        return None, None
    # dtype=False: persona and context stay the text they were written as; precise_float: 0.3 is 0.3.
    return pd.read_json(paths[-1], lines=True, dtype=False, precise_float=True), str(paths[-1].parent)


def labels_by_prompt(store: StoreAPI, version: str, excluded: set[str]) -> tuple[dict[str, list[str]], int]:
    """(prompt key -> verdicts of the version's labelled answers to it, labels left out)."""
    rows = store.label_rows(version)
    keys = {i: prompt_key(item.persona, item.context) for i, item in store.items([r.item_id for r in rows]).items()}
    by_prompt: dict[str, list[str]] = {}
    left_out = 0
    for row in rows:
        if keys[row.item_id] in excluded:
            left_out += 1
        else:
            by_prompt.setdefault(keys[row.item_id], []).append(row.verdict)
    return by_prompt, left_out


def latest_regress(runs_dir: str | Path, version: str) -> dict | None:
    """results.json of the version's newest eval.regress run."""
    found = []
    for path in results_files(runs_dir, "regress", "results.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("model_version") == version:
            found.append((data.get("created", ""), str(path), data))
    return max(found, key=lambda f: f[:2])[2] if found else None


def latest_retention(runs_dir: str | Path, version: str) -> dict | None:
    paths = sorted((Path(runs_dir) / version / "retention").glob("*.json"))
    return json.loads(paths[-1].read_text()) if paths else None


def latest_identity(runs_dir: str | Path, version: str) -> dict | None:
    """`eval.identity.latest_identity`, when that module is there and the version has a result.
    The glob first: importing eval.identity loads torch (~5-20 s), for nothing when no run exists."""
    if not any((Path(runs_dir) / version / "eval").glob("*/identity.json")):
        return None
    try:  # eval.identity is optional here: without it the scorecard has no identity row
        from eval.identity import latest_identity as latest
    except ImportError:
        return None
    return latest(runs_dir, version)


# -- the scorecard -------------------------------------------------------------------------


def scorecard(
    store: StoreAPI,
    child: str,
    parent: str | None = None,
    runs_dir: str | Path = "runs",
    n_resamples: int = 9999,
    seed: int = 0,
) -> Scorecard:
    """Every row there is data for; `parent` defaults to `default_parent`."""
    known = known_versions(store, runs_dir)
    for name in (child, parent):
        if name is not None and name not in known:
            raise ConfigError(
                f"there is no model version {name!r} in {runs_dir} or the store", f"pick one of: {', '.join(known)}"
            )
    parent = parent or default_parent(runs_dir, child)
    if parent == child:
        raise ConfigError(f"the scorecard compares two versions, got {child!r} twice", "pick another parent")
    card = Scorecard(child, parent)
    keys, votes = trained_on(runs_dir, child)
    if keys or votes:
        card.notes.append(
            f"{child} (with its ancestors) was trained on {len(keys)} prompts and {len(votes)} A/B votes: "
            "they are left out of every row"
        )
    _automatic(card, store, runs_dir, keys, n_resamples, seed)
    _human(card, store, keys, n_resamples, seed)
    preferences = [v for v in store.preferences((child, parent)) if v.id not in votes and _vote_key(v) not in keys]
    card.rows += preference_rows(preferences, child, parent)
    _regression(card, runs_dir, n_resamples, seed)
    _retention(card, runs_dir)
    card.rows += identity_rows(latest_identity(runs_dir, child), latest_identity(runs_dir, parent), n_resamples, seed)
    return card


def _vote_key(vote) -> str:
    return prompt_key(vote.persona, vote.context)


def _automatic(card: Scorecard, store: StoreAPI, runs_dir, excluded: set[str], n_resamples: int, seed: int) -> None:
    (child, child_dir), (parent, parent_dir) = (latest_eval_rows(store, runs_dir, v) for v in (card.child, card.parent))
    if child is None or parent is None:
        missing = " and ".join(v for v, rows in ((card.child, child), (card.parent, parent)) if rows is None)
        card.notes.append(f"automatic metrics: no eval run of {missing} (python -m eval.run --model VERSION)")
        return
    lacking = [d for d, rows in ((child_dir, child), (parent_dir, parent)) if not {"persona", "context"} <= set(rows)]
    if lacking:
        card.notes.append(
            f"automatic metrics: {' and '.join(lacking)} has no persona/context columns to match turns by"
        )
        return
    pairs, n = match_turns(child, parent, excluded)
    card.notes.append(
        f"automatic metrics on the {len(pairs)} turns both eval runs answered ({card.child}: {child_dir}, "
        f"{n['child']} turns; {card.parent}: {parent_dir}, {n['parent']} turns); {n['child'] - n['both']} turns only "
        f"the child's run has and {n['parent'] - n['both']} only the parent's are left out"
        + (f", and {n['excluded']} the child was trained on" if n["excluded"] else "")
    )
    card.rows += metric_rows(pairs, n_resamples, seed)


def _human(card: Scorecard, store: StoreAPI, excluded: set[str], n_resamples: int, seed: int) -> None:
    (child, child_out), (parent, parent_out) = (labels_by_prompt(store, v, excluded) for v in (card.child, card.parent))
    if child_out or parent_out:
        card.notes.append(
            f"human accuracy: {child_out} labels of {card.child} and {parent_out} of {card.parent} on "
            "prompts the child was trained on are left out"
        )
    if not child or not parent:
        card.notes.append("human accuracy: needs labels on both versions (Label tab)")
    card.rows += human_rows(child, parent, n_resamples, seed)


def _regression(card: Scorecard, runs_dir, n_resamples: int, seed: int) -> None:
    child, parent = latest_regress(runs_dir, card.child), latest_regress(runs_dir, card.parent)
    if child is None or parent is None:
        card.notes.append("regression suite: needs a run of both versions (python -m eval.regress --model VERSION)")
        return
    rows, card.flips = regression_rows(child, parent, n_resamples, seed)
    card.rows += rows


def _retention(card: Scorecard, runs_dir) -> None:
    child, parent = latest_retention(runs_dir, card.child), latest_retention(runs_dir, card.parent)
    if child is not None and parent is None and card.parent == BASE:
        parent_scores = retention_scores(child, "base")  # the child's run scored its base too
    else:
        parent_scores = retention_scores(parent) if parent else {}
    if child is None or not parent_scores:
        card.notes.append("retention: needs a run of both versions (python -m eval.retention --model VERSION)")
        return
    card.rows += retention_rows(retention_scores(child), parent_scores)


# -- as text ---------------------------------------------------------------------------------


def _number(value) -> str:
    return "" if value is None else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _signed(value) -> str:
    return "" if value is None else ("+" if value > 0 else "") + _number(value)


def delta_cell(row: dict) -> str:
    """ "**▲ +0.031** [+0.01, +0.052]": arrow and bold only for a significant change."""
    text = _signed(row["delta"])
    if row["significant"]:
        text = f"**{'▲' if row['delta'] > 0 else '▼'} {text}**"
    if row["ci_low"] is not None:
        text += f" [{_signed(row['ci_low'])}, {_signed(row['ci_high'])}]"
    return text


def scorecard_table(card: Scorecard) -> pd.DataFrame:
    """The rows for people: numbers rounded, the delta cell marked, the change in words."""
    rows = [
        {
            "": r["section"],
            "metric": r["metric"],
            card.child: _number(r["child"]),
            card.parent: _number(r["parent"]),
            "delta [95 % CI]": delta_cell(r),
            "p": "" if r["p_value"] is None else f"{r['p_value']:.3g}",
            "n": "" if r["n"] is None else r["n"],
            "change": f"**{r['change']}**" if r["significant"] else "no significant change" if r["change"] else "same",
            "test": r["test"] + (f"; {r['note']}" if r["note"] else ""),
        }
        for r in card.rows
    ]
    columns = ["", "metric", card.child, card.parent, "delta [95 % CI]", "p", "n", "change", "test"]
    return pd.DataFrame(rows, columns=columns)


def scorecard_markdown(card: Scorecard) -> str:
    parts = [f"## Scorecard: {card.child} vs {card.parent}", ""]
    if card.rows:
        parts += [scorecard_table(card).to_markdown(index=False), ""]
        parts.append(
            f"Delta = {card.child} - {card.parent}. **▲/▼ bold**: significant at {ALPHA:.0%} (p < {ALPHA} where a "
            "test gives p, else the 95 % interval excludes 0); `better`/`worse` follow each metric's direction."
        )
    else:
        parts.append("nothing to compare yet")
    for kind, label in (("pass_to_fail", "pass -> fail"), ("fail_to_pass", "fail -> pass")):
        if card.flips.get(kind):
            parts += ["", f"Regression checks {label}: " + ", ".join(card.flips[kind])]
    parts += ["", *[f"- {note}" for note in card.notes]]
    return "\n".join(parts) + "\n"
