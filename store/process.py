"""The app's store in its own process: raters' writes do not wait on the app's interpreter lock.

    store = StoreProcess(Store(url, migrate=True))   # starts `python -m store.process` on its database
    store.label_and_next(item_id, "kim", "good")   # any Store method, by name

Why: SQLite has one writer at a time, and in the app's process a label's write transaction
(ten statements, each releasing and retaking the interpreter lock around SQLite) held that
lock 6-7 ms for 3.5 ms of work: it waited for the lock between its statements behind Gradio's
request handling and the chats' streaming. Under 100 raters + 16 chatting on 2 cores the writes
queued behind each other (label p95 0.15-0.4 s). Here the store's Python runs on its own
interpreter lock, next to nothing else (benchmarks/label_load; README, "A room of raters").

Calls go through `multiprocessing.managers` proxies: the method name, its arguments and its
result are pickled over a Unix socket (one connection per app thread, served by a thread here);
a StoreError crosses with its problem and fix. Nothing else is shared: the app keeps its own
`Store` for what needs the engine (opening and migrating, the hub backup). The child reads
its start-up settings and the socket's key from stdin and then waits on it: when the app ends,
even by `kill -9`, stdin closes and the child exits (its committed transactions are on disk).
If the child dies (killed for memory), the call in flight fails with a StoreError saying the
write was NOT saved, and the next call starts a new child.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from multiprocessing.managers import BaseManager

from store.db import StoreError
from store.store import Store

READY = "ready"


class StoreManager(BaseManager):
    """Serves the one `Store` of the child (`Store()` on the app's side returns its proxy)."""


class StoreProcess:
    """A `Store` served by `python -m store.process`; its methods are called by name."""

    def __init__(self, store: Store):
        """Serves the database `store` has opened (and migrated: the child does not)."""
        self.url = store.url  # masked, for messages
        self._database = store._full_url  # the child opens the same database
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._current()  # start now: a store that does not open fails the app's start, not a click

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child else None

    def close(self) -> None:
        with self._lock:
            if self._child is not None:
                self._child.stop()
                self._child = None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if not callable(getattr(Store, name, None)):
            raise AttributeError(f"{name!r}: only Store's methods are served by the store process")

        def call(*args, **kwargs):
            child = self._current()
            try:
                return getattr(child.proxy, name)(*args, **kwargs)
            except (EOFError, ConnectionError):  # its end of the socket closed mid-call
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=2)  # for its exit code
                child.stop()
                raise StoreError(
                    f"the store process ended during {name} ({_exit_reason(child.process.returncode)}): "
                    "this change was NOT saved",
                    "try again: the app starts a new store process",
                ) from None

        call.__name__ = name
        return call

    def _current(self) -> _Child:
        with self._lock:
            if self._child is None or self._child.process.poll() is not None:
                self._child = _Child.start(self._database)
            return self._child


class _Child:
    def __init__(self, process: subprocess.Popen, folder: str, proxy):
        self.process, self.proxy = process, proxy
        # Stop the child with this object (the app exits, or a new child replaces a dead one).
        self.stop = weakref.finalize(self, _stop, process, folder)

    @classmethod
    def start(cls, url: str) -> _Child:
        folder = tempfile.mkdtemp(prefix="persona-studio-store-")
        address = os.path.join(folder, "store.sock")
        key = os.urandom(32)
        process = subprocess.Popen(
            [sys.executable, "-m", "store.process", address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # Settings on stdin, not argv: the database URL may hold a password (ps shows argv).
        process.stdin.write(json.dumps({"url": url, "authkey": key.hex()}) + "\n")
        process.stdin.flush()
        answer = process.stdout.readline().strip()
        if answer != READY:
            process.wait()
            shutil.rmtree(folder, ignore_errors=True)
            if answer:
                problem = json.loads(answer)
                raise StoreError(problem["problem"], problem["fix"])
            raise StoreError(
                f"the store process ended while starting ({_exit_reason(process.returncode)})",
                "see its log above; or keep the store in the app's process (--store_process app)",
            )
        manager = StoreManager(address=address, authkey=key)
        manager.connect()
        return cls(process, folder, manager.Store())


def _stop(process: subprocess.Popen, folder: str) -> None:
    if process.poll() is None:
        process.stdin.close()  # the child's cue to exit
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "its connection closed"
    return "killed, perhaps for memory" if code == -9 else f"exit code {code}"


StoreManager.register("Store")  # the app's side: a proxy type; the child registers the object


def serve(address: str) -> None:
    """The child: open the store, answer calls on `address` until stdin closes."""
    settings = json.loads(sys.stdin.readline())
    try:
        store = Store(settings["url"])  # the app opened (and migrated) it first
    except StoreError as err:
        print(json.dumps({"problem": err.problem, "fix": err.fix}), flush=True)
        sys.exit(1)

    class Served(StoreManager):
        pass

    Served.register("Store", callable=lambda: store)
    server = Served(address=address, authkey=bytes.fromhex(settings["authkey"])).get_server()
    # The app's end of stdin closes when it exits, however it exits.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    print(READY, flush=True)
    os.dup2(2, 1)  # nobody reads our stdout from now on: a full pipe would block a print
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1])
