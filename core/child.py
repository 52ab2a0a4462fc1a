"""A child process of the app (`python -m <module> FD`): started with its settings, ready or
failed with a reason, watched, started again on the next call after it died, gone with the app.

    app's side                                          the child's module
    children = Restarting(lambda: Child.start(          conn, settings = connect()
        "engines.worker", settings, "the model process",  ...load...
        failed=ModelLoadError-with-this-fix))           ready(conn, info)   # or: fail(conn, err)
    child = children.current()  # alive, or a new one   ...answer on conn, or exit_when_closed(conn)

The app and the child hold the two ends of a socket pair (the child's inherited as the fd FD). The
settings go over it as the first message, not in argv (a database URL may hold a password and ps
shows argv); the handshake comes back on it. When the app ends, however it ends (kill -9 too), the
kernel closes its end and the child reads EOF: the model child's request loop ends there, the store
child watches for it (`exit_when_closed`). The module that serves decides what else the connection
carries: the model's requests and pieces (engines/child.py), or nothing more (store/process.py
serves calls on a socket of its own and uses this one as the lifeline).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Generic, Protocol, TypeVar

from core.errors import PersonaStudioError

log = logging.getLogger(__name__)


def exit_reason(code: int | None) -> str:
    """Why a child ended, in words (`Popen.returncode`: negative for a signal)."""
    if code is None:
        return "its connection closed"
    if code == -signal.SIGKILL:  # the kernel's OOM killer sends this, as does `kill -9`
        return "killed, perhaps for memory"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return "it exited" if code == 0 else f"exit code {code}"


class Child:
    """One running child: its process, the app's end of the connection, and what it said when ready."""

    def __init__(self, process: subprocess.Popen, conn: Connection, info: Any, what: str):
        self.process, self.conn, self.info, self.what = process, conn, info, what

    @classmethod
    def start(
        cls,
        module: str,
        settings: Any,
        what: str,
        failed: Callable[[str], PersonaStudioError],
        timeout_s: float = 600,
    ) -> Child:
        """Start `python -m module FD`, send it `settings` (pickled), wait up to `timeout_s` for its
        handshake. A child that fails with our error raises it here; one that dies or does not answer
        raises `failed(reason)`, e.g. "the model process ended while starting (exit code 1)".

        A fresh interpreter, not a fork of the app: no Gradio, no server sockets, no threads copied
        mid-lock. The working directory stays the app's (relative paths in settings)."""
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen([sys.executable, "-m", module, str(theirs.fileno())], pass_fds=[theirs.fileno()])
        conn = Connection(ours.detach())
        try:
            conn.send(settings)
            kind, payload = _handshake(process, conn, timeout_s)
        except (EOFError, OSError, TimeoutError) as err:
            conn.close()
            if process.poll() is None:
                process.kill()
            code = process.wait()
            reason = (
                f"it had not started after {timeout_s:.0f} s" if isinstance(err, TimeoutError) else exit_reason(code)
            )
            raise failed(f"{what} ended while starting ({reason})") from None
        if kind == "error":  # the child's own account (ours: problem and fix) of why it could not start
            conn.close()
            process.wait()
            raise payload
        return cls(process, conn, payload, what)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def ended(self) -> str:
        """Why it ended ("killed, perhaps for memory"), once it has."""
        return exit_reason(self.process.poll())

    def stop(self, timeout_s: float = 10) -> None:
        """Close the connection (the child's cue to exit), wait for it, kill it if it lingers."""
        with contextlib.suppress(OSError):
            # Shut the socket down, not just close the fd: a reader thread blocked on it (the
            # model's) would keep the socket open under its call, and the child would never see EOF.
            with socket.fromfd(self.conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.shutdown(socket.SHUT_RDWR)
            self.conn.close()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _handshake(process: subprocess.Popen, conn: Connection, timeout_s: float) -> tuple[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not conn.poll(1.0):  # loading: seconds for the default model, minutes for a big one
        if process.poll() is not None:
            # It may have answered in its last moment (a load error, then exit).
            if conn.poll(0):
                break
            raise EOFError
        if time.monotonic() > deadline:
            raise TimeoutError
    return conn.recv()


class Watched(Protocol):
    alive: bool

    def ended(self) -> str: ...

    def stop(self) -> None: ...


C = TypeVar("C", bound=Watched)


class Restarting(Generic[C]):
    """The current child of one kind; a dead one is replaced on the next `current()`, one start at
    a time however many threads ask. The child stops when this object is dropped or the app exits."""

    def __init__(self, start: Callable[[], C], what: str):
        self._start, self.what = start, what
        self._lock = threading.Lock()
        # In a list the finalizer holds, not this object: dropping this stops whichever child it
        # has by then.
        self._holder: list[C] = []
        weakref.finalize(self, _stop_all, self._holder)

    def current(self) -> C:
        with self._lock:
            if self._holder and not self._holder[0].alive:
                log.warning("%s had ended (%s): starting it again", self.what, self._holder[0].ended())
                self._holder.pop().stop()
            if not self._holder:
                self._holder.append(self._start())
            return self._holder[0]

    @property
    def running(self) -> C | None:
        """The child started last (alive or not), without starting one."""
        return self._holder[0] if self._holder else None

    def stop(self) -> None:
        with self._lock:
            _stop_all(self._holder)


def _stop_all(holder: list) -> None:
    while holder:
        holder.pop().stop()


# ---------------------------------------------------------------- the child's side


def connect() -> tuple[Connection, Any]:
    """In the child: its connection to the app (the fd in argv) and the settings sent over it."""
    conn = Connection(int(sys.argv[1]))
    return conn, conn.recv()


def ready(conn: Connection, info: Any = None) -> None:
    """In the child: started; `info` goes back to the app as `Child.info`."""
    conn.send(("ready", info))


def fail(conn: Connection, err: PersonaStudioError) -> None:
    """In the child: could not start; the app raises `err` (ours pickle with problem and fix)."""
    conn.send(("error", err))


def exit_when_closed(conn: Connection) -> None:
    """In the child: exit at once when the app's end closes (it stopped us, or it died)."""

    def wait() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                conn.recv()
        os._exit(0)

    threading.Thread(target=wait, daemon=True, name="exit-with-the-app").start()
