"""The app's store in its own process: raters' writes do not wait on the app's interpreter lock.

    store = StoreProcess(Store(url, migrate=True))   # starts `python -m store.process` on its database
    store.label(item_id, "kim", "good")   # StoreAPI's methods (store/boundary.py)

Why: SQLite has one writer at a time, and in the app's process a label's write transaction (ten
statements, each releasing and retaking the interpreter lock around SQLite) held SQLite's write
lock about twice as long as its own work: between statements it waited for the interpreter lock
behind Gradio's request handling and the chats' streaming, and under load the writes queued behind
each other. Here the store's Python runs on its own interpreter lock, next to nothing else
(benchmarks/README.md, "A room of raters").

Calls go through `multiprocessing.managers` proxies: the method name, its arguments and its
result are pickled over a Unix socket (one connection per app thread, served by a thread here);
a StoreError crosses with its problem and fix, and an argument that cannot be pickled is refused
with its name (store/boundary.py). Nothing else is shared: the app keeps its own `Store` for what
needs the engine (opening and migrating, the hub backup). Starting the child, its settings, the
handshake, restarting a dead one and its end with the app (even by `kill -9`) are core/child.py's,
as for the model's child: if the child dies (killed for memory), the call in flight fails with a
StoreError saying the write was NOT saved, and the next call starts a new child.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import tempfile
from multiprocessing.managers import BaseManager
from typing import Any

from core.child import Child, Restarting, connect, exit_when_closed, fail, ready
from store.boundary import Crossing, refuse_what_cannot_cross
from store.db import StoreError
from store.store import Store

START_TIMEOUT_S = 120  # imports and opening the database; a busy 2-core machine takes a few seconds


class StoreManager(BaseManager):
    """Serves the one `Store` of the child (`Store()` on the app's side returns its proxy)."""


StoreManager.register("Store")  # the app's side: a proxy type; the child registers the object


class StoreProcess(Crossing):
    """A `Store` served by `python -m store.process`: `StoreAPI`'s methods, each one call across."""

    def __init__(self, store: Store):
        """Serves the database `store` has opened (and migrated: the child does not)."""
        self.url = store.url  # masked, for messages
        database = store._full_url  # the child opens the same database
        self._children = Restarting(lambda: _Served.start(database), "the store process")
        self._children.current()  # start now: a store that does not open fails the app's start, not a click

    @property
    def pid(self) -> int | None:
        served = self._children.running
        return served.process.pid if served else None

    def close(self) -> None:
        self._children.stop()

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        served = self._children.current()
        try:
            return getattr(served.proxy, method)(*args, **kwargs)
        except (EOFError, ConnectionError):  # its end of the socket closed mid-call
            try:
                served.process.wait(timeout=2)  # for its exit code
            except subprocess.TimeoutExpired:
                served.stop()  # alive but unreachable: the next call starts a new one
            raise StoreError(
                f"the store process ended during {method} ({served.ended()}): this change was NOT saved",
                "try again: the app starts a new store process",
            ) from None
        except (TypeError, AttributeError, pickle.PicklingError):
            # Pickling the arguments fails before anything is sent: say which one (else it was the
            # store's own error, raised again here).
            refuse_what_cannot_cross(method, args, kwargs)
            raise


class _Served:
    """One store process (`core.child.Child`), the proxy its calls go through, its socket's folder."""

    def __init__(self, child: Child, folder: str, proxy):
        self.child, self.process, self.folder, self.proxy = child, child.process, folder, proxy

    @classmethod
    def start(cls, database: str) -> _Served:
        folder = tempfile.mkdtemp(prefix="persona-studio-store-")
        # The database URL may hold a password: it goes over the child's connection, not argv.
        settings = {"url": database, "address": os.path.join(folder, "store.sock"), "authkey": os.urandom(32)}

        def failed(problem: str) -> StoreError:
            return StoreError(
                problem, "see its log above; or keep the store in the app's process (--store_process app)"
            )

        try:
            child = Child.start("store.process", settings, "the store process", failed, START_TIMEOUT_S)
            manager = StoreManager(address=settings["address"], authkey=settings["authkey"])
            manager.connect()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(child, folder, manager.Store())

    @property
    def alive(self) -> bool:
        return self.child.alive

    def ended(self) -> str:
        return self.child.ended()

    def stop(self) -> None:
        self.child.stop(timeout_s=5)
        shutil.rmtree(self.folder, ignore_errors=True)


def serve() -> None:
    """The child: open the store, answer calls on the settings' address until the app's end closes."""
    conn, settings = connect()
    try:
        store = Store(settings["url"])  # the app opened (and migrated) it first
    except StoreError as err:
        fail(conn, err)
        return

    class Served(StoreManager):
        pass

    Served.register("Store", callable=lambda: store)
    server = Served(address=settings["address"], authkey=settings["authkey"]).get_server()
    exit_when_closed(conn)
    ready(conn)
    server.serve_forever()


if __name__ == "__main__":
    serve()
