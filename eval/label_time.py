"""Seconds per label, per rater: from the item shown (handed out by the server's queue) to
the verdict saved, as `Store.label_times` records them (`store.timing`). The median, since a
rater who leaves an item on screen over lunch makes one label take an hour; the middle half
(25th-75th percentile) says how steady the pace is.

A label saved within `MIN_SECONDS` of its item being handed out was not read by a person:
`Store.label` called by a script (eval.simulated_rater) or a chat thumb assigns and labels in
one write, milliseconds apart. Those are left out and counted.

    from eval.label_time import label_time_table
    label_time_table(store.label_times())   # rater | labels timed | median s per label | middle 50 % (s)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

COLUMNS = ["rater", "labels timed", "median s per label", "middle 50 % (s)", "left out (< 0.25 s)"]
MIN_SECONDS = 0.25  # faster than anyone reads an item and clicks; a script's label takes ~0.005 s


def label_time_table(times: Iterable) -> pd.DataFrame:
    """One row per rater (objects with `rater` and `seconds`, e.g. `store.timing.LabelTime`),
    most labels timed first; labels faster than `MIN_SECONDS` are left out and counted."""
    per_rater: dict[str, list[float]] = {}
    too_fast: dict[str, int] = {}
    for t in times:
        per_rater.setdefault(t.rater, [])
        if t.seconds >= MIN_SECONDS:
            per_rater[t.rater].append(t.seconds)
        else:
            too_fast[t.rater] = too_fast.get(t.rater, 0) + 1
    rows = []
    for rater, seconds in per_rater.items():
        low, median, high = np.percentile(seconds, [25, 50, 75]) if seconds else (np.nan,) * 3
        middle = f"{low:.1f}–{high:.1f}" if seconds else ""
        rows.append([rater, len(seconds), round(float(median), 1), middle, too_fast.get(rater, 0)])
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["labels timed", "rater"], ascending=[False, True], ignore_index=True)
