"""`python -m eval.rater_agreement` on the checked-in hand judgments: kappa is sklearn's, the
confusion matrix adds up to the items and to each side's "good" count."""

from sklearn.metrics import cohen_kappa_score

from eval.rater_agreement import main, read_judgments, rule_agreement
from eval.simulated_rater import verdict
from tests.conftest import REPO

JUDGMENTS = REPO / "tests" / "data" / "hand_judgments.jsonl"


def test_rule_agreement_on_the_hand_judgments(capsys):
    rows = read_judgments(JUDGMENTS)
    assert len(rows) == 50 and all(row["reason"].strip() for row in rows)
    person = [row["verdict"] for row in rows]
    rule = [verdict(row["persona"], row["reply"]) for row in rows]
    assert {"good", "bad"} <= set(person)  # both verdicts occur, or kappa says nothing
    result = rule_agreement(rows)
    assert result["kappa"] == cohen_kappa_score(person, rule)
    c = result["confusion"]
    assert sum(c[p][r] for p in c for r in c[p]) == result["items"] == 50
    assert c["good"]["good"] + c["good"]["bad"] == person.count("good") == result["person_good"]
    assert c["good"]["good"] + c["bad"]["good"] == rule.count("good") == result["rule_good"]
    assert result["agreement"] == (c["good"]["good"] + c["bad"]["bad"]) / 50
    assert main(["--judgments", str(JUDGMENTS)]) == 0
    assert f"Cohen's kappa {result['kappa']:.3f}" in capsys.readouterr().out


def test_a_line_without_a_verdict_is_refused(tmp_path, capsys):
    path = tmp_path / "j.jsonl"
    path.write_text('{"persona": "I like cats.", "context": [], "reply": "Cats!", "verdict": "meh"}\n')
    assert main(["--judgments", str(path)]) == 2
    assert "line 1" in capsys.readouterr().err
