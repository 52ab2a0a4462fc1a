"""What to label next: reorder the Label queue (store.quality.QUEUE_ORDER states the rule).

    python -m eval.label_next          # reorder once; prints which versions are still open
    from eval.label_next import refresh_queue; refresh_queue(store, "runs")   # per queue refill

A version's scorecard decision is *open* while the 95 % interval of its human accuracy minus its
parent's (all labels, Newcombe, as the scorecard's "human accuracy, all labels" row) contains 0,
or while either has no labels. This is the cheap stand-in for the whole scorecard (one read of
the labels, no eval runs): run per queue refill, not per label click.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.versions import BASE
from eval.scorecard import default_parent
from eval.significance import two_proportions
from store.boundary import StoreAPI
from store.quality import QUEUE_ORDER

__doc__ += "\n" + QUEUE_ORDER


def open_versions(labels: Iterable, versions: Iterable[str], parents: dict[str, str]) -> list[str]:
    """The `versions` (not base) whose decision against `parents[version]` is still open."""
    good, n = Counter(), Counter()
    for row in labels:
        n[row.model_version] += 1
        good[row.model_version] += row.verdict == "good"
    still_open = []
    for version in versions:
        parent = parents.get(version, BASE)
        if version in (BASE, parent):
            continue
        if not n[version] or not n[parent]:
            still_open.append(version)
            continue
        _, low, high, _ = two_proportions(good[version], n[version], good[parent], n[parent])
        if low <= 0 <= high:
            still_open.append(version)
    return sorted(still_open)


def refresh_queue(store: StoreAPI, runs_dir: str | Path = "runs") -> tuple[list[str], int]:
    """Reorder the queue: (the open versions, how many items changed place)."""
    labels = store.label_rows()
    versions = {c["model_version"] for c in store.item_counts()}
    parents = {v: default_parent(runs_dir, v) for v in versions}
    still_open = open_versions(labels, versions, parents)
    return still_open, store.order_queue(still_open)


class LabelNextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs_dir: Path = Field(Path("runs"), description="Trained versions (for each version's parent).")
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")


@entry_point(LabelNextConfig, __doc__)
def main(cfg: LabelNextConfig) -> int:
    from store import Store

    with Store(cfg.database_url) as store:
        still_open, moved = refresh_queue(store, cfg.runs_dir)
    print(f"open versions: {', '.join(still_open) or 'none'}; {moved} items changed place")
    return 0


if __name__ == "__main__":
    sys.exit(main())
