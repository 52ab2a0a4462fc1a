"""Persistence for Persona Studio: the one package that talks to the database.

    from store import Store
    store = Store()  # $DATABASE_URL, else sqlite:///data/persona_studio.db
    item, progress = store.next_item("kim")  # what kim labels next (None: nothing left), how far they are
    done = store.label(item.id, "kim", "good", and_next=True)  # done.label; done.next: kim's next (item, progress)

SQLite (default) or PostgreSQL (`DATABASE_URL=postgresql://user:pw@host:5432/db`). An empty
database gets the tables; an older one is upgraded only by `Store(migrate=True)` (the app on
start) or `python -m store.migrate`, and refused by everything else.

Modules: `schema` (the tables, each declared once, and the records built from them), `records`
(the other values), `upgrade` (create or migrate on open), `store` (`Store`), `raters` (its
methods for the organiser: gold items, repeats, queue order, label times, progress), `assign`
(the queue), `quality` (gold items, repeats, what to label next), `history` (turns), `votes` (A/B
preferences), `timing` (seconds per label), `sql` (shared query pieces), `db` (engine, SQLite
settings), `migrate` (the command), `migrations` (Alembic's revisions), `boundary` (`StoreAPI`:
what the app calls, and the check that refuses what cannot cross to a child process), `process`
(a store served by a child process: the app's).
"""

from store.boundary import CheckedStore, StoreAPI
from store.db import StoreError, database_url, mask_url
from store.quality import QUEUE_ORDER, QueueMix
from store.records import (
    VOTES,
    BlindItem,
    Labelled,
    LabelRow,
    NewItem,
    NewPreference,
    Next,
    PreferenceRow,
    Progress,
    RepeatRow,
    Verdict,
    Vote,
    prompt_key,
)
from store.schema import EvalRun, Item, Turn
from store.store import Store

__all__ = [
    "BlindItem",
    "CheckedStore",
    "EvalRun",
    "Item",
    "Labelled",
    "LabelRow",
    "NewItem",
    "NewPreference",
    "Next",
    "PreferenceRow",
    "Progress",
    "QUEUE_ORDER",
    "QueueMix",
    "RepeatRow",
    "Store",
    "StoreAPI",
    "StoreError",
    "Turn",
    "VOTES",
    "Verdict",
    "Vote",
    "database_url",
    "mask_url",
    "prompt_key",
]
