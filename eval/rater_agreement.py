"""How far the simulated rater's rule agrees with a person: Cohen's kappa on hand-judged items.

    python -m eval.rater_agreement --judgments tests/data/hand_judgments.jsonl

Each line of the judgments file is one answer an eval.run produced (its `persona` facts,
`context` and `reply`) with a person's `verdict` ("good" or "bad") and a one-line `reason`;
tests/data/hand_judgments.md gives the standard they were judged by. The rule
(`eval.simulated_rater.verdict`) labels the same answers, and this reports raw agreement,
Cohen's kappa (scikit-learn's `cohen_kappa_score`: agreement corrected for what two raters
with these label shares would reach by chance) and the confusion matrix (rows: the person,
columns: the rule). It says what the simulated loop proves: a kappa near 0 means the rule's
"good" is not a person's "good", whatever share of answers it calls good.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.errors import DatasetError
from eval.simulated_rater import verdict

LABELS = ("good", "bad")


class AgreementConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    judgments: Path = Field(description="JSONL of hand-judged answers: persona, context, reply, verdict, reason.")


def read_judgments(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(
            f"{path} does not exist", "pass a JSONL of hand judgments, e.g. tests/data/hand_judgments.jsonl"
        )
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    wrong = [i for i, row in enumerate(rows, 1) if row.get("verdict") not in LABELS]
    if wrong:
        raise DatasetError(f"{path}: line {wrong[0]} has no verdict of {LABELS}", "give every line a verdict")
    return rows


def rule_agreement(rows: list[dict]) -> dict:
    """Raw agreement, Cohen's kappa and the confusion matrix of the rule against the person."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    person = [row["verdict"] for row in rows]
    rule = [verdict(row["persona"], row["reply"]) for row in rows]
    matrix = confusion_matrix(person, rule, labels=list(LABELS))  # [person][rule], LABELS order
    return {
        "items": len(rows),
        "agreement": sum(p == r for p, r in zip(person, rule, strict=True)) / len(rows),
        "kappa": float(cohen_kappa_score(person, rule, labels=list(LABELS))),
        "confusion": {p: {r: int(matrix[i][j]) for j, r in enumerate(LABELS)} for i, p in enumerate(LABELS)},
        "person_good": person.count("good"),
        "rule_good": rule.count("good"),
    }


def report_lines(result: dict) -> list[str]:
    c = result["confusion"]
    return [
        f"{result['items']} hand-judged answers: the person calls {result['person_good']} good, "
        f"the rule {result['rule_good']}",
        f"raw agreement {result['agreement']:.1%}, Cohen's kappa {result['kappa']:.3f}",
        f"{'person / rule':<16}{'good':>6}{'bad':>6}",
        f"{'good':<16}{c['good']['good']:>6}{c['good']['bad']:>6}",
        f"{'bad':<16}{c['bad']['good']:>6}{c['bad']['bad']:>6}",
    ]


@entry_point(AgreementConfig, __doc__)
def main(cfg: AgreementConfig) -> int:
    print("\n".join(report_lines(rule_agreement(read_judgments(cfg.judgments)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
