"""The scorecard's rows, as pure functions over what the runs wrote: one row per measurement
(child, parent, delta child - parent, its 95 % interval, the test, significant or not).
`eval.scorecard` reads the files and the store and calls these; the tests are in
`eval.significance`."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

from eval.significance import ALPHA, mcnemar, normal_difference, paired_bootstrap, two_proportions, win_rate
from store.records import prompt_key

# Per-turn column of rows.jsonl -> (name shown, which way is better; None: neither).
ITEM_METRICS = {
    "bleu_sentence": ("BLEU (sentence, mean)", "higher"),
    "rouge1": ("ROUGE-1", "higher"),
    "rouge2": ("ROUGE-2", "higher"),
    "rougeL": ("ROUGE-L", "higher"),
    "f1": ("F1 (unigram)", "higher"),
    "bertscore_f1": ("BERTScore F1", "higher"),
    "hits_at_1": ("Hits@1/20 (own candidates)", "higher"),
    "perplexity": ("perplexity (geometric mean)", "lower"),
    "persona_margin": ("persona margin (own - other)", "higher"),
    "length": ("reply length (words)", None),
}


def delta_row(section, metric, child, parent, delta, low, high, p_value, n, test, better, note="") -> dict:
    """One row. Significant: p < ALPHA where a test gives p, else the interval excludes 0.
    `change`: better / worse (higher / lower where neither is better), "" when equal."""
    if p_value is not None:
        significant = p_value < ALPHA
    else:
        significant = low is not None and high is not None and (low > 0 or high < 0)
    change = ""
    if delta:
        up = delta > 0
        change = (
            ("higher" if up else "lower") if better is None else ("better" if up == (better == "higher") else "worse")
        )
    return dict(section=section, metric=metric, child=child, parent=parent, delta=delta, ci_low=low, ci_high=high,
                p_value=p_value, n=n, test=test, better=better, significant=bool(significant and change),
                change=change, note=note)  # fmt: skip


def paired_pass_row(section: str, metric: str, child, parent, note: str, n_resamples: int, seed: int) -> dict:
    """The row of a pass/fail (1/0) score on pairs (human majority per prompt, regression turns,
    identity wordings): the share's delta with a paired bootstrap interval, McNemar's exact test
    on the discordant pairs. `note` is formatted with `fixed` (child only) and `broke` (parent only)."""
    c, p = np.asarray(child, dtype=float), np.asarray(parent, dtype=float)
    delta, low, high = paired_bootstrap(c, p, n_resamples=n_resamples, seed=seed)
    fixed, broke = int(((c == 1) & (p == 0)).sum()), int(((c == 0) & (p == 1)).sum())
    return delta_row(section, metric, float(c.mean()), float(p.mean()), delta, low, high, mcnemar(fixed, broke),
                     len(c), "McNemar exact; interval: paired bootstrap", "higher",
                     note.format(fixed=fixed, broke=broke))  # fmt: skip


# -- rows from data (pure) -----------------------------------------------------------------


def row_key(row: dict) -> str:
    """`store.prompt_key` of a rows.jsonl row: eval.run registers each turn's answer with the
    persona {"facts": [...]} and the messages after the system message as context."""
    facts = row["persona"].split("\n") if row.get("persona") else []
    context = json.loads(row["context"]) if isinstance(row["context"], str) else row["context"]
    return prompt_key({"facts": facts}, context)


def match_turns(child: pd.DataFrame, parent: pd.DataFrame, excluded: set[str]) -> tuple[pd.DataFrame, dict]:
    """The turns both runs answered, less the `excluded` prompt keys: one row each, child's
    columns suffixed _c and parent's _p; and the counts (child, parent, both, excluded)."""
    c = child.assign(key=[row_key(r) for r in child.to_dict("records")]).drop_duplicates("key")
    p = parent.assign(key=[row_key(r) for r in parent.to_dict("records")]).drop_duplicates("key")
    both = c.merge(p, on="key", suffixes=("_c", "_p"))
    kept = both[~both["key"].isin(excluded)]
    return kept, {"child": len(c), "parent": len(p), "both": len(both), "excluded": len(both) - len(kept)}


def metric_rows(pairs: pd.DataFrame, n_resamples: int = 9999, seed: int = 0) -> list[dict]:
    """One row per per-turn metric both runs have; a turn either has no value for is left out."""
    rows, test = [], f"paired bootstrap ({n_resamples} resamples, seed {seed})"
    for column, (name, better) in ITEM_METRICS.items():
        if f"{column}_c" not in pairs or f"{column}_p" not in pairs:
            continue
        values = pairs[[f"{column}_c", f"{column}_p"]].apply(pd.to_numeric, errors="coerce")
        values = values[np.isfinite(values).all(axis=1)]  # NaN: not scored (Hits@1 past hits_items)
        if values.empty:
            continue
        c, p = values.iloc[:, 0].to_numpy(float), values.iloc[:, 1].to_numpy(float)
        geometric = column == "perplexity"
        delta, low, high = paired_bootstrap(c, p, geometric, n_resamples, seed)
        c_mean, p_mean = (float(np.exp(np.log(v).mean()) if geometric else v.mean()) for v in (c, p))
        rows.append(delta_row("automatic", name, c_mean, p_mean, delta, low, high, None, len(c), test, better))
    return rows


def majority(verdicts: list[str]) -> int:
    """1 when most labels say good (a tie counts as bad, as in eval.report)."""
    return int(sum(v == "good" for v in verdicts) * 2 > len(verdicts))


def human_rows(child: dict[str, list[str]], parent: dict[str, list[str]], n_resamples=9999, seed=0) -> list[dict]:
    """`child`/`parent`: prompt key -> verdicts of every label on that version's answers to it.
    A row on the prompts both have (majority per prompt, McNemar) and one over all labels
    (Fisher), each where there is something to compare."""
    rows = []
    shared = sorted(child.keys() & parent.keys())
    if shared:
        c, p = [majority(child[k]) for k in shared], [majority(parent[k]) for k in shared]
        note = "{fixed} prompts good only for the child, {broke} only for the parent (majority of labels)"
        rows.append(paired_pass_row("human", "human accuracy, same prompts", c, p, note, n_resamples, seed))
    labels_c = [v for verdicts in child.values() for v in verdicts]
    labels_p = [v for verdicts in parent.values() for v in verdicts]
    if labels_c and labels_p:
        good_c, good_p = labels_c.count("good"), labels_p.count("good")
        delta, low, high, pvalue = two_proportions(good_c, len(labels_c), good_p, len(labels_p))
        note = f"{good_c}/{len(labels_c)} vs {good_p}/{len(labels_p)} labels good"
        rows.append(
            delta_row(
                "human",
                "human accuracy, all labels",
                good_c / len(labels_c),
                good_p / len(labels_p),
                delta,
                low,
                high,
                pvalue,
                len(labels_c) + len(labels_p),
                "Fisher exact; interval: Newcombe",
                "higher",
                note,
            )
        )
    return rows


def preference_rows(votes: Iterable, child: str, parent: str) -> list[dict]:
    """The child's win rate over A/B `votes` (PreferenceRow-like) between the two versions."""
    counts = {"win": 0, "loss": 0, "tie": 0, "both_bad": 0}
    for v in votes:
        if {v.version_a, v.version_b} != {child, parent}:
            continue
        if v.vote in ("tie", "both_bad"):
            counts[v.vote] += 1
        else:
            counts["win" if (v.version_a if v.vote == "a" else v.version_b) == child else "loss"] += 1
    decided = counts["win"] + counts["loss"]
    if not decided:
        return []
    rate, low, high, pvalue = win_rate(counts["win"], counts["loss"])
    note = (
        f"win rate {rate:.0%} (95 % Wilson {low:.0%}-{high:.0%}): {counts['win']} wins, {counts['loss']} losses; "
        f"{counts['tie']} ties and {counts['both_bad']} both bad left out; delta = win rate - 50 %"
    )
    return [
        delta_row(
            "A/B",
            "A/B win rate of the child",
            rate,
            1 - rate,
            rate - 0.5,
            low - 0.5,
            high - 0.5,
            pvalue,
            decided,
            "binomial exact vs 50 %; interval: Wilson",
            "higher",
            note,
        )
    ]


def regression_rows(child: dict, parent: dict, n_resamples=9999, seed=0) -> tuple[list[dict], dict]:
    """Turns passed in each version's regress run, on the turns both played (script, turn, user
    message, persona), McNemar on the flips; and the checks that flipped (`regress_checks.diff`)."""
    from eval.regress_checks import diff

    flips = diff(copy.deepcopy(child["turns"]), parent)
    before = {(t["script"], t["turn"], t["user"], t["persona"]): t["passed"] for t in parent["turns"]}
    keys = [(t["script"], t["turn"], t["user"], t["persona"]) for t in child["turns"]]
    pairs = [(t["passed"], before[k]) for t, k in zip(child["turns"], keys, strict=True) if k in before]
    if not pairs:
        return [], flips
    c, p = zip(*pairs, strict=True)
    note = "{fixed} turns now pass, {broke} now fail"
    row = paired_pass_row("regression", "regression turns passed", c, p, note, n_resamples, seed)
    return [row], flips


def retention_scores(result: dict, side: str = "version") -> dict[tuple[str, str], tuple]:
    """{(task, metric): (value, stderr, n)} of an eval.retention result, the version's or its base's."""
    return {(r["task"], r["metric"]): (r[side], r[f"{side}_stderr"], r["n"]) for r in result.get("rows", [])}


def retention_rows(child: dict[tuple, tuple], parent: dict[tuple, tuple]) -> list[dict]:
    """Per (task, metric) both have: the delta, with a normal interval where both have a stderr."""
    rows = []
    for task, metric in sorted(child.keys() & parent.keys()):
        (vc, sc, n), (vp, sp, _) = child[task, metric], parent[task, metric]
        delta, low, high, pvalue = vc - vp, None, None, None
        if sc is not None and sp is not None:
            delta, low, high, pvalue = normal_difference(vc, sc, vp, sp)
        test = "normal approx. from both stderrs (unpaired)"
        rows.append(delta_row("retention", f"{task} {metric}", vc, vp, delta, low, high, pvalue, n, test, "higher"))
    return rows


def identity_rows(child: dict | None, parent: dict | None, n_resamples=9999, seed=0) -> list[dict]:
    """Identity accuracy from two `eval.identity` results ({"summary", "rows": question, passed}):
    paired on the wordings both were asked (McNemar), else two proportions from the summaries."""
    if not child or not parent:
        return []
    before = {r["question"]: r["passed"] for r in parent.get("rows", [])}
    pairs = [(r["passed"], before[r["question"]]) for r in child.get("rows", []) if r["question"] in before]
    if pairs:
        c, p = zip(*pairs, strict=True)
        note = "{fixed} wordings now answered as the persona, {broke} no longer"
        return [paired_pass_row("identity", "identity accuracy", c, p, note, n_resamples, seed)]
    (ac, nc), (ap, np_) = ((r["summary"]["identity_accuracy"], r["summary"]["items"]) for r in (child, parent))
    delta, low, high, pvalue = two_proportions(round(ac * nc), nc, round(ap * np_), np_)
    return [delta_row("identity", "identity accuracy", ac, ap, delta, low, high, pvalue, nc + np_,
                      "Fisher exact; interval: Newcombe", "higher")]  # fmt: skip
