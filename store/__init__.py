"""Persistence for Persona Studio: the one package that talks to the database.

    from store import Store
    store = Store()  # $DATABASE_URL, else sqlite:///data/persona_studio.db
    item = store.next_item("kim")
    store.label(item.id, "kim", "good")

SQLite (default) or PostgreSQL (`DATABASE_URL=postgresql://user:pw@host:5432/db`).
"""

from store.db import StoreError, database_url, mask_url
from store.records import BlindItem, EvalRun, Item, LabelRow, NewItem, Progress, Turn, Verdict
from store.store import Store

__all__ = [
    "BlindItem",
    "EvalRun",
    "Item",
    "LabelRow",
    "NewItem",
    "Progress",
    "Store",
    "StoreError",
    "Turn",
    "Verdict",
    "database_url",
    "mask_url",
]
