"""Alembic's entry: runs the migrations on the connection `store.upgrade` hands over in
`config.attributes["connection"]` (inside its transaction), or, for the `alembic` command, on
the store `store.db.database_url()` names."""

from alembic import context

from store.db import create_engine, database_url
from store.schema import metadata


def run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER constraints; batch mode recreates the table there
    # (and on PostgreSQL emits plain ALTERs).
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():  # a no-op inside store.upgrade's transaction
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
elif context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=metadata, render_as_batch=True, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(database_url())
    with engine.connect() as conn:
        run(conn)
        conn.commit()
    engine.dispose()
