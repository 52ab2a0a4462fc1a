"""The label store's schema history as Alembic migrations, one revision per schema version.

Revision ids are the schema versions, four digits ("0001" ... ), so `store.schema.SCHEMA_VERSION`
is `int` of the head revision. `store.upgrade` runs them in the caller's transaction (no
alembic.ini needed at run time); `env.py` also serves the `alembic` command from the repository
root (pyproject.toml's [tool.alembic], the database from DATABASE_URL or data/):

    alembic current
    alembic revision --autogenerate --rev-id 0007 -m "what changes"

Then freeze the new file: write types and names out (`op.f("ix_...")`), never import
store.schema there (a migration must keep doing what it did when the declarations change), and
bump SCHEMA_VERSION. SQLite runs every step in batch mode (`render_as_batch`): a step that
SQLite's ALTER TABLE cannot do copies the table into a new one.
"""
