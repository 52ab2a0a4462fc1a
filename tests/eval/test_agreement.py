from datetime import datetime

import pytest

from eval.agreement import agreement, fleiss_kappa, metric_vs_human
from store.records import LabelRow

NOW = datetime(2026, 1, 1)


def label(item_id, rater, verdict, version="v1"):
    return LabelRow(item_id, rater, verdict, "", version, "eval", NOW, NOW)


def two_rater_rows(table, version="v1"):
    """Rows for a 2x2 table {(verdict_a, verdict_b): count} of raters a and b."""
    rows, item = [], 0
    for (va, vb), count in table.items():
        for _ in range(count):
            rows += [label(item, "a", va, version), label(item, "b", vb, version)]
            item += 1
    return rows


# Wikipedia, "Cohen's kappa", worked example: 50 proposals, A and B agree yes 20, no 15;
# A yes / B no 5, A no / B yes 10. p_o = 0.7, p_e = 0.5 -> kappa = 0.4.
WIKI_COHEN = {("good", "good"): 20, ("good", "bad"): 5, ("bad", "good"): 10, ("bad", "bad"): 15}

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories -> 0.210.
WIKI_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_cohen_kappa_textbook_table():
    result = agreement(two_rater_rows(WIKI_COHEN))
    assert result["cohen_kappa"] == pytest.approx(0.4)
    assert result["percent_agreement"] == pytest.approx(0.7)
    assert result["overlap_items"] == 50
    assert result["raters"] == ["a", "b"]


def test_fleiss_kappa_textbook_table():
    assert fleiss_kappa(WIKI_FLEISS) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_two_raters_is_scotts_pi():
    # With two raters Fleiss' kappa is Scott's pi: p_e from the pooled marginals,
    # good share (25 + 30) / 100 = 0.55 -> p_e = 0.55^2 + 0.45^2 = 0.505; (0.7 - 0.505) / 0.495.
    result = agreement(two_rater_rows(WIKI_COHEN))
    assert result["fleiss_kappa"] == pytest.approx(0.195 / 0.495)
    assert (result["fleiss_items"], result["fleiss_ratings_per_item"]) == (50, 2)


def test_fleiss_kappa_rejects_uneven_rows():
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 1], [2, 1]])


def test_percent_agreement_by_hand_with_three_raters():
    rows = [
        # item 1: good, good, bad -> 1 of 3 pairs agree
        label(1, "a", "good"),
        label(1, "b", "good"),
        label(1, "c", "bad"),
        # item 2: all good -> 3 of 3
        label(2, "a", "good"),
        label(2, "b", "good"),
        label(2, "c", "good"),
        # item 3: two raters, disagree -> 0 of 1
        label(3, "a", "good"),
        label(3, "b", "bad"),
        # item 4: one rater only -> not an overlap item
        label(4, "a", "bad"),
    ]
    result = agreement(rows)
    assert result["items"] == 4
    assert result["overlap_items"] == 3
    assert result["percent_agreement"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert result["cohen_kappa"] is None  # three raters
    # Fleiss on the two items with three ratings: P_i = 1/3, 1; p_good = 5/6.
    p_obs, p_e = (1 / 3 + 1) / 2, (5 / 6) ** 2 + (1 / 6) ** 2
    assert result["fleiss_kappa"] == pytest.approx((p_obs - p_e) / (1 - p_e))
    assert (result["fleiss_items"], result["fleiss_ratings_per_item"]) == (2, 3)


def test_relabel_keeps_the_last_verdict():
    rows = [label(1, "a", "bad"), label(1, "a", "good"), label(1, "b", "good")]
    assert agreement(rows)["percent_agreement"] == 1.0


def test_by_version_splits_items():
    rows = two_rater_rows(WIKI_COHEN, "v1") + [
        label(100, "a", "good", "base"),
        label(100, "b", "good", "base"),
        label(101, "a", "bad", "base"),
        label(101, "b", "good", "base"),
    ]
    result = agreement(rows)
    assert result["overlap_items"] == 52
    assert list(result["by_version"]) == ["base", "v1"]
    assert result["by_version"]["v1"]["cohen_kappa"] == pytest.approx(0.4)
    base = result["by_version"]["base"]
    assert base["overlap_items"] == 2
    assert base["percent_agreement"] == 0.5
    assert base["cohen_kappa"] == pytest.approx(0.0)  # b always says good: no agreement beyond chance


def test_one_verdict_throughout_has_no_kappa():
    rows = two_rater_rows({("good", "good"): 5})
    result = agreement(rows)
    assert result["percent_agreement"] == 1.0
    assert result["cohen_kappa"] is None
    assert result["fleiss_kappa"] is None


@pytest.mark.parametrize("rows", [[], [label(1, "a", "good"), label(2, "b", "bad")]])
def test_empty_and_no_overlap(rows):
    result = agreement(rows)
    assert result["overlap_items"] == 0
    assert result["raters"] == []
    assert result["percent_agreement"] is None
    assert result["cohen_kappa"] is None
    assert result["fleiss_kappa"] is None
    assert result["fleiss_items"] == 0


def test_metric_vs_human_hand_case():
    verdicts = [1, 1, 1, 0, 0, 0]
    # good: 0.9, 0.8, 0.3; bad: 0.4, 0.2, 0.1 -> 8 of 9 good/bad pairs ordered right.
    result = metric_vs_human({"bleu": [0.9, 0.8, 0.3, 0.4, 0.2, 0.1]}, verdicts)["bleu"]
    assert result["auc"] == pytest.approx(8 / 9)
    # Point-biserial r = (M1 - M0) / s_n * sqrt(p q): M1 = 2/3, M0 = 0.7/3, s_n over all six.
    values = [0.9, 0.8, 0.3, 0.4, 0.2, 0.1]
    mean = sum(values) / 6
    s_n = (sum((v - mean) ** 2 for v in values) / 6) ** 0.5
    assert result["point_biserial"] == pytest.approx((2 / 3 - 0.7 / 3) / s_n * 0.5)
    assert 0 < result["p_value"] < 1
    assert (result["n"], result["n_good"], result["reason"]) == (6, 3, None)


def test_metric_vs_human_reversed_metric_and_missing_values():
    verdicts = [1, 1, 1, 0, 0, 0, 1]
    result = metric_vs_human({"length": [1, 2, 3, 4, 5, 6, None]}, verdicts)["length"]
    assert result["n"] == 6
    assert result["auc"] == 0.0  # every good item is shorter than every bad one
    assert result["point_biserial"] < 0


def test_metric_vs_human_refuses_with_a_reason():
    result = metric_vs_human(
        {"one_class": [0.1, 0.2, 0.3, 0.4, 0.5], "few": [0.1, 0.2, None, None, None], "flat": [1.0] * 5},
        [1, 1, 1, 1, 1],
    )
    assert result["one_class"]["auc"] is None and "good" in result["one_class"]["reason"]
    assert result["few"]["auc"] is None and "2 scored items" in result["few"]["reason"]
    flat = metric_vs_human({"flat": [1.0] * 6}, [1, 0, 1, 0, 1, 0])["flat"]
    assert flat["auc"] == 0.5 and flat["point_biserial"] is None and "constant" in flat["reason"]


def test_metric_vs_human_checks_its_input():
    assert metric_vs_human({}, []) == {}
    with pytest.raises(ValueError):
        metric_vs_human({"bleu": [0.1, 0.2]}, [1])
    with pytest.raises(ValueError):
        metric_vs_human({"bleu": [0.1]}, [2])
