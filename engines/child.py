"""The model in a child process: generation never holds the app's interpreter lock.

    python app.py                        # on CPU the model runs in `python -m engines.worker` (--model_process auto)
    python app.py --model_process app    # in the app's own process, as before

A chat's forward passes are torch ops, but between them the model's Python code holds the
interpreter lock, which the app's request threads need too. With the model in its own process
at a lower priority (`MODEL_NICE`) the app's threads only route requests and stream pieces, as
they do for a model server (`--engine_url`): raters' label round trips and many users' first
tokens both improved (benchmarks/README.md, "A room of raters" and "Many users at once").

`ProcessEngine` is the app's side: a `ChatEngine` whose token counting runs here on the child's
tokenizer (sent over at start-up) and whose `stream`, `generate` and `warm` are requests to the
child over one `multiprocessing` connection (pickled messages). The child (engines/worker.py) loads
the engine the usual way (`load_engine`: batched, prefix cache) and runs each request in a thread.
A child that dies (killed, out of memory) fails the chats in flight with a message saying so;
the next request starts a new one. The child ends when the app does (its connection closes).
Starting, the handshake, noticing a death and restarting are core/child.py's, as for the store's child.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Iterator

from core.child import Child, Restarting
from core.conversation import Messages
from core.errors import GenerationError, ModelLoadError, PersonaStudioError
from engines.config import EngineConfig, GenerationSettings
from engines.engine import ChatEngine, prompt_tokens

log = logging.getLogger(__name__)

# The child's nice value: the app's request threads (labels, pages, streaming) come first; a model
# process at nice 0 made raters wait ~10x longer (benchmarks/README.md, "A room of raters").
MODEL_NICE = 10


def spare_threads() -> int:
    """torch threads for the child: every core this process may use but one, which the app keeps.
    On 2 cores, with raters labelling while people chat, one thread gave the raters shorter waits and
    the chats faster replies than two, which kept waiting for each other whenever the app took a core
    (benchmarks/README.md, "A room of raters")."""
    # The cores this process may run on (a container's share); macOS has no sched_getaffinity.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


JOB_NICE = 5  # more for batch `generate` (queue jobs) inside the child: chats come first
START_TIMEOUT_S = 600  # loading a large model from a slow disk


END = None  # sent after a stream's last piece (pieces are strings)
_NOTHING = object()  # no more pieces waiting


def _portable(err: Exception) -> PersonaStudioError:
    """An exception that crosses the pipe intact: ours as they are (they pickle with problem and
    fix), others named."""
    if isinstance(err, PersonaStudioError):
        return err
    return GenerationError(f"{type(err).__name__}: {err}", "see the app's log (the model process logged the trace)")


# ---------------------------------------------------------------- the app's side


class ProcessEngine(ChatEngine):
    """A `ChatEngine` over a child process that holds the model (see the module docstring)."""

    def __init__(self, cfg: EngineConfig, nice: int = MODEL_NICE, threads: int | None = None):
        self.cfg, self.nice, self.threads = cfg, nice, threads or spare_threads()
        self._ids = itertools.count()
        engine_cfg = EngineConfig(**cfg.model_dump(include=set(EngineConfig.model_fields)))  # the app's has more
        settings = (engine_cfg, nice, self.threads)
        # Nothing of self in it: a version the pool drops must end its process at once, not when a
        # garbage collection finds the cycle.
        self._children = Restarting(lambda: _Model.start(*settings), "the model process")
        self._ready_child()  # now: a model that does not load fails the app's start, not a chat

    @property
    def batches(self) -> bool:  # the child's engine decodes chats together (or not: --batching off)
        return self._batches

    @property
    def _child(self) -> _Model:
        return self._children.running

    def _ready_child(self) -> _Model:
        model = self._children.current()
        self.name, self.context_window, self.tokenizer, self._batches, self.threads = model.info  # as the child set
        return model

    def count_tokens(self, messages: Messages) -> int:
        return prompt_tokens(self.tokenizer, messages)

    def _request(self, kind: str, *args) -> tuple[_Model, int, queue.Queue]:
        child = self._ready_child()
        rid = next(self._ids)
        replies = child.open(rid)
        child.send((kind, rid, *args))
        return child, rid, replies

    def stream(
        self, messages: Messages, settings: GenerationSettings, negative: Messages | None = None
    ) -> Iterator[str]:
        child, rid, replies = self._request("stream", messages, settings, negative)
        finished = False
        try:
            while True:
                # The pieces that arrived meanwhile go out as one: each yield is an update the app
                # sends (and, in the Chat tab, a re-render of the transcript), so a busy app streams
                # in bigger steps instead of falling behind the model.
                text, item = "", replies.get()
                while isinstance(item, str):
                    text += item
                    try:
                        item = replies.get_nowait()
                    except queue.Empty:
                        item = _NOTHING
                if text:
                    yield text
                if isinstance(item, Exception):
                    finished = True
                    raise item
                if item is END:
                    finished = True
                    return
        finally:
            child.close(rid)
            if not finished:  # the Stop button or a closed tab: the child drops the chat's row
                child.send(("cancel", rid))

    def _call(self, kind: str, *args):
        """A request with one answer: its result, or its error raised here."""
        child, rid, replies = self._request(kind, *args)
        try:
            item = replies.get()
        finally:
            child.close(rid)
        if isinstance(item, Exception):
            raise item
        return item

    def generate(self, conversations: list[Messages], settings: GenerationSettings, **kw) -> list[str]:
        kw.pop("progress", None)  # a bar in the child's stderr would help no one
        return self._call("generate", conversations, settings, kw)

    def warm(self, messages: Messages) -> None:
        self._call("warm", messages)

    def close(self) -> None:
        """End the model process now (it also ends with the app)."""
        self._children.stop()


class _Model:
    """One model process (`core.child.Child`) and the thread that hands its messages to the waiting
    requests."""

    def __init__(self, child: Child):
        self.child, self.process, self.conn, self.info = child, child.process, child.conn, child.info
        self._waiting: dict[int, queue.Queue] = {}
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True, name="model-process-reader")
        self._reader.start()

    @classmethod
    def start(cls, cfg: EngineConfig, nice: int, threads: int) -> _Model:
        def failed(problem: str) -> ModelLoadError:
            return ModelLoadError(
                problem, "see its log above; or run the model in the app's process (--model_process app)"
            )

        what = f"the model process of {cfg.model}"
        return cls(Child.start("engines.worker", (cfg, nice, threads), what, failed, START_TIMEOUT_S))

    @property
    def alive(self) -> bool:
        return self.child.alive and self._reader.is_alive()

    def ended(self) -> str:
        return self.child.ended()

    def open(self, rid: int) -> queue.Queue:
        replies: queue.Queue = queue.Queue()
        self._waiting[rid] = replies
        return replies

    def close(self, rid: int) -> None:
        self._waiting.pop(rid, None)

    def send(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self.conn.send(message)
        except (OSError, ValueError):  # the child is gone: the reader fails the waiting requests
            if message[0] != "cancel":
                self._fail(message[1])

    def _read(self) -> None:
        try:
            while True:
                rid, item = self.conn.recv()
                replies = self._waiting.get(rid)
                if replies is not None:  # else: a chat that was stopped; its last pieces are dropped
                    replies.put(item)
        except (EOFError, OSError):
            pass
        except Exception:  # a message that cannot be read: a bug; end the child, the next request starts one
            log.exception("unreadable message from the model process")
            self.process.kill()
        self.process.wait()
        for rid in list(self._waiting):
            self._fail(rid)

    def _fail(self, rid: int) -> None:
        replies = self._waiting.get(rid)
        if replies is not None:
            replies.put(
                GenerationError(
                    f"the model process ended mid-request ({self.ended()})",
                    "send the message again (the next request starts the model again); if it keeps "
                    "happening, lower max_new_tokens or run fewer chats at once",
                )
            )

    def stop(self) -> None:
        self.child.stop()
