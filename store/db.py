"""Where the database is and how we talk to it: the URL, the engine, SQLite settings, errors.

SQLite durability: WAL journal with `synchronous=FULL`. A commit returns only after its WAL
frame is fsynced, so a label survives `kill -9` of the app (WAL with NORMAL would too) and
also a power cut or VM crash (NORMAL would not). The cost, one fsync per commit, does not
matter at the pace of human clicks.
"""

from __future__ import annotations

import os
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.errors import PersonaStudioError

DEFAULT_DATA_DIR = "data"
DB_FILE = "persona_studio.db"
_WRITE = "persona_studio_write"  # execution option: this transaction writes

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",  # readers do not block the writer (several Gradio threads)
    "PRAGMA synchronous = FULL",  # see the module docstring
    "PRAGMA busy_timeout = 30000",  # ms a writer waits for another writer before failing
    "PRAGMA foreign_keys = ON",
)
URL_FIX = (
    "start the database server, or fix host, port, user and password in DATABASE_URL "
    "(unset DATABASE_URL to use the local SQLite file data/persona_studio.db)"
)


class StoreError(PersonaStudioError):
    """The database cannot be opened, or a read or write failed; says whether data was saved."""


def database_url(url: str | None = None, data_dir: str | Path = DEFAULT_DATA_DIR) -> str:
    """`url`, else `$DATABASE_URL`, else a SQLite file in `data_dir`; PostgreSQL URLs get the
    psycopg 3 driver (`postgresql://` alone would ask SQLAlchemy for psycopg2)."""
    url = url or os.environ.get("DATABASE_URL") or f"sqlite:///{Path(data_dir).resolve() / DB_FILE}"
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)


def mask_url(url: str) -> str:
    """`url` with its password shown as ***, fit for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def reason(err: Exception, url: str) -> str:
    """The driver's own words for `err`, first line only, never showing the password."""
    orig = getattr(err, "orig", None) or err
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    password = _password(url)
    return text.replace(password, "***") if password else text


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except sa.exc.ArgumentError:
        return None


def create_engine(url: str) -> sa.Engine:
    """An engine for SQLite or PostgreSQL (the two we test); nothing is connected yet."""
    masked = mask_url(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(
            f"{masked} is not a database URL",
            "use sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname",
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, masked)
    if backend == "postgresql":
        # pre_ping replaces connections the server dropped (restart, idle timeout).
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    raise StoreError(f"database {masked}: {backend} is not supported", "use a sqlite:/// or postgresql:// URL")


def _sqlite_engine(url: sa.URL, masked: str) -> sa.Engine:
    if url.database in (None, "", ":memory:"):
        # Each pooled connection would get its own empty database.
        raise StoreError(f"{masked} is an in-memory database", "give a file: sqlite:///data/persona_studio.db")
    try:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the folder for {masked}: {err}", "pick a writable place") from None
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})  # pooled, one per thread
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection, connection_record) -> None:
    # We emit BEGIN ourselves (below): the sqlite3 module's own transaction handling skips
    # BEGIN before SELECT, so a read-then-write would not be one transaction.
    dbapi_connection.isolation_level = None
    for pragma in SQLITE_PRAGMAS:
        dbapi_connection.execute(pragma)


def _sqlite_begin(conn: sa.Connection) -> None:
    # IMMEDIATE takes the write lock up front: writers queue (busy_timeout) instead of
    # failing when a read turns into a write, and a check-then-insert cannot race.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


@contextmanager
def transaction(engine: sa.Engine, write: bool) -> Iterator[sa.Connection]:
    """One transaction, committed on leaving the block (the data is on disk then)."""
    with engine.connect() as conn:
        if write:
            conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


class WriterQueue:
    """A lock taken in arrival order: this process's SQLite writers, one at a time.

    `threading.Lock` wakes an arbitrary waiter and lets a newcomer take the lock first, so under
    a burst (16 chats saving their replies at once, 100 raters labelling) some label writes
    waited 0.5-0.8 s while later ones went ahead. Here the holder hands the lock to the oldest
    waiter, so no write waits longer than the writes queued before it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()
        self._held = False

    def __enter__(self) -> WriterQueue:
        with self._guard:
            if not self._held:
                self._held = True
                return self
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        turn.acquire()  # released by the holder before us: the lock is ours now
        return self

    def __exit__(self, *exc) -> None:
        with self._guard:
            if self._waiting:
                self._waiting.popleft().release()  # handed over: still held
            else:
                self._held = False
