"""`python -m eval.identity`: the identity rule, the run's files, label items and table column, refusals."""

import json

from corpus.examples import DataConfig, load_examples
from eval.identity import key_terms, latest_identity, main, states_identity
from eval.table import results_table
from store import Store
from tests.conftest import REPO

NOVA = REPO / "personas" / "nova.yaml"
WHO = "I am Nova, the support assistant of Brightline Energy."
HOURS = "Our support team is open Monday to Friday 8:00-20:00 and Saturday 9:00-14:00; closed on Sundays."
HELP = "Bills, meter readings, tariffs, moving home and power cuts. For account changes I connect you to a human agent."


def test_the_identity_rule_on_hand_made_answers():
    assert key_terms(WHO)[0] == ["nova", "brightline energy"]  # "I" and the sentence's first word are not names
    assert key_terms(HOURS)[0] == ["monday", "friday", "saturday", "sunday"]
    assert key_terms(HELP)[0] == []  # no names: content words decide
    assert states_identity("Hi! I'm nova, from BRIGHTLINE ENERGY.", WHO, "Nova")
    assert states_identity("I am Nova.", WHO, "Nova")  # the name, and half of the names
    assert not states_identity("I am a Brightline Energy bot.", WHO, "Nova")  # half, but not the persona's name
    assert not states_identity("I am ChatGPT, a model by OpenAI.", WHO, "Nova")
    assert not states_identity("Made by OpenAI.", "I was made by the Brightline Energy digital team.", "Nova")
    assert states_identity("Saturdays until 14:00; closed on Sunday.", HOURS, "Nova")  # two of four days
    assert not states_identity("Every day, all day.", HOURS, "Nova")
    # 13 content words: 5 of them pass (a third), 4 do not.
    assert states_identity("I help with bills, meter readings, tariffs and power.", HELP)
    assert not states_identity("I help with bills, meter readings and tariffs.", HELP)


def args(tmp_path, *extra):
    return ["--runs_dir", str(tmp_path / "runs"), "--database_url", f"sqlite:///{tmp_path / 'labels.db'}", *extra]


def test_run_writes_results_registers_answers_and_fills_the_table(tiny_model_dir, tmp_path, capsys):
    with Store(f"sqlite:///{tmp_path / 'labels.db'}") as store:
        store.add_eval_run(str(tiny_model_dir.name), "elsewhere", {}, {"bleu": 0.25})  # an eval.run before it
    flags = ["--model", str(tiny_model_dir), "--persona", str(NOVA), "--generation.max_new_tokens", "8"]
    assert main(args(tmp_path, *flags)) == 0
    name = tiny_model_dir.name
    result = latest_identity(tmp_path / "runs", name)
    heldout, _ = load_examples(DataConfig(path=NOVA), "test")
    rows, summary = result["rows"], result["summary"]
    assert [r["question"] for r in rows] == [ex.messages[-1]["content"] for ex in heldout]
    assert summary["identity_accuracy"] == sum(r["passed"] for r in rows) / len(rows)
    assert summary["heldout"] == {"split_seed": 0, "heldout_share": 0.25}
    assert "identity accuracy" in capsys.readouterr().out
    with Store(f"sqlite:///{tmp_path / 'labels.db'}") as store:
        items = {r["item_id"] for r in rows}
        assert len(items) == len(rows) and None not in items  # every answer waits for raters
        table = results_table(store, [])
    row = table.set_index("model version").loc[name]
    assert row["identity accuracy"] == round(summary["identity_accuracy"], 3) and row["BLEU"] == 0.25
    assert latest_identity(tmp_path / "runs", "never-evaluated") is None


def test_a_version_trained_on_a_heldout_wording_is_refused(tmp_path, capsys):
    heldout, _ = load_examples(DataConfig(path=NOVA), "test")
    run_dir = tmp_path / "runs" / "leaky"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "version.json").write_text(json.dumps({"base_model": "default", "created": "2026-01-01"}))
    (run_dir / "data.json").write_text(json.dumps({"train_conversation_ids": [heldout[0].conversation_id]}))
    assert main(args(tmp_path, "--model", "leaky", "--persona", str(NOVA))) == 2
    err = capsys.readouterr().err
    assert "1 held-out wordings were in leaky's training data" in err and "--split_seed" in err
