"""Store: conversations, label items, the queue with overlap, labels, eval runs, failures.

Every store test runs on SQLite (tmp_path) and, when PERSONA_STUDIO_TEST_DATABASE_URL is
set (`source .ci/postgres.sh`), on PostgreSQL too, each test in a schema of its own.
"""

import os
import select
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from store import NewItem, Store, StoreError, database_url
from store.schema import NAMING, SCHEMA_VERSION, UTCDateTime
from store.schema import metadata as current_metadata
from tests.conftest import REPO

PG_URL = os.environ.get("PERSONA_STUDIO_TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
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


# -- conversations ----------------------------------------------------------------------


def test_conversation_round_trip(store, ada):
    conversation = store.start_conversation("chat", "ada", ada, "base")
    store.add_turn(conversation, "user", "Hi Ada")
    store.add_turn(conversation, "assistant", "Hello!", model_version="base", persona_name="Ada")
    store.add_turn(conversation, "notice", "switched to v1")
    turns = store.conversation(conversation)
    assert [(t.index, t.role, t.content) for t in turns] == [
        (0, "user", "Hi Ada"),
        (1, "assistant", "Hello!"),
        (2, "notice", "switched to v1"),
    ]
    assert (turns[1].model_version, turns[1].persona_name) == ("base", "Ada")
    assert turns[0].created_at.tzinfo is not None
    with pytest.raises(StoreError, match="turn role"):
        store.add_turn(conversation, "robot", "beep")
    with pytest.raises(StoreError, match="no conversation 999"):
        store.add_turn(999, "user", "anyone?")
    with pytest.raises(StoreError, match="conversation source"):
        store.start_conversation("web", "ada", ada.model_dump(), "base")


# -- label items and the queue ----------------------------------------------------------


def test_label_items_are_registered_once(store):
    first = add_items(store, 2)
    again = store.add_label_items([new_item(0), new_item(1), new_item(2)])
    assert again[:2] == first and again[2] not in first
    item = store.item(first[1])
    assert (item.answer, item.model_version, item.context) == (
        "answer 1",
        "base",
        [{"role": "user", "content": "question 1"}],
    )
    assert item.priority == 0
    assert "model_version" not in vars(item.blind()) and item.blind().answer == "answer 1"
    assert "priority" not in vars(item.blind())
    with pytest.raises(StoreError, match="no label item 12345"):
        store.item(12345)


def test_queue_gives_each_item_to_one_rater_with_overlap_1(store):
    a, b, c = add_items(store, 3)
    assert store.next_item("kim").id == a
    assert store.next_item("kim").id == a  # held until labelled or skipped
    assert store.next_item("lee").id == b
    store.label(a, "kim", "good")
    assert store.next_item("kim").id == c
    assert store.next_item("max") is None  # a labelled by kim, b and c held


def test_overlap_2_lets_two_raters_label_an_item_and_not_a_third(store):
    (a,) = add_items(store, 1)
    assert store.next_item("kim", overlap=2).id == a
    assert store.next_item("lee", overlap=1) is None
    assert store.next_item("lee", overlap=2).id == a
    assert store.next_item("max", overlap=2) is None
    store.label(a, "kim", "good")
    store.label(a, "lee", "bad")
    assert {(r.rater, r.verdict) for r in store.label_rows()} == {("kim", "good"), ("lee", "bad")}


def test_priority_items_come_before_older_normal_ones(store):
    a, b = add_items(store, 2)
    c, d = store.add_label_items([new_item(2, priority=1), new_item(3, priority=2)])
    assert (store.item(c).priority, store.item(d).priority) == (1, 2)
    assert store.next_item("kim").id == d  # highest priority first
    assert store.next_item("lee").id == c
    (e,) = store.add_label_items([new_item(4, priority=5)])
    assert store.next_item("kim").id == d  # a rater's own pending item still comes first
    store.label(d, "kim", "good")
    assert store.next_item("kim").id == e
    store.label(e, "kim", "bad")
    assert store.next_item("kim").id == a  # then the normal ones, oldest first
    store.skip(a, "kim")
    assert store.next_item("kim").id == b
    with pytest.raises(StoreError, match="priority must be an integer"):
        store.add_label_items([new_item(5, priority="high")])


def test_registering_again_raises_the_priority_but_never_lowers_it(store):
    a, b = add_items(store, 2)
    store.label(a, "kim", "good")
    assert store.add_label_items([new_item(1, priority=1), new_item(0, priority=3)]) == [b, a]
    assert (store.item(a).priority, store.item(b).priority) == (3, 1)
    assert store.add_label_items([new_item(0), new_item(1, priority=0)]) == [a, b]  # not lowered
    assert (store.item(a).priority, store.item(b).priority) == (3, 1)
    assert [(r.item_id, r.verdict) for r in store.label_rows()] == [(a, "good")]  # labels kept
    (c,) = add_items(store, 3)[2:]
    assert store.next_item("lee").id == b  # raised above c, which came later with priority 0
    assert store.next_item("max").id == c


def test_queue_filters_by_source(store):
    (chat,) = store.add_label_items([new_item(0, source="chat")])
    (evaluated,) = store.add_label_items([new_item(1, source="eval")])
    assert store.next_item("kim", source="eval").id == evaluated
    assert store.next_item("kim", source="chat").id == chat


def test_concurrent_next_item_never_double_assigns(store):
    ids = add_items(store, 3)
    raters = [f"rater{i}" for i in range(6)]
    barrier = threading.Barrier(len(raters))
    got: dict[str, int | None] = {}

    def ask(rater: str) -> None:
        barrier.wait()
        item = store.next_item(rater, overlap=1)
        got[rater] = item.id if item else None

    threads = [threading.Thread(target=ask, args=(r,)) for r in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(got) == len(raters)
    taken = [item_id for item_id in got.values() if item_id is not None]
    assert sorted(taken) == sorted(ids)  # every item once, nobody got one twice


# -- labels -----------------------------------------------------------------------------


def test_label_relabel_skip_undo_and_progress(store):
    a, b, c = add_items(store, 3)
    assert store.progress("kim") == (0, 3)
    assert store.next_item("kim").id == a
    first = store.label(a, "kim", "good")
    assert store.progress("kim") == (1, 3)
    relabel = store.label(a, "kim", "bad", "off persona")
    assert (relabel.verdict, relabel.comment, relabel.created_at) == ("bad", "off persona", first.created_at)
    assert relabel.updated_at >= first.updated_at and len(store.label_rows()) == 1

    assert store.next_item("kim").id == b
    store.skip(b, "kim")
    assert store.next_item("kim").id == c
    assert store.progress("kim") == (1, 2)  # a labelled, c held; b skipped
    assert store.progress("lee") == (0, 1)  # b was given back by the skip
    assert store.next_item("lee").id == b

    assert store.undo_last_label("kim") == a
    assert store.label_rows() == []
    assert store.next_item("kim").id == a  # before c, which kim also holds
    assert store.progress("kim") == (0, 2)
    assert store.undo_last_label("kim") is None
    assert store.undo_last_label("nobody") is None


def test_label_checks_verdict_item_and_rater(store):
    (a,) = add_items(store, 1)
    with pytest.raises(StoreError, match="'good' or 'bad'"):
        store.label(a, "kim", "great")
    with pytest.raises(StoreError, match="no label item 999"):
        store.label(999, "kim", "good")
    with pytest.raises(StoreError, match="rater name is empty"):
        store.label(a, "  ", "good")
    assert store.label_rows() == []


def test_label_rows_by_model_version(store):
    base = add_items(store, 2, model_version="base")
    v1 = add_items(store, 1, model_version="v1")
    add_items(store, 1, model_version="v2")  # never labelled
    store.label(base[0], "kim", "good")
    store.label(base[1], "kim", "bad", "rude")
    store.label(v1[0], "lee", "good")
    assert [(r.item_id, r.verdict, r.comment) for r in store.label_rows("base")] == [
        (base[0], "good", ""),
        (base[1], "bad", "rude"),
    ]
    assert [(r.rater, r.model_version, r.source) for r in store.label_rows("v1")] == [("lee", "v1", "eval")]
    assert len(store.label_rows()) == 3
    assert store.model_versions_with_labels() == ["base", "v1"]


def test_eval_runs(store):
    assert store.latest_eval_run("base") is None
    store.add_eval_run("base", "results/base-1.json", {"n": 10}, {"bleu": 1.5})
    second = store.add_eval_run("base", "results/base-2.json", {"n": 20}, {"bleu": 2.5, "rouge": {"l": 0.3}})
    store.add_eval_run("v1", "results/v1.json", {}, {})
    latest = store.latest_eval_run("base")
    assert (latest.id, latest.path, latest.config, latest.summary) == (
        second,
        "results/base-2.json",
        {"n": 20},
        {"bleu": 2.5, "rouge": {"l": 0.3}},
    )
    assert [r.model_version for r in store.eval_runs()] == ["base", "base", "v1"]
    assert len(store.eval_runs("v1")) == 1


# -- opening and failures ---------------------------------------------------------------


def test_unreachable_database_names_the_url_without_the_password():
    with pytest.raises(StoreError) as caught:
        Store("postgresql://nobody:pw@127.0.0.1:1/none")
    message = str(caught.value)
    assert "nobody:***@127.0.0.1:1/none" in message and ":pw@" not in message
    assert "DATABASE_URL" in caught.value.fix


def test_urls_and_the_default_sqlite_file(tmp_path, monkeypatch):
    assert database_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert database_url("postgres://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert database_url("postgresql+psycopg://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with Store.from_env() as store:
        assert store.url == f"sqlite:///{tmp_path / 'data' / 'persona_studio.db'}"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere' / 'x.db'}")
    with Store.from_env() as store:
        store.add_eval_run("base", "r.json", {}, {})
    assert (tmp_path / "elsewhere" / "x.db").is_file()
    with pytest.raises(StoreError, match="in-memory"):
        Store("sqlite://")


def test_sqlite_settings(tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store, store.engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ["journal_mode", "synchronous"]}
        assert pragma == {"journal_mode": "wal", "synchronous": 2}  # 2 = FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_newer_schema_version_is_refused(db_url):
    with Store(db_url) as store, store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(db_url)


def _v1_metadata() -> sa.MetaData:
    """The tables as schema version 1 created them: today's tables, except for `label_items`,
    frozen here as version 1 defined it (no `priority`). A later version that changes another
    table freezes that table here too."""
    v1 = sa.MetaData(naming_convention=NAMING)
    for table in current_metadata.sorted_tables:
        if table.name != "label_items":
            table.to_metadata(v1)
    sa.Table(
        "label_items",
        v1,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.ForeignKey("conversations.id", ondelete="SET NULL"), index=True),
        sa.Column("eval_run_id", sa.ForeignKey("eval_runs.id", ondelete="SET NULL"), index=True),
        sa.Column("persona_name", sa.Text, nullable=False),
        sa.Column("persona", sa.JSON, nullable=False),
        sa.Column("context", sa.JSON, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False, index=True),
        sa.Column("dedupe_key", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("source IN ('chat', 'eval')", name="source_allowed"),
    )
    return v1


def test_a_version_1_database_is_upgraded_and_keeps_its_rows(db_url):
    v1, t = _v1_metadata(), datetime.now(UTC)
    items = v1.tables["label_items"]
    engine = sa.create_engine(database_url(db_url))
    with engine.begin() as conn:
        v1.create_all(conn)
        conn.execute(sa.insert(v1.tables["schema_version"]).values(version=1))
        kim = conn.execute(sa.insert(v1.tables["raters"]).values(name="kim", created_at=t)).inserted_primary_key[0]
        ids = []
        for item in (new_item(i) for i in range(3)):
            values = {c.name: getattr(item, c.name) for c in items.columns if hasattr(item, c.name)}
            values |= dict(dedupe_key=item.key, created_at=t)
            ids.append(conn.execute(sa.insert(items).values(values)).inserted_primary_key[0])
        pair = dict(item_id=ids[0], rater_id=kim)  # kim labelled the first item
        conn.execute(sa.insert(v1.tables["assignments"]).values(pair | dict(created_at=t)))
        label = dict(verdict="bad", comment="rude", created_at=t, updated_at=t)
        conn.execute(sa.insert(v1.tables["labels"]).values(pair | label))
    engine.dispose()

    with Store(db_url) as store, store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all() == [SCHEMA_VERSION]
        column = {c["name"]: c for c in sa.inspect(conn).get_columns("label_items")}["priority"]
        assert not column["nullable"] and "0" in str(column["default"])
        rows = [(r.item_id, r.rater, r.verdict, r.comment, r.created_at) for r in store.label_rows()]
        assert rows == [(ids[0], "kim", "bad", "rude", t)]
        assert [(store.item(i).answer, store.item(i).priority) for i in ids] == [(f"answer {i}", 0) for i in range(3)]
        new_id = store.add_label_items([new_item(7, priority=1)])[0]
        assert store.add_label_items([new_item(1)]) == [ids[1]]  # the old keys still match
        assert [store.next_item(r).id for r in ("lee", "max", "ann")] == [new_id, ids[1], ids[2]]
    with Store(db_url) as store:  # opening an upgraded database again changes nothing
        assert len(store.label_rows()) == 1 and store.progress("kim") == (1, 1)


def _break_label_writes(store: Store, times: int) -> None:
    """Make the next `times` label INSERTs fail the way a dropped connection or a broken
    database does (a real driver OperationalError)."""
    broken = (
        "SELECT * FROM no_such_table"  # sqlite3.OperationalError
        if store.engine.dialect.name == "sqlite"
        else "SELECT pg_terminate_backend(pg_backend_pid())"  # the server drops the connection
    )
    left = [times]

    @sa.event.listens_for(store.engine, "before_cursor_execute", retval=True)
    def fail(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO labels") and left[0] > 0:
            left[0] -= 1
            return broken, ()
        return statement, parameters


def test_label_write_is_retried_once_then_reported_not_saved(store):
    a, b = add_items(store, 2)
    _break_label_writes(store, times=1)
    assert store.label(a, "kim", "good").verdict == "good"
    _break_label_writes(store, times=2)
    with pytest.raises(StoreError, match=f"label for item {b} by kim was NOT saved"):
        store.label(b, "kim", "bad")
    assert [r.item_id for r in store.label_rows()] == [a]
    store.label(b, "kim", "bad")  # the store still works afterwards
    assert len(store.label_rows()) == 2


KILLED_WRITER = """
import sys, time
from store import NewItem, Store

store = Store(sys.argv[1])
context = [{"role": "user", "content": "hi"}]
items = [NewItem("eval", "Ada", {"name": "Ada"}, context, f"answer {i}", "v1") for i in range(int(sys.argv[2]))]
for item_id in store.add_label_items(items):
    store.label(item_id, "kim", "good")
print("done", flush=True)
time.sleep(600)
"""


def test_labels_survive_kill_9(tmp_path):
    url, n = f"sqlite:///{tmp_path / 'kill.db'}", 20
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, url, str(n)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "done"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "kill.db-wal").exists()  # no clean shutdown: the commits sit in the WAL
    with Store(url) as store:
        rows = store.label_rows()
    assert len(rows) == n and {(r.rater, r.verdict, r.model_version) for r in rows} == {("kim", "good", "v1")}
