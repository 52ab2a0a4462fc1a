"""Store fixtures: every store test runs on SQLite (tmp_path) and, when
PERSONA_STUDIO_TEST_DATABASE_URL is set (`source .ci/postgres.sh`), on PostgreSQL too, each
test in a schema of its own."""

import os
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from store import NewItem, Store, database_url

PG_URL = os.environ.get("PERSONA_STUDIO_TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database: a SQLite file, or a fresh PostgreSQL schema (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if not PG_URL:
        pytest.skip("PERSONA_STUDIO_TEST_DATABASE_URL is not set (source .ci/postgres.sh to test PostgreSQL)")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(database_url(PG_URL))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = make_url(database_url(PG_URL)).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


@pytest.fixture
def store(db_url):
    with Store(db_url) as store:
        yield store


def new_item(i: int, model_version: str = "base", source: str = "eval", priority: int = 0) -> NewItem:
    context = [{"role": "user", "content": f"question {i}"}]
    persona = {"name": "Ada", "facts": ["I build engines."]}
    return NewItem(source, "Ada", persona, context, f"answer {i}", model_version, priority=priority)


def add_items(store: Store, n: int, **kwargs) -> list[int]:
    return store.add_label_items([new_item(i, **kwargs) for i in range(n)])
