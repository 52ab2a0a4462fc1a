"""`training.train --method kto|dpo|sft --from_version V` on the tiny Llama: labels and votes in
the store -> eval.export_labels -> a few steps -> a child version with its lineage."""

import json

import pytest
import torch
from safetensors.torch import load_file

from core.versions import find_version
from engines.config import EngineConfig, GenerationSettings
from engines.factory import load_engine
from eval.export_labels import main as export_main
from store import NewItem, NewPreference, Store
from tests.conftest import REPO
from training.train import main as train_main

RECIPE = str(REPO / "training" / "recipes" / "tiny-test.yaml")
PERSONA = {"name": "Ada", "facts": ["I keep three beehives.", "I build clocks in my shed."]}
QUESTIONS = ["What do you do all day?", "Any pets?", "Where do you live?", "What is in your shed?"]


def adapter_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def loop(tiny_model_dir, tmp_path_factory):
    """Labels and votes on answers of version `parent`, the three exports, and `parent` itself:
    one SFT step on the sft export's chat JSONL (a dataset file like any other)."""
    root = tmp_path_factory.mktemp("loop")
    runs, db = root / "runs", f"sqlite:///{root / 'labels.db'}"
    with Store(db) as store:
        for n, question in enumerate(QUESTIONS):
            context = [{"role": "user", "content": question}]
            good = NewItem("eval", "Ada", PERSONA, context, f"My bees and clocks keep me busy ({n}).", "parent")
            bad = NewItem("eval", "Ada", PERSONA, context, f"I do not know ({n}).", "parent")
            good_id, bad_id = store.add_label_items([good, bad])
            store.label(good_id, "rita", "good")
            store.label(bad_id, "rita", "bad")
            store.add_preference(NewPreference("Ada", PERSONA, context, good.answer, bad.answer, "parent", "base",
                                               "a", "rita"))  # fmt: skip
    exports = {}
    for fmt in ("kto", "dpo", "sft"):
        exports[fmt] = root / fmt
        assert (
            export_main(["--database_url", db, "--format", fmt, "--version", "parent", "--out", str(root / fmt)]) == 0
        )
    flags = ["--config", RECIPE, "--model.name", str(tiny_model_dir), "--output.dir", str(runs)]
    assert train_main([*flags, "--data.path", str(exports["sft"] / "sft.jsonl"), "--data.split_fractions",
                       "[1.0, 0.0, 0.0]", "--max_steps", "1", "--output.version", "parent"]) == 0  # fmt: skip
    assert find_version("parent", runs).lineage() == {}  # a dataset file: no lineage
    return {"runs": runs, "flags": flags, "exports": exports}


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_three_steps_make_a_child_that_records_its_parent_and_labels(loop, method):
    runs, export = loop["runs"], loop["exports"][method]
    child = f"child-{method}"
    extra = [f"--{method}.per_device_train_batch_size", "2", f"--{method}.learning_rate", "1e-3"]
    assert train_main([*loop["flags"], "--method", method, "--from_version", "parent", "--data.path", str(export),
                       "--max_steps", "3", "--output.version", child, *extra]) == 0  # fmt: skip
    version = find_version(child, runs)
    manifest = json.loads((export / "manifest.json").read_text())
    lineage = version.lineage()
    assert version.parent == "parent" and lineage["method"] == method
    assert lineage["prompt_keys"] == manifest["prompt_keys"] and len(lineage["prompt_keys"]) == len(QUESTIONS)
    assert lineage["item_ids"] == manifest["item_ids"] and lineage["preference_ids"] == manifest["preference_ids"]
    assert lineage["data_fingerprint"] == manifest["fingerprint"] and lineage["counts"] == manifest["counts"]
    assert json.loads((runs / child / "metrics.json").read_text())["steps"] == 3
    # The child's adapter is the parent's, moved; TRL's frozen reference copy is not saved.
    before, after = adapter_weights(runs / "parent"), adapter_weights(runs / child)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not (runs / child / "adapter" / "ref").exists()
    # It keeps refusing what its parent was trained on (eval checks these ids).
    assert version.train_conversation_ids() == find_version("parent", runs).train_conversation_ids()
    engine = load_engine(EngineConfig(model=child, runs_dir=str(runs)))
    [reply] = engine.generate(
        [[{"role": "user", "content": "Hi"}]], GenerationSettings(temperature=0, max_new_tokens=4)
    )
    assert isinstance(reply, str)


def test_sft_from_a_version_on_the_good_answers(loop):
    runs, export = loop["runs"], loop["exports"]["sft"]
    assert train_main([*loop["flags"], "--from_version", "parent", "--data.path", str(export),
                       "--max_steps", "1", "--output.version", "child-sft"]) == 0  # fmt: skip
    lineage = find_version("child-sft", runs).lineage()
    assert lineage["method"] == "sft" and lineage["parent"] == "parent" and len(lineage["item_ids"]) == len(QUESTIONS)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "kto", "--from_version", "nope"], "no model version 'nope'"),
        (["--method", "kto"], "no --from_version was given"),
        (["--method", "kto", "--from_version", "base"], "base has no adapter"),
        (["--method", "dpo", "--from_version", "parent", "--data.path", "{kto}"], "holds kto data, not dpo"),
        (["--method", "kto", "--from_version", "parent", "--data.path", str(REPO)], "needs an eval.export_labels"),
    ],
)
def test_bad_input_is_named_with_the_fix(loop, capsys, flags, message):
    flags = [f.format(kto=loop["exports"]["kto"]) for f in flags]
    assert train_main([*loop["flags"], *flags, "--output.version", "never"]) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err
    assert not (loop["runs"] / "never").exists() and not (loop["runs"] / ".partial-never").exists()
