"""`python -m eval.run` and `python -m eval.report`: end to end, and the inputs they refuse."""

import json

import pandas as pd
import pytest

from corpus.examples import read_conversations, split_conversations
from eval.report import main as report_main
from eval.run import main as run_main


def args(tmp_path, *extra):
    return ["--runs_dir", str(tmp_path / "runs"), "--database_url", f"sqlite:///{tmp_path / 'labels.db'}", *extra]


def test_unknown_version_lists_the_ones_that_exist(tmp_path, capsys):
    assert run_main(args(tmp_path, "--model", "nope")) == 2
    err = capsys.readouterr().err
    assert "no model version 'nope'" in err and "pick one of: base" in err


def fake_version(tmp_path, spc_csv, split: str) -> str:
    """A finished version whose recorded training conversations are the given split."""
    conversations, _ = read_conversations(spc_csv)
    ids = [c.id for c in split_conversations(conversations)[split]]
    run_dir = tmp_path / "runs" / "leaky"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "version.json").write_text(json.dumps({"base_model": "default", "created": "2026-01-01"}))
    (run_dir / "data.json").write_text(json.dumps({"train_conversation_ids": ids}))
    return "leaky"


def test_turns_the_version_was_trained_on_are_refused(tmp_path, spc_csv, capsys):
    version = fake_version(tmp_path, spc_csv, "test")
    assert run_main(args(tmp_path, "--model", version, "--data", str(spc_csv))) == 2
    err = capsys.readouterr().err
    assert "99 of the 99 test conversations were in leaky's training data" in err and "--allow_overlap" in err


@pytest.mark.slow
def test_end_to_end_on_the_default_model(tmp_path, store, spc_csv, capsys):
    out = tmp_path / "eval-out"
    flags = ["--model", "base", "--data", str(spc_csv), "--limit", "4", "--batch_size", "4",
             "--generation.max_new_tokens", "24", "--swap_probe_items", "2", "--hits_items", "2",
             "--out", str(out)]  # fmt: skip
    assert run_main(args(tmp_path, *flags)) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ["bleu", "rouge1", "rougeL", "f1", "bertscore_f1", "perplexity", "distinct_2", "avg_length",
                "persona_consistency", "swap_retention"]:  # fmt: skip
        assert isinstance(summary[key], float), key
    assert summary["items"] == 4 and summary["decoding"]["temperature"] == 0.0
    assert summary["hits_at_1"] in (0.0, 0.5, 1.0) and summary["hits_items"] == 2
    assert 1 < summary["perplexity"] < 1000
    rows = pd.read_json(out / "rows.jsonl", lines=True)
    assert len(rows) == 4 and rows["reply"].str.len().gt(0).all()
    assert not rows["reply"].str.contains("User 1:|User 2:").any()
    for name in ["rows.csv", "table.md", "metrics.png", "config.yaml"]:
        assert (out / name).is_file(), name
    run = store.latest_eval_run("base")  # the `store` fixture opens the same labels.db
    assert run is not None and run.summary["items"] == 4
    assert store.item(int(rows["item_id"][0])).answer == rows["reply"][0]  # replies are in the label queue
    first = store.next_item("rita").item
    store.label(first.id, "rita", "good")
    capsys.readouterr()
    assert report_main(args(tmp_path)[:4] + ["--format", "md"]) == 0
    report = capsys.readouterr().out
    assert "| base" in report and "BLEU" in report and "100" in report  # one good label of one: 100 %
