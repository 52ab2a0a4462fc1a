"""The identity recipe end to end on the tiny Llama: nova.yaml mixed with SPC, a version whose
data.json records the mix, then eval.identity on its held-out wordings."""

import json

import pytest

from corpus.examples import DataConfig, load_examples
from eval.identity import latest_identity
from eval.identity import main as identity_main
from tests.conftest import REPO, SPC_CSV
from training.train import main as train_main

RECIPE = REPO / "training" / "recipes" / "smollm2-135m-identity-cpu.yaml"
NOVA = REPO / "personas" / "nova.yaml"


@pytest.mark.skipif(not SPC_CSV.is_file(), reason=f"shared dataset not found at {SPC_CSV}")
def test_identity_recipe_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe names its sources relative to the repository
    runs = tmp_path / "runs"
    flags = ["--config", str(RECIPE), "--model.name", str(tiny_model_dir), "--max_steps", "2"]
    flags += ["--sft.eval_steps", "2", "--sft.save_steps", "2", "--validation.max_examples", "4"]
    # The recipe's dialogue source is the hub dataset; the shared file stands in for it offline.
    mix = [{"path": "personas/nova.yaml", "weight": 0.5}, {"path": str(SPC_CSV), "weight": 0.5}]
    flags += ["--data.mix", json.dumps(mix)]  # a list flag takes JSON
    flags += ["--data.limit", "40"]  # per source: 40 persona wordings, 40 dialogues (tokenising is the cost)
    assert train_main([*flags, "--output.dir", str(runs), "--output.version", "tiny-nova"]) == 0

    data = json.loads((runs / "tiny-nova" / "data.json").read_text())
    persona, spc = data["mix"]
    assert (persona["format"], spc["format"]) == ("persona", "spc") and persona["weight"] == 0.5
    # first_exhausted: every trained wording of the persona once, about as many SPC turns (1:1).
    assert persona["mixed_train_examples"] == persona["train_examples"] == 40
    assert spc["mixed_train_examples"] == pytest.approx(persona["train_examples"], rel=0.35)
    heldout, _ = load_examples(DataConfig(path=NOVA), "test")
    assert persona["heldout_phrasings"] == [ex.messages[-1]["content"] for ex in heldout]
    assert not {ex.conversation_id for ex in heldout} & set(data["train_conversation_ids"])

    args = ["--model", "tiny-nova", "--runs_dir", str(runs), "--persona", "personas/nova.yaml"]
    args += ["--generation.max_new_tokens", "4", "--database_url", f"sqlite:///{tmp_path / 'labels.db'}"]
    assert identity_main(args) == 0
    result = latest_identity(runs, "tiny-nova")
    assert [row["question"] for row in result["rows"]] == persona["heldout_phrasings"]
    assert 0 <= result["summary"]["identity_accuracy"] <= 1
