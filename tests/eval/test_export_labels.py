"""`python -m eval.export_labels`: labels and votes in the store -> TRL datasets + manifest."""

import json

import pytest
from datasets import load_from_disk

from core.errors import DatasetError
from core.persona import render_system_prompt
from corpus.formats import read_conversations
from eval.export_labels import main
from store import NewItem, NewPreference
from store.records import prompt_key

PERSONA = {"name": "Ada", "facts": ["I keep three beehives.", "I build clocks in my shed."], "anonymous": False}
SPEAKER = {"facts": ["i have two dogs .", "i work as a nurse ."]}  # an eval item: a dataset speaker's facts
ASK = [{"role": "user", "content": "What do you do all day?"}]
ASK_2 = [{"role": "assistant", "content": "Hi there!"}, {"role": "user", "content": "Any pets?"}]


def rate(store, persona: dict, context: list[dict], answer: str, version: str, *verdicts: str) -> int:
    """Register one answer and label it: the n-th verdict by rater r<n>."""
    [item_id] = store.add_label_items([NewItem("eval", "p", persona, context, answer, version)])
    for n, verdict in enumerate(verdicts):
        store.label(item_id, f"r{n}", verdict)
    return item_id


def labelled(store) -> dict[str, int]:
    """Item ids by name: four answers of v1 (two raters on some), one of v2."""
    return {
        "bees": rate(store, PERSONA, ASK, "I tend my bees and fix clocks.", "v1", "good", "good"),
        "vague": rate(store, PERSONA, ASK, "Not much, really.", "v1", "bad"),
        "split": rate(store, PERSONA, ASK, "I watch television.", "v1", "good", "bad"),
        "dogs": rate(store, SPEAKER, ASK_2, "Yes, two dogs! I walk them after my shift.", "v1", "good", "good", "bad"),
        "other": rate(store, PERSONA, ASK, "Clocks, mostly.", "v2", "good"),
    }


def export(db_file_url, out, *flags) -> int:
    return main(["--database_url", db_file_url, "--out", str(out), *flags])


def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_kto_rows_are_the_chat_prompt_the_answer_and_the_verdict(store, db_file_url, tmp_path):
    ids = labelled(store)
    out = tmp_path / "kto"
    assert export(db_file_url, out, "--format", "kto", "--version", "v1") == 0
    rows = load_from_disk(str(out / "dataset")).to_list()
    # "split" (1 good, 1 bad) is dropped; "dogs" (2 good, 1 bad) too: raters disagree.
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [
        ("I tend my bees and fix clocks.", True),
        ("Not much, really.", False),
    ]
    system = rows[0]["prompt"][0]
    assert (
        system["role"] == "system" and system["content"].startswith("You are Ada.") and "beehives" in system["content"]
    )
    assert rows[0]["prompt"][1:] == ASK and rows[0]["completion"][0]["role"] == "assistant"
    assert [json.loads(line) for line in (out / "kto.jsonl").read_text().splitlines()] == rows
    m = manifest(out)
    assert m["item_ids"] == [ids["bees"], ids["vague"]] and m["preference_ids"] == []
    assert m["prompt_keys"] == [prompt_key(PERSONA, ASK)]
    assert (
        m["counts"].items()
        >= {"rows": 2, "good": 1, "bad": 1, "items_labelled": 4, "items_dropped_disagreement": 2}.items()
    )
    # The same labels give the same fingerprint; a changed verdict another.
    assert export(db_file_url, tmp_path / "again", "--format", "kto", "--version", "v1") == 0
    assert manifest(tmp_path / "again")["fingerprint"] == m["fingerprint"]
    store.label(ids["vague"], "r0", "good")
    assert export(db_file_url, tmp_path / "changed", "--format", "kto", "--version", "v1") == 0
    assert manifest(tmp_path / "changed")["fingerprint"] != m["fingerprint"]


def test_an_unbalanced_kto_export_says_which_weight_balances_it():
    from eval.export_labels import balance_hint

    assert balance_hint(3, 29) == "3 good vs 29 bad: train with --kto.desirable_weight 9.67 to balance them"
    assert "--kto.undesirable_weight 4.00" in balance_hint(8, 2)
    assert balance_hint(5, 4) == balance_hint(0, 3) == ""


def test_majority_and_min_raters(store, db_file_url, tmp_path):
    ids = labelled(store)
    flags = ["--format", "kto", "--version", "v1", "--disagreement", "majority"]
    assert export(db_file_url, tmp_path / "majority", *flags) == 0
    # "dogs" takes its 2-of-3 majority; "split" is a tie and stays out.
    assert manifest(tmp_path / "majority")["item_ids"] == [ids["bees"], ids["vague"], ids["dogs"]]
    assert manifest(tmp_path / "majority")["counts"]["items_dropped_tie"] == 1
    dogs = load_from_disk(str(tmp_path / "majority" / "dataset"))[2]
    # An eval item's bare facts render as eval renders a dataset speaker (anonymous persona).
    assert dogs["label"] is True and dogs["prompt"][0]["content"].startswith("You are the person described below.")
    assert export(db_file_url, tmp_path / "two", *flags, "--min_raters", "2") == 0
    assert manifest(tmp_path / "two")["item_ids"] == [ids["bees"], ids["dogs"]]


def test_sft_keeps_the_good_answers_in_a_file_training_reads(store, db_file_url, tmp_path):
    labelled(store)
    out = tmp_path / "sft"
    assert export(db_file_url, out, "--format", "sft") == 0
    rows = load_from_disk(str(out / "dataset")).to_list()
    answers = [r["completion"][0]["content"] for r in rows]
    assert answers == ["I tend my bees and fix clocks.", "Clocks, mostly."] and set(rows[0]) == {"prompt", "completion"}
    conversations, report = read_conversations(out / "sft.jsonl")
    assert report.skipped == 0 and len(conversations) == 2
    assert conversations[0].system == render_system_prompt_of(PERSONA)
    assert conversations[0].turns[-1].text == "I tend my bees and fix clocks."


def render_system_prompt_of(persona: dict) -> str:
    from core.persona import Persona

    return render_system_prompt(Persona.model_validate(persona))


def vote(store, reply_a, reply_b, choice, rater, version_a="v1", version_b="v2") -> int:
    return store.add_preference(
        NewPreference("Ada", PERSONA, ASK, reply_a, reply_b, version_a, version_b, choice, rater)
    )


def test_dpo_pairs_come_from_votes_and_from_good_and_bad_answers(store, db_file_url, tmp_path):
    ids = labelled(store)
    won = [
        vote(store, "Bees, then clocks.", "Nothing.", "a", "r0"),
        vote(store, "Nothing.", "Bees, then clocks.", "b", "r1"),
    ]
    vote(store, "Tea.", "Coffee.", "tie", "r0")
    vote(store, "Tea.", "Naps.", "both_bad", "r0")
    out = tmp_path / "dpo"
    assert export(db_file_url, out, "--format", "dpo") == 0
    rows = load_from_disk(str(out / "dataset")).to_list()
    pairs = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]
    # Two raters agreeing in either blind order are one pair; then good x bad answers to ASK.
    assert pairs == [
        ("Bees, then clocks.", "Nothing."),
        ("I tend my bees and fix clocks.", "Not much, really."),
        ("Clocks, mostly.", "Not much, really."),
    ]
    assert rows[0]["prompt"][0]["role"] == "system" and rows[0]["prompt"][1:] == ASK
    m = manifest(out)
    assert m["preference_ids"] == sorted(won) and m["item_ids"] == sorted([ids["bees"], ids["vague"], ids["other"]])
    assert (
        m["counts"].items()
        >= {"votes_a": 1, "votes_b": 1, "votes_tie": 1, "votes_both_bad": 1, "pairs_from_votes": 1}.items()
    )


@pytest.mark.parametrize("fmt", ["kto", "dpo", "sft"])
def test_no_labels_for_the_version_is_a_clear_error(store, db_file_url, tmp_path, capsys, fmt):
    labelled(store)
    assert export(db_file_url, tmp_path / "out", "--format", fmt, "--version", "v9") == 2
    err = capsys.readouterr().err
    assert "of version v9 to export" in err and "fix:" in err and not (tmp_path / "out").exists()


def test_an_existing_output_folder_is_refused(store, db_file_url, tmp_path, capsys):
    labelled(store)
    (tmp_path / "out").mkdir()
    assert export(db_file_url, tmp_path / "out", "--format", "kto") == 2
    assert "already exists" in capsys.readouterr().err


def test_eval_skips_the_prompts_a_version_was_trained_on(tmp_path):
    """The child's lineage (here: its parent's too) lists prompt keys; eval.run leaves those turns
    out of the sample it scores, and refuses when nothing is left."""
    from eval.config import EvalConfig
    from eval.evaluate import persona_facts
    from eval.run import drop_trained_prompts, label_items, sample_turns

    runs, data = tmp_path / "runs", tmp_path / "chats.jsonl"
    chats = [
        {
            "persona": PERSONA,
            "messages": [
                {"role": "user", "content": f"Question {n}?"},
                {"role": "assistant", "content": f"Answer {n}."},
            ],
        }
        for n in range(8)
    ]
    data.write_text("".join(json.dumps(chat) + "\n" for chat in chats))
    cfg = EvalConfig(model="child", runs_dir=str(runs), data={"path": data, "split_fractions": [0, 0, 1]}, limit=6)
    for name in ("parent", "child"):
        (runs / name / "adapter").mkdir(parents=True)
        (runs / name / "version.json").write_text(json.dumps({"base_model": "default", "created": "2026-01-01"}))
    examples, conversations = sample_turns(cfg)
    items = label_items("child", examples, persona_facts(examples, conversations), [""] * len(examples))
    keys = [prompt_key(item.persona, item.context) for item in items]
    (runs / "parent" / "lineage.json").write_text(json.dumps({"parent": None, "prompt_keys": keys[:1]}))
    (runs / "child" / "lineage.json").write_text(json.dumps({"parent": "parent", "prompt_keys": keys[4:]}))
    kept, skipped = drop_trained_prompts(cfg, examples, conversations)
    assert skipped == 3 and kept == examples[1:4]
    (runs / "child" / "lineage.json").write_text(json.dumps({"parent": "parent", "prompt_keys": keys}))
    with pytest.raises(DatasetError, match="all 6 sampled turns have prompts that child was trained on") as err:
        drop_trained_prompts(cfg, examples, conversations)
    assert "--split test" in err.value.fix
