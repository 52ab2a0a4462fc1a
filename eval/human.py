"""Human accuracy per model version, from the raters' good/bad labels (no database here).

    rows = Store().label_rows()
    table = human_accuracy(rows)  # one dict per model version, `base` first

Accuracy counts labels, not items: an item two raters labelled counts twice, so each
rater's judgement weighs the same. The Wilson score interval is used because it stays
inside [0, 1] and is honest with the few dozen labels a version typically gets.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

BASE = "base"  # core.versions.BASE; not imported so this module stays dependency-free


def wilson_interval(good: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for `good` successes out of `n` (z = 1.96: 95 %).
    With no labels nothing is known: (0.0, 1.0)."""
    if not 0 <= good <= n:
        raise ValueError(f"need 0 <= good <= n, got good={good}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = good / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def human_accuracy(rows: Iterable[Any], z: float = 1.96, leave_out: Collection[str] = ()) -> list[dict]:
    """One row per model version: good, labelled, accuracy, wilson_low, wilson_high, items
    (distinct items labelled), raters (distinct raters), raters_left_out and labels_left_out
    (the labels of the `leave_out` raters, e.g. eval.rater_quality.left_out: below a gold-accuracy
    threshold, are not counted). `rows` are `Store.label_rows()` (or mappings with model_version,
    verdict, item_id, rater); `base` first, then by name."""
    groups: dict[str, list] = {}
    dropped: dict[str, list] = {}
    for row in rows:
        version = _field(row, "model_version")
        (dropped if _field(row, "rater") in leave_out else groups).setdefault(version, []).append(row)
    table = []
    for version in sorted(groups, key=lambda v: (v != BASE, v)):
        labels = groups[version]
        good = sum(_field(r, "verdict") == "good" for r in labels)
        low, high = wilson_interval(good, len(labels), z)
        table.append(
            {
                "model_version": version,
                "good": good,
                "labelled": len(labels),
                "accuracy": good / len(labels),
                "wilson_low": low,
                "wilson_high": high,
                "items": len({_field(r, "item_id") for r in labels}),
                "raters": len({_field(r, "rater") for r in labels}),
                "raters_left_out": len({_field(r, "rater") for r in dropped.get(version, [])}),
                "labels_left_out": len(dropped.get(version, [])),
            }
        )
    return table
