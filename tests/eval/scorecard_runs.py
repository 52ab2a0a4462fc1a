"""What a child (v2) and its parent (v1) leave behind, small enough to check the scorecard by
hand: eval rows, labels, A/B votes, regression and retention runs, and v2's lineage.

Eval turns T0..T4 (one persona): v1's run answered T0..T3, v2's run T4..T0 (other order, other
item ids); v2 was trained on T0's prompt, so 3 turns are compared (T1..T3):
    ROUGE-1      v2 .5 .6 .7   v1 .3 .4 .6   -> delta +1/6
    perplexity   v2 2 8 4      v1 4 4 4      -> geometric means 4 and 4: delta 0
Labels on prompts P0..P9, one each: v2 good on P0..P7, v1 good on P7 and P8 -> 7 prompts good
only for v2, 1 only for v1 (McNemar p = 18/256); T0 is labelled too (left out).
A/B: v2 wins 14 and loses 6 against v1, 2 ties, 1 both bad; one more win trained v2 (left out).
Regression: turn 1 pass -> fail (identity), turn 2 fail -> pass, turn 3 passes in both.
"""

import json
from pathlib import Path

from store import NewItem, NewPreference, Store, prompt_key

FACTS = ["I keep bees.", "I build clocks."]
ROUGE1 = {"v2": [0.0, 0.5, 0.6, 0.7, 0.9], "v1": [1.0, 0.3, 0.4, 0.6]}  # T0.. in turn order
PERPLEXITY = {"v2": [9.0, 2.0, 8.0, 4.0, 5.0], "v1": [1.5, 4.0, 4.0, 4.0]}


def context(i: int) -> list[dict]:
    return [{"role": "assistant", "content": "Hi!"}, {"role": "user", "content": f"turn {i}: what do you do?"}]


def write_eval_rows(runs: Path, version: str, turns: list[int], first_item: int) -> Path:
    out = runs / version / "eval" / "20261201-090000"
    out.mkdir(parents=True)
    rows = [
        {"item_id": first_item + n, "conversation_id": f"c{i}", "speaker": "User 1", "persona": "\n".join(FACTS),
         "context": json.dumps(context(i)), "reference": "ref", "reply": f"{version} reply {i}",
         "rouge1": ROUGE1[version][i], "perplexity": PERPLEXITY[version][i], "hits_at_1": None, "length": 7}
        for n, i in enumerate(turns)
    ]  # fmt: skip
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def add_labels(store: Store, version: str, good: set[int]) -> None:
    items = [
        NewItem("eval", "speaker", {"facts": FACTS}, context(100 + i), f"{version} {i}", version) for i in range(10)
    ]
    items.append(NewItem("eval", "speaker", {"facts": FACTS}, context(0), f"{version} T0", version))  # trained on
    for i, item_id in enumerate(store.add_label_items(items)):
        store.label(item_id, "rita", "good" if i in good or (i == 10 and version == "v1") else "bad")


def vote(store: Store, winner: str, loser: str, result: str, child_first: bool) -> int:
    a, b = (winner, loser) if child_first else (loser, winner)
    choice = result if result in ("tie", "both_bad") else ("a" if child_first else "b")
    return store.add_preference(
        NewPreference("speaker", {"facts": FACTS}, context(200), f"{a} says", f"{b} says", a, b, choice, "rita")
    )


def add_votes(store: Store) -> int:
    """The A/B votes; returns the id of the one v2 was trained on."""
    for n in range(14):
        vote(store, "v2", "v1", "a", child_first=n % 2 == 0)
    for n in range(6):
        vote(store, "v1", "v2", "a", child_first=n % 2 == 0)
    vote(store, "v2", "v1", "tie", True)
    vote(store, "v2", "v1", "tie", False)
    vote(store, "v2", "v1", "both_bad", True)
    vote(store, "v2", "base", "a", True)  # another pair: not in this scorecard
    return vote(store, "v2", "v1", "a", True)


def regress_results(version: str, passed: list[bool]) -> dict:
    turns = [
        {"script": "nova_identity", "turn": t, "user": f"question {t}", "persona": "nova", "reply": f"{version} {t}",
         "checks": [{"check": "identity", "passed": ok, "detail": ""}], "passed": ok}
        for t, ok in enumerate(passed, start=1)
    ]  # fmt: skip
    return {"model_version": version, "created": "2026-12-01T09:00:00", "turns": turns}


def retention_result(version: str, acc: float, stderr: float) -> dict:
    row = {"task": "persona_mc", "metric": "acc", "version": acc, "base": 0.55, "delta": acc - 0.55,
           "version_stderr": stderr, "base_stderr": 0.08, "n": 32}  # fmt: skip
    return {"model_version": version, "rows": [row]}


def build(runs: Path, store: Store) -> None:
    """runs/v1 and runs/v2 (v2 continued from v1) and everything the scorecard reads."""
    for version, created in (("v1", "2026-11-30T10:00:00"), ("v2", "2026-12-01T10:00:00")):
        (runs / version).mkdir(parents=True)
        (runs / version / "version.json").write_text(json.dumps({"base_model": "default", "created": created}))
    write_eval_rows(runs, "v1", [0, 1, 2, 3], first_item=1)
    write_eval_rows(runs, "v2", [4, 3, 2, 1, 0], first_item=10)
    add_labels(store, "v2", good=set(range(8)))
    add_labels(store, "v1", good={7, 8})
    trained_vote = add_votes(store)
    lineage = {"parent": "v1", "method": "kto", "prompt_keys": [prompt_key({"facts": FACTS}, context(0))],
               "preference_ids": [trained_vote]}  # fmt: skip
    (runs / "v2" / "lineage.json").write_text(json.dumps(lineage))
    for version, passed in (("v1", [True, False, True]), ("v2", [False, True, True])):
        out = runs / version / "regress" / "20261201-090000"
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps(regress_results(version, passed)))
    for version, acc, stderr in (("v1", 0.6, 0.08), ("v2", 0.5, 0.09)):
        (runs / version / "retention").mkdir()
        (runs / version / "retention" / "20261201-090000.json").write_text(
            json.dumps(retention_result(version, acc, stderr))
        )
