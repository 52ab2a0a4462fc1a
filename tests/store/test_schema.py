"""Opening a database: created when empty, upgraded from versions 1 to 5 (made before Alembic:
adopted) only when allowed (`migrate=True`, `python -m store.migrate`), refused when newer;
the Alembic migrations themselves; concurrent first starts."""

import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from store import NewPreference, Store, StoreError, database_url
from store.migrate import main as migrate_main
from store.schema import SCHEMA_VERSION, metadata
from store.upgrade import VERSION_TABLE, alembic_config, revision
from tests.conftest import REPO
from tests.store.conftest import add_items, new_item

# The tables as versions 1 to 5 of the code created them (their `create_all` output, before
# Alembic), frozen here as raw SQL so later changes to store.schema or the migrations cannot
# change what an old database is. {serial} and {timestamp} are the only differences between
# SQLite and PostgreSQL; {priority}, {turns_v3} and {schema_version} are what versions 2, 3 and 5
# changed; V4_PREFERENCES and V5_QUEUE what versions 4 and 5 added.
OLD_DDL = """
CREATE TABLE conversations (
    id {serial} NOT NULL, source TEXT NOT NULL, persona_key TEXT NOT NULL, persona JSON NOT NULL,
    model_version TEXT NOT NULL, created_at {timestamp} NOT NULL,
    CONSTRAINT pk_conversations PRIMARY KEY (id),
    CONSTRAINT ck_conversations_source_allowed CHECK (source IN ('chat', 'compare', 'eval'))
);
CREATE TABLE eval_runs (
    id {serial} NOT NULL, model_version TEXT NOT NULL, path TEXT NOT NULL, config JSON NOT NULL,
    summary JSON NOT NULL, created_at {timestamp} NOT NULL,
    CONSTRAINT pk_eval_runs PRIMARY KEY (id)
);
CREATE INDEX ix_eval_runs_model_version ON eval_runs (model_version);
CREATE TABLE raters (
    id {serial} NOT NULL, name TEXT NOT NULL, created_at {timestamp} NOT NULL,
    CONSTRAINT pk_raters PRIMARY KEY (id), CONSTRAINT uq_raters_name UNIQUE (name)
);
CREATE TABLE schema_version ({schema_version});
CREATE TABLE label_items (
    id {serial} NOT NULL, source TEXT NOT NULL, conversation_id INTEGER, eval_run_id INTEGER,
    persona_name TEXT NOT NULL, persona JSON NOT NULL, context JSON NOT NULL, answer TEXT NOT NULL,
    model_version TEXT NOT NULL, dedupe_key VARCHAR(64) NOT NULL, created_at {timestamp} NOT NULL,
    {priority}
    CONSTRAINT pk_label_items PRIMARY KEY (id),
    CONSTRAINT ck_label_items_source_allowed CHECK (source IN ('chat', 'eval')),
    CONSTRAINT fk_label_items_conversation_id_conversations FOREIGN KEY(conversation_id)
        REFERENCES conversations (id) ON DELETE SET NULL,
    CONSTRAINT fk_label_items_eval_run_id_eval_runs FOREIGN KEY(eval_run_id)
        REFERENCES eval_runs (id) ON DELETE SET NULL,
    CONSTRAINT uq_label_items_dedupe_key UNIQUE (dedupe_key)
);
CREATE INDEX ix_label_items_conversation_id ON label_items (conversation_id);
CREATE INDEX ix_label_items_eval_run_id ON label_items (eval_run_id);
CREATE INDEX ix_label_items_model_version ON label_items (model_version);
CREATE TABLE turns (
    id {serial} NOT NULL, conversation_id INTEGER NOT NULL, "index" INTEGER NOT NULL, role TEXT NOT NULL,
    content TEXT NOT NULL, model_version TEXT, persona_name TEXT, created_at {timestamp} NOT NULL,
    {turns_v3}
    CONSTRAINT pk_turns PRIMARY KEY (id),
    CONSTRAINT uq_turns_conversation_id_index UNIQUE (conversation_id, "index"),
    CONSTRAINT ck_turns_role_allowed CHECK (role IN ('user', 'assistant', 'system', 'notice')),
    CONSTRAINT fk_turns_conversation_id_conversations FOREIGN KEY(conversation_id)
        REFERENCES conversations (id) ON DELETE CASCADE
);
CREATE INDEX ix_turns_conversation_id ON turns (conversation_id);
CREATE TABLE assignments (
    id {serial} NOT NULL, item_id INTEGER NOT NULL, rater_id INTEGER NOT NULL, created_at {timestamp} NOT NULL,
    CONSTRAINT pk_assignments PRIMARY KEY (id), CONSTRAINT uq_assignments_item_id_rater_id UNIQUE (item_id, rater_id),
    CONSTRAINT fk_assignments_item_id_label_items FOREIGN KEY(item_id) REFERENCES label_items (id),
    CONSTRAINT fk_assignments_rater_id_raters FOREIGN KEY(rater_id) REFERENCES raters (id)
);
CREATE INDEX ix_assignments_item_id ON assignments (item_id);
CREATE INDEX ix_assignments_rater_id ON assignments (rater_id);
CREATE TABLE labels (
    id {serial} NOT NULL, item_id INTEGER NOT NULL, rater_id INTEGER NOT NULL, verdict TEXT NOT NULL,
    comment TEXT NOT NULL, created_at {timestamp} NOT NULL, updated_at {timestamp} NOT NULL,
    CONSTRAINT pk_labels PRIMARY KEY (id), CONSTRAINT uq_labels_item_id_rater_id UNIQUE (item_id, rater_id),
    CONSTRAINT ck_labels_verdict_allowed CHECK (verdict IN ('good', 'bad')),
    CONSTRAINT fk_labels_item_id_label_items FOREIGN KEY(item_id) REFERENCES label_items (id),
    CONSTRAINT fk_labels_rater_id_raters FOREIGN KEY(rater_id) REFERENCES raters (id)
);
CREATE INDEX ix_labels_item_id ON labels (item_id);
CREATE INDEX ix_labels_rater_id ON labels (rater_id);
CREATE INDEX ix_labels_updated_at ON labels (updated_at);
CREATE TABLE skips (
    id {serial} NOT NULL, item_id INTEGER NOT NULL, rater_id INTEGER NOT NULL, created_at {timestamp} NOT NULL,
    CONSTRAINT pk_skips PRIMARY KEY (id), CONSTRAINT uq_skips_item_id_rater_id UNIQUE (item_id, rater_id),
    CONSTRAINT fk_skips_item_id_label_items FOREIGN KEY(item_id) REFERENCES label_items (id),
    CONSTRAINT fk_skips_rater_id_raters FOREIGN KEY(rater_id) REFERENCES raters (id)
);
CREATE INDEX ix_skips_item_id ON skips (item_id);
CREATE INDEX ix_skips_rater_id ON skips (rater_id)
"""
V2_PRIORITY = "priority INTEGER DEFAULT 0 NOT NULL,"  # the one change from version 1 to 2
V5_HOLDERS = "holders INTEGER DEFAULT 0 NOT NULL,"
V4_PREFERENCES = """
CREATE TABLE preferences (
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
);
CREATE INDEX ix_preferences_conversation_a_id ON preferences (conversation_a_id);
CREATE INDEX ix_preferences_conversation_b_id ON preferences (conversation_b_id);
CREATE INDEX ix_preferences_rater_id ON preferences (rater_id)
"""
V5_QUEUE = "CREATE INDEX ix_label_items_queue ON label_items (priority DESC, id, holders)"
V3_TURNS = "withdrawn TEXT, persona JSON, CONSTRAINT ck_turns_withdrawn_allowed CHECK (withdrawn IN ('undo', 'retry')),"
V3_SCHEMA_VERSION = (
    "id INTEGER NOT NULL, version INTEGER NOT NULL,"
    " CONSTRAINT pk_schema_version PRIMARY KEY (id), CONSTRAINT ck_schema_version_one_row CHECK (id = 1)"
)
T = "2024-05-01 12:00:00.000000"  # naive UTC, as UTCDateTime stores it
T_READ = datetime(2024, 5, 1, 12, tzinfo=UTC)  # T as the store reads it back
PERSONA = '{"name": "Ada", "facts": ["I build engines."]}'
DEFLECTION = "Only bees, please."
BEA = f'{{"name": "Bea", "facts": ["I keep bees."], "scope": {{"topic": "bees", "deflection": "{DEFLECTION}"}}}}'


def old_rows(version: int) -> list[str]:
    """A few rows of every table, as versions 1 to 5 stored them: kim labelled item 1, lee skipped
    item 2; from version 3 (turns keep their persona) Bea's conversation 2 has a scope deflection."""
    items = []
    for i, eval_run_id, priority in [(1, "1", 0), (2, "NULL", 0), (3, "NULL", 2)]:
        item = new_item(i - 1)
        context = f'[{{"role": "user", "content": "question {i - 1}"}}]'
        values = f"{i}, 'eval', NULL, {eval_run_id}, 'Ada', '{PERSONA}', '{context}', '{item.answer}', 'base'"
        holders = 1 if i == 1 else 0  # kim holds item 1
        later = f", {priority}" * (version >= 2) + f", {holders}" * (version >= 5)
        items.append(f"({values}, '{item.key}', '{T}'{later})")
    turn_v3 = ", NULL, NULL" if version >= 3 else ""  # withdrawn, persona
    bea = [
        f"""INSERT INTO turns VALUES (4, 2, 0, 'user', 'Will it rain?', NULL, 'Bea', '{T}', NULL, NULL),
            (5, 2, 1, 'assistant', ' {DEFLECTION}', NULL, 'Bea', '{T}', NULL, '{BEA}'),
            (6, 2, 2, 'assistant', '{DEFLECTION}', 'base', 'Bea', '{T}', NULL, '{BEA}'),
            (7, 2, 3, 'assistant', 'Bees!', NULL, 'Bea', '{T}', NULL, '{BEA}')"""
    ]  # the guard's reply (5, spaces around it), the model's words (6), a greeting (7)
    return [
        f"INSERT INTO conversations VALUES (1, 'chat', 'ada', '{PERSONA}', 'base', '{T}'),"
        f" (2, 'chat', 'bea', '{BEA}', 'base', '{T}')",
        f"""INSERT INTO turns VALUES (1, 1, 0, 'assistant', 'Hello!', 'base', 'Ada', '{T}'{turn_v3}),
            (2, 1, 1, 'user', 'Hi Ada', NULL, NULL, '{T}'{turn_v3}),
            (3, 1, 2, 'assistant', 'Hi!', 'base', 'Ada', '{T}'{turn_v3})""",
        f"INSERT INTO eval_runs VALUES (1, 'base', 'runs/base/eval/1', '{{\"n\": 2}}', '{{\"bleu\": 1.5}}', '{T}')",
        f"INSERT INTO raters VALUES (1, 'kim', '{T}'), (2, 'lee', '{T}')",
        f"INSERT INTO label_items VALUES {', '.join(items)}",
        f"INSERT INTO assignments (item_id, rater_id, created_at) VALUES (1, 1, '{T}')",
        f"INSERT INTO labels (item_id, rater_id, verdict, comment, created_at, updated_at)"
        f" VALUES (1, 1, 'bad', 'rude', '{T}', '{T}')",
        f"INSERT INTO skips (item_id, rater_id, created_at) VALUES (2, 2, '{T}')",
        f"INSERT INTO schema_version VALUES ({'1, ' if version >= 3 else ''}{version})",
        *(bea if version >= 3 else []),
    ]


def create_old_database(url: str, version: int) -> None:
    """A database as versions 1 to 5 of the code left it: its tables and a few rows."""
    engine = sa.create_engine(database_url(url))
    postgres = engine.dialect.name == "postgresql"
    serial = "SERIAL" if postgres else "INTEGER"
    timestamp = "TIMESTAMP WITHOUT TIME ZONE" if postgres else "DATETIME"
    ddl = OLD_DDL.format(
        serial=serial,
        timestamp=timestamp,
        priority=(V2_PRIORITY if version >= 2 else "") + (V5_HOLDERS if version >= 5 else ""),
        turns_v3=V3_TURNS if version >= 3 else "",
        schema_version=V3_SCHEMA_VERSION if version >= 3 else "version INTEGER NOT NULL",
    )
    if version >= 4:
        ddl += ";" + V4_PREFERENCES.format(serial=serial, timestamp=timestamp)
    if version >= 5:
        ddl += ";" + V5_QUEUE
    with engine.begin() as conn:
        for statement in ddl.split(";") + old_rows(version):
            conn.exec_driver_sql(statement)
        if postgres:  # rows given explicit ids leave the SERIAL sequences behind: move them on
            for table in ("conversations", "turns", "eval_runs", "raters", "label_items"):
                conn.exec_driver_sql(f"SELECT setval('{table}_id_seq', (SELECT MAX(id) FROM {table}))")
    engine.dispose()


def schema_of(url: str) -> dict:
    """What the database says about each of our tables, for comparing two databases."""
    engine = sa.create_engine(database_url(url))
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        schema = {
            table: dict(
                columns=[
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in inspector.get_columns(table)
                ],
                primary_key=inspector.get_pk_constraint(table),
                foreign_keys=sorted(inspector.get_foreign_keys(table), key=lambda fk: fk["name"]),
                indexes=sorted(inspector.get_indexes(table), key=lambda ix: ix["name"]),
                unique=sorted(inspector.get_unique_constraints(table), key=lambda uq: uq["name"]),
                checks=sorted(
                    (ck["name"], " ".join(ck["sqltext"].split())) for ck in inspector.get_check_constraints(table)
                ),
            )
            for table in sorted(inspector.get_table_names())
        }
    engine.dispose()
    return schema


def schema_version_rows(url: str) -> list[tuple]:
    engine = sa.create_engine(database_url(url))
    with engine.connect() as conn:
        names = [c["name"] for c in sa.inspect(conn).get_columns("schema_version")]
        rows = [tuple(row) for row in conn.exec_driver_sql(f"SELECT {', '.join(names)} FROM schema_version")]
    engine.dispose()
    return rows


def alembic_revisions(url: str) -> list[str] | None:
    """The rows of Alembic's version table; None when there is no such table."""
    engine = sa.create_engine(database_url(url))
    with engine.connect() as conn:
        found = None
        if VERSION_TABLE in sa.inspect(conn).get_table_names():
            found = list(conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars())
    engine.dispose()
    return found


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(database_url(url))
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def test_an_empty_database_gets_every_table_at_the_current_version(db_url):
    with Store(db_url) as store:
        assert store.found_version is None
    assert set(schema_of(db_url)) == set(metadata.tables) | {VERSION_TABLE}
    assert schema_version_rows(db_url) == [(1, SCHEMA_VERSION)]
    assert alembic_revisions(db_url) == [revision(SCHEMA_VERSION)]
    with Store(db_url) as store:
        assert store.found_version == SCHEMA_VERSION


def test_the_migrations_are_one_line_of_schema_versions():
    script = ScriptDirectory.from_config(alembic_config(None))
    assert script.get_heads() == [revision(SCHEMA_VERSION)]
    line = [(r.revision, r.down_revision) for r in reversed(list(script.walk_revisions()))]
    assert line == [(revision(v), revision(v - 1) if v > 1 else None) for v in range(1, SCHEMA_VERSION + 1)]


def test_the_migrations_from_nothing_make_the_schema_create_all_makes(db_url):
    # Every step run on its own (no old rows, no adoption): the migrations, not create_all,
    # are what an upgraded database ends up with, so they must agree with the declarations.
    engine = sa.create_engine(database_url(db_url))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
        command.check(alembic_config(conn))  # autogenerate finds nothing the declarations add
        conn.exec_driver_sql(f"INSERT INTO schema_version (id, version) VALUES (1, {SCHEMA_VERSION})")
    migrated = schema_of(db_url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.exec_driver_sql(f"DROP TABLE {VERSION_TABLE}")
    engine.dispose()
    Store(db_url).close()  # created afresh
    assert migrated == schema_of(db_url)
    with Store(db_url) as store:
        assert store.found_version == SCHEMA_VERSION


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_an_old_database_is_upgraded_with_its_rows(db_url, version):
    create_old_database(db_url, version)
    with Store(db_url, migrate=True) as store:
        assert store.found_version == version
        assert alembic_revisions(db_url) == [revision(SCHEMA_VERSION)]  # adopted, then upgraded
        rows = [(r.item_id, r.rater, r.verdict, r.comment, r.model_version, r.created_at) for r in store.label_rows()]
        assert rows == [(1, "kim", "bad", "rude", "base", T_READ)]
        assert [(store.item(i).answer, store.item(i).priority) for i in (1, 2, 3)] == [
            ("answer 0", 0),
            ("answer 1", 0),
            ("answer 2", 2 if version >= 2 else 0),
        ]
        assert store.item(1).persona == {"name": "Ada", "facts": ["I build engines."]}
        turns = store.conversation(1)
        assert [(t.role, t.content, t.withdrawn, t.persona) for t in turns] == [
            ("assistant", "Hello!", None, None),
            ("user", "Hi Ada", None, None),
            ("assistant", "Hi!", None, None),
        ]
        assert [(r.id, r.config, r.summary) for r in store.eval_runs("base")] == [(1, {"n": 2}, {"bleu": 1.5})]
        # The upgraded tables take new rows, and the old rows work with the new columns.
        assert store.add_label_items([new_item(1)]) == [2]  # the old keys still match
        assert store.withdraw_turns(1, [2, 3], "undo") == 2
        exchange = [dict(role="user", content="Again"), dict(role="assistant", content="Yes!")]
        assert len(store.add_turns(1, exchange)) == 2
        assert [(t.index, t.withdrawn) for t in store.conversation(1)][1:] == [
            (1, "undo"),
            (2, "undo"),
            (3, None),
            (4, None),
        ]
        assert store.next_item("lee").item.id == 3  # lee skipped item 2; kim holds item 1
        assert store.rater_progress()["kim"] == (1, 2)
        # Version 4's preferences: none yet; a vote by an old rater on an old conversation.
        assert store.preferences() == []
        vote = NewPreference("Ada", {"name": "Ada"}, [{"role": "user", "content": "Hi"}], "A", "B", "base", "v1",
                             "tie", "kim", conversation_a=1)  # fmt: skip
        assert store.add_preference(vote) == 1
        assert [(p.rater, p.vote) for p in store.preferences(("v1", "base"))] == [("kim", "tie")]
    assert schema_version_rows(db_url) == [(1, SCHEMA_VERSION)]
    with Store(db_url) as store:  # upgraded: opening it again needs no migrate
        assert store.found_version == SCHEMA_VERSION and len(store.label_rows()) == 1


@pytest.mark.parametrize("version", [3, 4, 5])
def test_the_upgrade_marks_the_stored_scope_deflections(db_url, version):
    # By the rule the app used before the column: an assistant turn no model wrote whose text is
    # the deflection of the persona stored with it. Versions 1 and 2 kept no persona on a turn
    # (and had no scope guard): nothing there to mark.
    create_old_database(db_url, version)
    with Store(db_url, migrate=True) as store:
        assert [(t.content, t.deflected) for t in store.conversation(2)] == [
            ("Will it rain?", False),
            (f" {DEFLECTION}", True),
            (DEFLECTION, False),  # the model's words, though the same
            ("Bees!", False),
        ]
        assert not any(t.deflected for t in store.conversation(1))


def test_a_turn_records_whether_it_is_a_scope_deflection(store):
    bea = {"name": "Bea", "scope": {"topic": "bees", "deflection": DEFLECTION}}
    conversation = store.start_conversation("chat", "bea", bea, "base")
    exchange = [dict(role="user", content="Will it rain?"), dict(role="assistant", content=DEFLECTION, persona=bea,
                                                                 deflected=True)]  # fmt: skip
    ids = store.add_turns(conversation, exchange)
    ids.append(store.add_turn(conversation, "assistant", DEFLECTION, "base", "Bea", bea))  # the model said it
    ids.append(
        store.add_turn(conversation, "assistant", "Hives!", persona=bea, deflected=True)
    )  # the flag, not the text
    assert [store.turn(i).deflected for i in ids] == [False, True, False, True]
    with store.engine.connect() as conn:  # a real boolean column, false unless set
        rows = conn.execute(sa.text("SELECT id FROM turns WHERE deflected ORDER BY id")).scalars().all()
        assert rows == [ids[1], ids[3]]
    refused = [
        (dict(role="user", content="Hi", deflected=True), "a user turn cannot be a scope deflection"),
        (dict(role="assistant", content=DEFLECTION, model_version="base", deflected=True), "has no model version"),
        (dict(role="assistant", content=DEFLECTION, deflected="yes"), "must be true or false"),
    ]
    for turn, message in refused:
        with pytest.raises(StoreError, match=message):
            store.add_turns(conversation, [turn])
    assert len(store.conversation(conversation)) == 4


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_an_upgraded_database_has_the_schema_of_a_created_one(db_url, version):
    create_old_database(db_url, version)
    Store(db_url, migrate=True).close()
    upgraded = schema_of(db_url)
    engine = sa.create_engine(database_url(db_url))
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.exec_driver_sql(f"DROP TABLE {VERSION_TABLE}")
    engine.dispose()
    Store(db_url).close()  # created afresh
    assert upgraded == schema_of(db_url)


def test_an_old_database_is_refused_without_migrate_and_upgraded_by_the_command(db_url, capsys):
    create_old_database(db_url, 2)
    with pytest.raises(StoreError, match=f"schema version 2; this code needs {SCHEMA_VERSION}") as refused:
        Store(db_url)
    assert "python -m store.migrate" in refused.value.fix
    assert (schema_version_rows(db_url), alembic_revisions(db_url)) == ([(2,)], None)  # refusing changed nothing
    assert migrate_main(["--database_url", db_url]) == 0
    assert capsys.readouterr().out.strip().endswith(f"upgraded from schema version 2 to {SCHEMA_VERSION}")
    assert migrate_main(["--database_url", db_url]) == 0
    assert capsys.readouterr().out.strip().endswith(f"already at schema version {SCHEMA_VERSION}, nothing to do")
    with Store(db_url) as store:
        assert len(store.label_rows()) == 1


def test_the_migrate_command_runs_as_a_module(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    command = [sys.executable, "-W", "error::RuntimeWarning", "-m", "store.migrate", "--database_url", url]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (
        0,
        f"{url}: created the tables at schema version {SCHEMA_VERSION}",
    )
    with Store(url) as store:
        assert store.found_version == SCHEMA_VERSION


def test_newer_schema_version_is_refused(db_url):
    Store(db_url).close()
    execute(db_url, f"UPDATE {VERSION_TABLE} SET version_num = '0099'")
    for migrate in (False, True):
        with pytest.raises(StoreError, match="schema version 99; this code knows up to") as refused:
            Store(db_url, migrate=migrate)
        assert "update Persona Studio" in refused.value.fix
    execute(db_url, f"UPDATE {VERSION_TABLE} SET version_num = 'ae1027a6acf'")  # a branch we never made
    with pytest.raises(StoreError, match="schema revision ae1027a6acf, which this code does not know"):
        Store(db_url, migrate=True)


def test_a_newer_database_from_before_alembic_is_refused(db_url):
    create_old_database(db_url, 5)
    execute(db_url, "UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99; this code knows up to"):
        Store(db_url, migrate=True)
    assert alembic_revisions(db_url) is None


def test_older_code_reads_the_current_version_from_schema_version(db_url):
    # Code from before Alembic reads only schema_version: it must see a number it does not know
    # (and say "update Persona Studio"), not a database without one.
    create_old_database(db_url, 4)
    Store(db_url, migrate=True).close()
    assert schema_version_rows(db_url) == [(1, SCHEMA_VERSION)]


def test_our_tables_without_a_schema_version_are_refused(db_url):
    with Store(db_url) as store:
        add_items(store, 1)
    execute(db_url, "DROP TABLE schema_version", f"DROP TABLE {VERSION_TABLE}")
    with pytest.raises(StoreError, match="some Persona Studio tables .*label_items.* but no schema version"):
        Store(db_url, migrate=True)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_first_starts_at_once_both_open_the_new_database(db_url):
    # Without the advisory lock each would see no tables and run CREATE TABLE, and all but one
    # would fail on PostgreSQL (SQLite's BEGIN IMMEDIATE serialises them on its own).
    starts = 4
    barrier, opened, failed = threading.Barrier(starts), [], []

    def start() -> None:
        barrier.wait()
        try:
            with Store(db_url) as store:
                opened.append(store.found_version)
        except StoreError as err:
            failed.append(err)

    threads = [threading.Thread(target=start) for _ in range(starts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failed == []
    # One created the tables; the others waited for it and found them.
    assert (opened.count(None), opened.count(SCHEMA_VERSION)) == (1, starts - 1)
    assert schema_version_rows(db_url) == [(1, SCHEMA_VERSION)]
