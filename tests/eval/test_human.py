"""Human accuracy: the Wilson interval against known values, and the per-version table."""

import math
from datetime import UTC, datetime

import pytest

from eval.human import human_accuracy, wilson_interval
from store import LabelRow


def test_wilson_known_value():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


@pytest.mark.parametrize(("good", "n"), [(0, 5), (1, 1), (8, 10), (37, 50), (50, 50), (3, 200)])
def test_wilson_matches_scipy(good, n):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(good, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(good, n, z=stats.norm.ppf(0.975))
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    low, high = wilson_interval(5, 10)
    assert math.isclose(0.5 - low, high - 0.5)  # symmetric at p = 0.5
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def row(item_id: int, rater: str, verdict: str, model_version: str) -> LabelRow:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    return LabelRow(item_id, rater, verdict, "", model_version, "eval", t, t)


def test_human_accuracy_per_version():
    rows = [
        row(1, "kim", "good", "v1"),
        row(1, "lee", "bad", "v1"),  # the same item twice: both labels count
        row(2, "kim", "good", "v1"),
        row(3, "kim", "bad", "base"),
        row(4, "kim", "good", "base"),
    ]
    table = human_accuracy(rows)
    assert [t["model_version"] for t in table] == ["base", "v1"]
    v1 = table[1]
    assert {k: v1[k] for k in ["good", "labelled", "items", "raters"]} == {
        "good": 2,
        "labelled": 3,
        "items": 2,
        "raters": 2,
    }
    assert v1["accuracy"] == pytest.approx(2 / 3)
    assert (v1["wilson_low"], v1["wilson_high"]) == wilson_interval(2, 3)
    assert table[0]["accuracy"] == 0.5


def test_human_accuracy_takes_mappings_and_nothing():
    assert human_accuracy([]) == []
    table = human_accuracy([{"item_id": 1, "rater": "kim", "verdict": "good", "model_version": "v2"}])
    assert table[0]["good"] == 1 and table[0]["wilson_high"] == pytest.approx(1.0)
