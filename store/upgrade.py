"""Opening a database: create the tables in an empty one, upgrade an older one, refuse a newer one.

The steps between versions are Alembic migrations (store/migrations/versions, revision "0005" is
schema version 5), run here on the caller's connection, inside its transaction. An older
database is upgraded only when the caller allows it (`Store(migrate=True)`: the app on start,
and `python -m store.migrate`); anything else that opens it is refused with that fix, so a
report or an eval run never changes the schema under a running app.

Alembic's `alembic_version` table says which revision a database is at. A database from before
Alembic (versions 1 to 5) has only our `schema_version` row: it is adopted (stamped at that
revision) as its upgrade begins. `schema_version` is still kept at the current version, so
code from before Alembic refuses a newer database by its number instead of taking it for a
damaged one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from store.db import StoreError
from store.schema import SCHEMA_VERSION, metadata, schema_version

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's default name

# Any fixed 64-bit number ("persona1" in ASCII): the PostgreSQL advisory lock that `ensure` takes.
LOCK_KEY = 0x70657273_6F6E6131

MIGRATE_FIX = (
    "back the database up, then upgrade it: `python -m store.migrate` (reads DATABASE_URL, or pass "
    "--database_url), or start the app (python app.py), which upgrades on start"
)
NEWER_FIX = "update Persona Studio, or point DATABASE_URL at another database"


def revision(version: int) -> str:
    """The Alembic revision id of a schema version: 5 -> "0005"."""
    return f"{version:04d}"


def alembic_config(conn: sa.Connection) -> Config:
    """Alembic's configuration, in memory: the migrations folder and the connection to run on.
    (Alembic is imported here, not above: opening a database that is up to date, what every
    command does, needs none of it; importing it took ~0.36 s here.)"""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


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
    tables = set(sa.inspect(conn).get_table_names())
    ours = tables & set(metadata.tables)
    if not ours and VERSION_TABLE not in tables:
        from alembic import command

        metadata.create_all(conn)
        conn.execute(sa.insert(schema_version).values(id=1, version=SCHEMA_VERSION))
        command.stamp(alembic_config(conn), revision(SCHEMA_VERSION))
        return None
    found, adopted = _version(conn, tables, url)
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the database {url} has schema version {found}; this code knows up to {SCHEMA_VERSION}", NEWER_FIX
        )
    if found < SCHEMA_VERSION or not adopted:
        if not migrate:
            raise StoreError(
                f"the database {url} has schema version {found}; this code needs {SCHEMA_VERSION}", MIGRATE_FIX
            )
        upgrade(conn, found, adopted)
    return found


def _version(conn: sa.Connection, tables: set[str], url: str) -> tuple[int, bool]:
    """(the schema version the database is at, whether Alembic's table says so)."""
    if VERSION_TABLE in tables:
        revisions = list(conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars())
        if len(revisions) == 1 and revisions[0].isdigit():
            return int(revisions[0]), True
        if revisions:
            raise StoreError(
                f"the database {url} is at schema revision {', '.join(revisions)}, which this code does not know"
                f" (it knows up to {revision(SCHEMA_VERSION)})",
                NEWER_FIX,
            )
    # Before Alembic. MAX: the one-column table of versions 1 and 2 could hold a row per racing first start.
    found = (
        conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar() if "schema_version" in tables else None
    )
    if found is None:
        ours = ", ".join(sorted(tables & set(metadata.tables)))
        raise StoreError(
            f"the database {url} has some Persona Studio tables ({ours}) but no schema version",
            "restore it from a backup, or point DATABASE_URL at an empty database",
        )
    return found, False


def upgrade(conn: sa.Connection, found: int, adopted: bool = True) -> None:
    """Bring a database at schema version `found` up to `SCHEMA_VERSION`, one migration at a
    time, in the caller's transaction (DDL is transactional on both backends: all steps or none).
    `adopted` False: a database from before Alembic, stamped at `found` first."""
    from alembic import command

    cfg = alembic_config(conn)
    if not adopted:
        log.info("adopting the database at schema version %d into Alembic", found)
        command.stamp(cfg, revision(found))
    log.info("upgrading the database schema from version %d to %d", found, SCHEMA_VERSION)
    command.upgrade(cfg, revision(SCHEMA_VERSION))
    conn.execute(sa.update(schema_version).values(version=SCHEMA_VERSION))
