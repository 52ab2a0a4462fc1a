"""Opening a database: create the tables in an empty one, upgrade an older one, refuse a newer one.

An older database is upgraded only when the caller allows it (`Store(migrate=True)`: the app
on start, and `python -m store.migrate`); anything else that opens it is refused with that fix,
so a report or an eval run never changes the schema under a running app.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from store.db import StoreError
from store.schema import SCHEMA_VERSION, metadata, schema_version

log = logging.getLogger(__name__)

# The statements that bring a database from version n - 1 to n, keyed by n. Plain SQL that
# both SQLite and PostgreSQL run, frozen as written (a step must keep doing what it did when
# the declarations in store.schema change later); each leaves the tables as `create_all` at
# version n makes them, which tests/store/test_schema.py checks. A statement the two write
# differently (CREATE TABLE: an id is SERIAL on PostgreSQL, a time TIMESTAMP) is a dict of
# the two, keyed by dialect name.
Statement = str | dict[str, str]
_V4_PREFERENCES = """CREATE TABLE preferences (
    id {serial} NOT NULL, rater_id INTEGER NOT NULL, conversation_a_id INTEGER, conversation_b_id INTEGER,
    persona_name TEXT NOT NULL, persona JSON NOT NULL, context JSON NOT NULL, reply_a TEXT NOT NULL,
    reply_b TEXT NOT NULL, version_a TEXT NOT NULL, version_b TEXT NOT NULL, vote TEXT NOT NULL,
    created_at {timestamp} NOT NULL,
    CONSTRAINT pk_preferences PRIMARY KEY (id),
    CONSTRAINT ck_preferences_vote_allowed CHECK (vote IN ('a', 'b', 'tie', 'both_bad')),
    CONSTRAINT fk_preferences_rater_id_raters FOREIGN KEY(rater_id) REFERENCES raters (id),
    CONSTRAINT fk_preferences_conversation_a_id_conversations FOREIGN KEY(conversation_a_id)
        REFERENCES conversations (id) ON DELETE SET NULL,
    CONSTRAINT fk_preferences_conversation_b_id_conversations FOREIGN KEY(conversation_b_id)
        REFERENCES conversations (id) ON DELETE SET NULL
)"""
UPGRADES: dict[int, tuple[Statement, ...]] = {
    2: ("ALTER TABLE label_items ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",),
    3: (
        "ALTER TABLE turns ADD COLUMN withdrawn TEXT"
        " CONSTRAINT ck_turns_withdrawn_allowed CHECK (withdrawn IN ('undo', 'retry'))",
        "ALTER TABLE turns ADD COLUMN persona JSON",
        # schema_version becomes a single row (id 1): racing first starts of version 1 or 2 on
        # PostgreSQL could each insert a row into the one-column table.
        "ALTER TABLE schema_version RENAME TO schema_version_2",
        "CREATE TABLE schema_version (id INTEGER NOT NULL, version INTEGER NOT NULL,"
        " CONSTRAINT pk_schema_version PRIMARY KEY (id), CONSTRAINT ck_schema_version_one_row CHECK (id = 1))",
        "INSERT INTO schema_version (id, version) SELECT 1, MAX(version) FROM schema_version_2",
        "DROP TABLE schema_version_2",
    ),
    # Blind A/B votes from the Compare tab.
    4: (
        {
            "sqlite": _V4_PREFERENCES.format(serial="INTEGER", timestamp="DATETIME"),
            "postgresql": _V4_PREFERENCES.format(serial="SERIAL", timestamp="TIMESTAMP WITHOUT TIME ZONE"),
        },
        "CREATE INDEX ix_preferences_conversation_a_id ON preferences (conversation_a_id)",
        "CREATE INDEX ix_preferences_conversation_b_id ON preferences (conversation_b_id)",
        "CREATE INDEX ix_preferences_rater_id ON preferences (rater_id)",
    ),
    # The queue's holder count as a column (store.schema.Item.holders), filled from assignments.
    5: (
        "ALTER TABLE label_items ADD COLUMN holders INTEGER NOT NULL DEFAULT 0",
        "UPDATE label_items SET holders ="
        " (SELECT COUNT(*) FROM assignments WHERE assignments.item_id = label_items.id)",
        "CREATE INDEX ix_label_items_queue ON label_items (priority DESC, id, holders)",
    ),
}

# Any fixed 64-bit number ("persona1" in ASCII): the PostgreSQL advisory lock that `ensure` takes.
LOCK_KEY = 0x70657273_6F6E6131

MIGRATE_FIX = (
    "back the database up, then upgrade it: `python -m store.migrate` (reads DATABASE_URL, or pass "
    "--database_url), or start the app (python app.py), which upgrades on start"
)


def ensure(conn: sa.Connection, url: str, migrate: bool) -> int | None:
    """Make the database in `conn`'s write transaction match `SCHEMA_VERSION`: create the tables
    in a database without any of ours; upgrade an older one if `migrate`, else raise StoreError.
    Returns the version found, None when the tables were created (`url` is for messages)."""
    if conn.dialect.name == "postgresql":
        # Two first starts on an empty database would both create the tables (one fails); two
        # upgrades would run the same step twice. The second waits here for the first's commit,
        # then sees its tables (READ COMMITTED: each statement takes a new snapshot). SQLite's
        # BEGIN IMMEDIATE already serialises writers.
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY)))
    ours = set(sa.inspect(conn).get_table_names()) & set(metadata.tables)
    if not ours:
        metadata.create_all(conn)
        conn.execute(sa.insert(schema_version).values(id=1, version=SCHEMA_VERSION))
        return None
    found = _version(conn, ours, url)
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the database {url} has schema version {found}; this code knows up to {SCHEMA_VERSION}",
            "update Persona Studio, or point DATABASE_URL at another database",
        )
    if found < SCHEMA_VERSION:
        if not migrate:
            raise StoreError(
                f"the database {url} has schema version {found}; this code needs {SCHEMA_VERSION}", MIGRATE_FIX
            )
        upgrade(conn, found)
    return found


def _version(conn: sa.Connection, ours: set[str], url: str) -> int:
    # MAX: the one-column table of versions 1 and 2 could hold a row per racing first start.
    found = (
        conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar() if "schema_version" in ours else None
    )
    if found is None:
        raise StoreError(
            f"the database {url} has some Persona Studio tables ({', '.join(sorted(ours))}) but no schema version",
            "restore it from a backup, or point DATABASE_URL at an empty database",
        )
    return found


def upgrade(conn: sa.Connection, found: int) -> None:
    """Bring a database at schema version `found` up to `SCHEMA_VERSION`, one step at a time,
    in the caller's transaction (DDL is transactional on both backends: all steps or none)."""
    for version in range(found + 1, SCHEMA_VERSION + 1):
        log.info("upgrading the database schema from version %d to %d", version - 1, version)
        for statement in UPGRADES[version]:
            conn.exec_driver_sql(statement if isinstance(statement, str) else statement[conn.dialect.name])
    conn.execute(sa.update(schema_version).values(version=SCHEMA_VERSION))
