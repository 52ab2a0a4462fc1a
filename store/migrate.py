"""Upgrade the label store to this code's schema version (the app does the same on start).

    python -m store.migrate --database_url postgresql://user:password@host:5432/persona_studio

Without --database_url: $DATABASE_URL, else the SQLite file data/persona_studio.db. The steps
are the Alembic migrations in store/migrations (a database from before Alembic is adopted at its
version first); the upgrade is one transaction (every step or none): back the database up first
all the same. Other commands (eval.run, eval.report, ...) refuse an older database rather than
upgrade it.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from store.schema import SCHEMA_VERSION
from store.store import Store


class MigrateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")


def outcome(url: str, found: int | None) -> str:
    """What opening with `migrate=True` did to a database that was at version `found`."""
    if found is None:
        return f"{url}: created the tables at schema version {SCHEMA_VERSION}"
    if found < SCHEMA_VERSION:
        return f"{url}: upgraded from schema version {found} to {SCHEMA_VERSION}"
    return f"{url}: already at schema version {SCHEMA_VERSION}, nothing to do"


@entry_point(MigrateConfig, __doc__)
def main(cfg: MigrateConfig) -> int:
    with Store(cfg.database_url, migrate=True) as store:
        print(outcome(store.url, store.found_version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
