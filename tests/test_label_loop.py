"""The human-eval loop end to end on the tiny Llama, through the app's API: a version chats,
a rater labels its replies (/label_reply) and votes A/B (/compare + /vote) -> eval.export_labels
(kto, dpo) -> 3 KTO and 3 DPO steps from that version -> children that record their parent ->
new labels and votes on the child and the parent -> the scorecard (/scorecard), its deltas
checked by hand, with the prompts the child was trained on left out."""

import json

import pytest
from gradio_client import Client
from scipy.stats import binomtest

from core.versions import find_version
from eval.export_labels import main as export_main
from store import Store
from tests.conftest import REPO, serving, studio_context
from training.train import main as train_main

# Three trainings and a served app: half a minute on 2 cores.
pytestmark = pytest.mark.slow

RECIPE = str(REPO / "training" / "recipes" / "tiny-test.yaml")
TRAINED = ["What do you do all day?", "Any pets?", "Where do you live?", "What is in your shed?"]
HELD_OUT = ["Do you like tea?", "What did you teach?", "How old are your clocks?", "Who visits you?"]


def chat_jsonl(path):
    rows = [
        {
            "persona": ["I build clocks.", "I keep bees."],
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": "My clocks and my bees keep me busy."},
            ],
        }  # fmt: skip
        for q in TRAINED + HELD_OUT
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def loop(tiny_model_dir, tiny_engine, tmp_path_factory):
    """(client, runs dir, exports) after round one: `parent` (two SFT steps on the tiny Llama)
    answered TRAINED, rita labelled them (good, bad, good, bad) and preferred parent over base
    twice; both exports are written and the two children trained from them."""
    tmp = tmp_path_factory.mktemp("loop")
    runs = tmp / "runs"  # where studio_context's pool looks for versions
    flags = ["--config", RECIPE, "--model.name", str(tiny_model_dir), "--output.dir", str(runs)]
    data = ["--data.path", str(chat_jsonl(tmp / "chats.jsonl")), "--data.split_fractions", "[1.0, 0.0, 0.0]"]
    # A large step, so the parent's greedy replies differ from base's (a vote between two equal
    # replies is no preference, and the dpo export drops it).
    assert (
        train_main([*flags, *data, "--max_steps", "2", "--sft.learning_rate", "0.05", "--output.version", "parent"])
        == 0
    )
    db = f"sqlite:///{tmp / 'labels.db'}"
    personas = tmp / "personas"  # a short persona: prompts fit the tiny recipe's 128 tokens
    personas.mkdir()
    (personas / "bo.yaml").write_text("name: Bo\nfacts:\n  - I keep bees.\n  - I build clocks.\n")
    with Store(db) as store, serving(studio_context(tmp, store, {"base": tiny_engine}, personas_dir=personas)) as url:
        client = Client(url, verbose=False)
        for n, question in enumerate(TRAINED):
            _, _, turn = client.predict(message=question, persona="bo", version="parent", api_name="/chat")
            verdict = "good" if n % 2 == 0 else "bad"
            client.predict(turn_id=turn, verdict=verdict, comment="", rater="rita", api_name="/label_reply")
        for question in TRAINED[:2]:
            conv_a, _, conv_b, _ = client.predict(
                message=question, persona="bo", version_a="parent", version_b="base", api_name="/compare"
            )
            client.predict(conversation_a=conv_a, conversation_b=conv_b, vote="a", rater="rita", api_name="/vote")
        exports = {}
        for fmt in ("kto", "dpo"):
            exports[fmt] = tmp / fmt
            assert (
                export_main(["--database_url", db, "--format", fmt, "--version", "parent", "--out", str(tmp / fmt)])
                == 0
            )
            method_flags = [f"--{fmt}.per_device_train_batch_size", "2", f"--{fmt}.learning_rate", "1e-3"]
            assert train_main([*flags, "--method", fmt, "--from_version", "parent", "--data.path", str(exports[fmt]),
                               "--max_steps", "3", "--output.version", f"child-{fmt}", *method_flags]) == 0  # fmt: skip
        yield client, runs, exports


def manifest(export) -> dict:
    return json.loads((export / "manifest.json").read_text())


def test_labels_and_votes_from_the_app_become_the_exports(loop):
    _, _, exports = loop
    kto, dpo = manifest(exports["kto"]), manifest(exports["dpo"])
    rows = [json.loads(line) for line in (exports["kto"] / "kto.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [True, False, True, False]  # the four 👍/👎, in order
    assert rows[1]["prompt"][0]["role"] == "system" and rows[1]["prompt"][-1] == {
        "role": "user",
        "content": "Any pets?",
    }
    assert len(kto["item_ids"]) == len(kto["prompt_keys"]) == 4 and kto["preference_ids"] == []
    pairs = [json.loads(line) for line in (exports["dpo"] / "dpo.jsonl").read_text().splitlines()]
    assert len(pairs) == len(dpo["preference_ids"]) == 2  # one per vote (no prompt has a good and a bad answer)
    assert [p["prompt"][-1]["content"] for p in pairs] == TRAINED[:2]


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_each_child_records_its_parent_and_what_trained_it(loop, method):
    _, runs, exports = loop
    child, exported = find_version(f"child-{method}", runs), manifest(exports[method])
    assert child.parent == "parent" and child.lineage()["method"] == method
    assert child.lineage()["prompt_keys"] == exported["prompt_keys"]
    assert child.lineage()["preference_ids"] == exported["preference_ids"]


def test_the_scorecard_scores_the_child_on_new_labels_only(loop):
    client, _, _ = loop
    # Round two, on questions nobody trained on: the child's answers are labelled good 3 of 4
    # times, the parent's 1 of 4 (the same prompts: paired), and the child wins 3 of 4 votes.
    for n, question in enumerate(HELD_OUT):
        for version, good in (("child-kto", n != 3), ("parent", n == 0)):
            _, _, turn = client.predict(message=question, persona="bo", version=version, api_name="/chat")
            verdict = "good" if good else "bad"
            client.predict(turn_id=turn, verdict=verdict, comment="", rater="rita", api_name="/label_reply")
        conv_a, _, conv_b, _ = client.predict(
            message=question, persona="bo", version_a="child-kto", version_b="parent", api_name="/compare"
        )
        vote = "a" if n != 3 else "b"
        client.predict(conversation_a=conv_a, conversation_b=conv_b, vote=vote, rater="rita", api_name="/vote")

    card = client.predict("child-kto", "", api_name="/scorecard")  # "": the parent from its lineage
    assert (card["child"], card["parent"]) == ("child-kto", "parent")
    rows = {r["metric"]: r for r in card["rows"]}
    paired = rows["human accuracy, same prompts"]
    # Round one's four labels on the parent are of prompts the child was trained on: left out.
    assert (paired["child"], paired["parent"], paired["delta"], paired["n"]) == (0.75, 0.25, 0.5, 4)
    assert paired["p_value"] == pytest.approx(0.5)  # McNemar: 2 prompts fixed, 0 broken -> 2 * 0.5**2
    every = rows["human accuracy, all labels"]
    assert (every["child"], every["parent"], every["n"]) == (0.75, 0.25, 8)
    ab = rows["A/B win rate of the child"]
    assert (ab["child"], ab["delta"], ab["n"]) == (0.75, 0.25, 4)  # the parent-vs-base votes are another pair
    assert ab["p_value"] == pytest.approx(binomtest(3, 4).pvalue) == pytest.approx(0.625)
    assert not any(r["significant"] for r in card["rows"])  # 4 prompts prove nothing, and it says so
    assert any("trained on 4 prompts" in note for note in card["notes"])
