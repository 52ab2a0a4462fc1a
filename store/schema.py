"""Tables. `SCHEMA_VERSION` is stored in `schema_version`; bump it with each change and add
the step to `UPGRADES` so an existing database is brought forward on start (`migrate`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from store.db import StoreError
from store.records import CONVERSATION_SOURCES, ITEM_SOURCES, ROLES, VERDICTS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

# The statements that bring a database from version n - 1 to n, keyed by n. Plain SQL that
# both SQLite and PostgreSQL run; each step leaves the tables as `metadata` describes them.
UPGRADES: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE label_items ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",),
}


class UTCDateTime(sa.TypeDecorator):
    """Stored as naive UTC, read back as aware UTC, on SQLite and PostgreSQL alike
    (SQLite keeps no time zone, so `DateTime(timezone=True)` would differ per backend)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


def now() -> datetime:
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_allowed")


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True)


def _created() -> sa.Column:
    return sa.Column("created_at", UTCDateTime, nullable=False, default=now)


def _fk(name: str, target: str, ondelete: str | None = None, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.ForeignKey(f"{target}.id", ondelete=ondelete), nullable=nullable, index=True)


# Named constraints (ck_labels_verdict_allowed, ...), so a later migration can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

raters = sa.Table("raters", metadata, _id(), sa.Column("name", sa.Text, nullable=False, unique=True), _created())

conversations = sa.Table(
    "conversations",
    metadata,
    _id(),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("persona_key", sa.Text, nullable=False),
    sa.Column("persona", sa.JSON, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    _created(),
    _in("source", CONVERSATION_SOURCES),
)

turns = sa.Table(
    "turns",
    metadata,
    _id(),
    _fk("conversation_id", "conversations", ondelete="CASCADE"),
    sa.Column("index", sa.Integer, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("persona_name", sa.Text),
    _created(),
    sa.UniqueConstraint("conversation_id", "index"),
    _in("role", ROLES),
)

eval_runs = sa.Table(
    "eval_runs",
    metadata,
    _id(),
    sa.Column("model_version", sa.Text, nullable=False, index=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    _created(),
)

label_items = sa.Table(
    "label_items",
    metadata,
    _id(),
    sa.Column("source", sa.Text, nullable=False),
    # An item holds everything a rater sees, so it (and its labels) outlives its origin.
    _fk("conversation_id", "conversations", ondelete="SET NULL", nullable=True),
    _fk("eval_run_id", "eval_runs", ondelete="SET NULL", nullable=True),
    sa.Column("persona_name", sa.Text, nullable=False),
    sa.Column("persona", sa.JSON, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False, index=True),
    sa.Column("dedupe_key", sa.String(64), nullable=False, unique=True),  # NewItem.key
    _created(),
    # The queue hands out higher priorities first (then the oldest); NewItem.priority.
    sa.Column("priority", sa.Integer, nullable=False, default=0, server_default=sa.text("0")),
    _in("source", ITEM_SOURCES),
)

# A rater holds an item from `next_item` until they label or skip it; the number of
# holders is what `overlap` limits. The id orders a rater's pending items (newest first).
assignments = sa.Table(
    "assignments",
    metadata,
    _id(),
    _fk("item_id", "label_items"),
    _fk("rater_id", "raters"),
    _created(),
    sa.UniqueConstraint("item_id", "rater_id"),
)

labels = sa.Table(
    "labels",
    metadata,
    _id(),
    _fk("item_id", "label_items"),
    _fk("rater_id", "raters"),
    sa.Column("verdict", sa.Text, nullable=False),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    _created(),
    sa.Column("updated_at", UTCDateTime, nullable=False, default=now, index=True),
    sa.UniqueConstraint("item_id", "rater_id"),
    _in("verdict", VERDICTS),
)

skips = sa.Table(
    "skips",
    metadata,
    _id(),
    _fk("item_id", "label_items"),
    _fk("rater_id", "raters"),
    _created(),
    sa.UniqueConstraint("item_id", "rater_id"),
)


def migrate(conn: sa.Connection, found: int) -> None:
    """Bring a database at schema version `found` up to `SCHEMA_VERSION`, one step at a time,
    in the caller's transaction (DDL is transactional on both backends: all steps or none)."""
    for version in range(found + 1, SCHEMA_VERSION + 1):
        log.info("upgrading the database schema from version %d to %d", version - 1, version)
        for statement in UPGRADES[version]:
            conn.exec_driver_sql(statement)
    conn.execute(sa.update(schema_version).values(version=SCHEMA_VERSION))


def ensure(conn: sa.Connection, url: str) -> None:
    """Create missing tables and record or check the schema version (`url` for messages)."""
    metadata.create_all(conn)
    # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises us): a second app
    # starting at the same time waits here and then sees the version the first one wrote,
    # so it does not run the same upgrade again.
    found = conn.execute(sa.select(schema_version.c.version).with_for_update()).scalar()
    if found is None:
        conn.execute(sa.insert(schema_version).values(version=SCHEMA_VERSION))
    elif found > SCHEMA_VERSION:
        raise StoreError(
            f"the database {url} has schema version {found}; this code knows up to {SCHEMA_VERSION}",
            "update Persona Studio, or point DATABASE_URL at another database",
        )
    elif found < SCHEMA_VERSION:
        migrate(conn, found)
