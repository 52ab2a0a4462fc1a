"""SQL pieces the store methods share: result columns, lookups, portable upserts."""

from __future__ import annotations

from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from store.db import StoreError
from store.schema import Base, label_items, labels, raters

R = TypeVar("R", bound=Base)

LABEL_COLUMNS = [
    labels.c.item_id,
    raters.c.name.label("rater"),
    labels.c.verdict,
    labels.c.comment,
    label_items.c.model_version,
    label_items.c.source,
    labels.c.created_at,
    labels.c.updated_at,
]
LABEL_QUERY = sa.select(*LABEL_COLUMNS).select_from(
    labels.join(raters, labels.c.rater_id == raters.c.id).join(label_items, labels.c.item_id == label_items.c.id)
)


def count(*where) -> sa.Select:
    return sa.select(sa.func.count()).where(*where)


def dialect_insert(conn: sa.Connection, table: sa.Table):
    """INSERT with ON CONFLICT support (both backends we run on have it)."""
    return (sqlite if conn.dialect.name == "sqlite" else postgresql).insert(table)


def insert_id(conn: sa.Connection, table: sa.Table, values: dict) -> int:
    return conn.execute(sa.insert(table).values(values)).inserted_primary_key[0]


def require(conn: sa.Connection, table: sa.Table, row_id: int, what: str, lock: bool = False, columns=None) -> sa.Row:
    query = sa.select(*(columns or [table.c.id])).where(table.c.id == row_id)
    row = conn.execute(query.with_for_update(key_share=True) if lock else query).first()
    if row is None:
        raise StoreError(f"there is no {what} {row_id}", f"pass the id of an existing {what}")
    return row


def record(conn: sa.Connection, cls: type[R], row_id: int, what: str) -> R:
    """The row `row_id` of `cls`'s table as a `cls` record; StoreError naming `what` if there is none."""
    table = cls.__table__
    return cls(**require(conn, table, row_id, what, columns=table.c)._mapping)


def rater_id(conn: sa.Connection, name: str, create: bool, known: dict[str, int] | None = None) -> int | None:
    """The rater's id (None: no such rater, unless `create`). `known`: committed name -> id
    pairs (a rater row is never changed or deleted), consulted first and filled here."""
    if known is not None and name in known:
        return known[name]
    if create:
        insert = dialect_insert(conn, raters).values(name=name).on_conflict_do_nothing().returning(raters.c.id)
        added = conn.execute(insert).scalar()
        if added is not None:
            return added  # not remembered: this transaction may still roll back
    found = conn.execute(sa.select(raters.c.id).where(raters.c.name == name)).scalar()
    if found is not None and known is not None:
        # Committed: a read sees only committed rows, and a write's insert that found a
        # conflict waited for (SQLite: was queued behind) the transaction that added the name.
        known[name] = found
    return found
