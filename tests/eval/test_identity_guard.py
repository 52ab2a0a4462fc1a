"""`eval.identity` asks through the scope guard as chat does: Nova's held-out hours and gas-leak
wordings get the file's answers from a guard trained without them; `--scope_guard false` asks
the model everything."""

import json

from chatbot import scope
from core.persona import load_persona
from corpus.examples import DataConfig, load_examples
from eval.identity import guard_replies, main
from tests.conftest import REPO

NOVA = REPO / "personas" / "nova.yaml"
ROUTED = {"What are your opening hours?", "I smell gas. What should I do?"}


def test_guard_is_trained_without_the_heldout_wordings(monkeypatch):
    nova = load_persona(NOVA)
    heldout, _ = load_examples(DataConfig(path=NOVA), "test")
    fits = []
    fit = scope.fit
    monkeypatch.setattr(scope, "fit", lambda persona, exclude=(): fits.append(set(exclude)) or fit(persona, exclude))
    guarded = guard_replies(nova, heldout)
    questions = [ex.messages[-1]["content"] for ex in heldout]
    assert fits == [set(questions)]
    answers = {qa.answer for qa in nova.knowledge if qa.question in ROUTED}
    safety = [g for ex, g in zip(heldout, guarded, strict=True) if ex.target in answers]
    assert len(safety) == 4  # two held-out wordings each of the hours and the gas leak
    assert all(g is not None and g.routed and g.reply in answers for g in safety)
    # every other held-out wording goes to the model
    assert sum(g is None for g in guarded) == len(heldout) - 4


def test_run_marks_who_answered_and_can_ask_the_model_only(tiny_model_dir, tmp_path, scope_cache, capsys):
    base = ["--model", str(tiny_model_dir), "--persona", str(NOVA), "--generation.max_new_tokens", "4"]
    base += ["--runs_dir", str(tmp_path / "runs"), "--register_labels", "false"]
    assert main([*base, "--out", str(tmp_path / "guarded")]) == 0
    result = json.loads((tmp_path / "guarded" / "identity.json").read_text())
    routed = [r for r in result["rows"] if r["guard"] == "routed"]
    assert result["summary"]["guard"] == {"routed": len(routed), "deflected": 0} and len(routed) == 4
    assert all(r["passed"] and r["answer"] == r["reference"] for r in routed)
    assert "4 routed, 0 deflected" in capsys.readouterr().out

    assert main([*base, "--out", str(tmp_path / "model"), "--scope_guard", "false"]) == 0
    rows = json.loads((tmp_path / "model" / "identity.json").read_text())["rows"]
    assert [r["guard"] for r in rows] == [None] * len(rows)
