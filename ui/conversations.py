"""The app's conversations, kept in the store: what a user sees is the conversation's active turns.

The conversation service (`chatbot.service`) over a `StoreHistory`: a message is one store read
before generation and one write after it (the exchange, after a greeting or a persona-switch
notice where there is one, and a retry's withdrawal of the exchange it replaces, in one
transaction). Undo and retry withdraw the turns they take back (kept in the store, marked), and
a 👍/👎 names the stored turn it labels (`Store.thumb`: one call), so a label always carries the
persona and model version that wrote that very reply. The model is always fed from the store,
never from the browser's copy. No Gradio here: the Chat and Compare tabs and the `/chat` API are
thin over these functions.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from chatbot import service
from chatbot.history import StoreHistory, shown, stored
from chatbot.service import Step
from core.conversation import Messages, opening
from core.persona import Persona
from engines.config import GenerationSettings
from store import LabelRow, Turn
from ui.context import AppContext

__all__ = [
    "Step",
    "exchange",
    "retry",
    "undo",
    "label_reply",
    "unlabel_reply",
    "stored_messages",
    "transcript",
    "merge",
    "Started",
]


def stored_messages(turns: list[Turn]) -> Messages:
    """The active (not withdrawn) stored turns as conversation messages (`chatbot.history.shown`)."""
    return shown([stored(t) for t in turns if t.withdrawn is None])


def transcript(ctx: AppContext, conversation_id: int | None, persona: Persona) -> Messages:
    """What the chat shows: the stored conversation, or a new chat's opening."""
    if conversation_id is None:
        return opening(persona)
    return shown(StoreHistory(ctx.store, conversation_id).load())


def exchange(
    ctx: AppContext,
    message: str,
    persona_key: str,
    persona: Persona,
    version: str,
    settings: GenerationSettings,
    conversation_id: int | None = None,
    *,
    seed: Messages | None = None,
    replacing: list[int] | None = None,
    source: str = "chat",
    scope_guard: bool = True,
) -> Iterator[Step]:
    """`chatbot.service.exchange` in the stored conversation `conversation_id` (None: a new one,
    from `source`, saved with its first exchange); the model of `version` is loaded only when
    the message reaches it."""
    start = dict(source=source, persona_key=persona_key, persona=persona.model_dump(), model_version=version)
    history = StoreHistory(ctx.store, conversation_id, start)
    yield from service.exchange(history, lambda: ctx.pool.get(version), message, persona, version, settings,
                                seed=seed, replacing=replacing, scope_guard=scope_guard)  # fmt: skip


def undo(ctx: AppContext, conversation_id: int | None) -> str | None:
    """Withdraw the last exchange; the user message it began with (None: nothing to undo)."""
    return service.undo(StoreHistory(ctx.store, conversation_id))


def retry(
    ctx: AppContext,
    conversation_id: int | None,
    persona_key: str,
    persona: Persona,
    version: str,
    settings,
    scope_guard: bool = True,
) -> Iterator[Step]:
    """A new reply to the last user message; the old exchange is withdrawn when it is saved."""
    history = StoreHistory(ctx.store, conversation_id)
    yield from service.retry(history, lambda: ctx.pool.get(version), persona, version, settings, scope_guard)


def label_reply(ctx: AppContext, turn_id: int, verdict: str, rater: str, comment: str = "") -> LabelRow:
    """Label the stored reply `turn_id` good or bad (again: the verdict changes); one store call."""
    return ctx.store.thumb(int(turn_id), rater, verdict, comment)


def unlabel_reply(ctx: AppContext, turn_id: int, rater: str) -> None:
    """Take back the rater's label on the reply (its thumb clicked off); one store call."""
    ctx.store.thumb(int(turn_id), rater, None)


class Started:
    """A reply asked for now and read later: its first step (the model's prefill and first token,
    or a deflection) is fetched in a thread at once, the rest as the reader pulls (`steps`). The
    Chat tab starts the model when it accepts a message, so the prefill overlaps the round trip
    of the event that streams the reply (Enter → message shown → reply event joins the queue:
    0.03-0.14 s measured). No reader within `wait_s` (the page went away, or its event waits
    behind busy generations): the exchange is closed there, nothing saved, and `steps` gives None
    (the reader asks again)."""

    def __init__(self, steps: Iterator[Step], wait_s: float = 30.0):
        self._steps, self._first = steps, queue.Queue(maxsize=1)
        self._read, self._lock, self._closed = threading.Event(), threading.Lock(), False
        threading.Thread(target=self._fetch, args=(wait_s,), daemon=True, name="reply-start").start()

    def _fetch(self, wait_s: float) -> None:
        try:
            self._first.put(next(self._steps, None))
        except Exception as err:  # raised in the reader's thread
            self._first.put(err)
        if not self._read.wait(wait_s):
            with self._lock:
                if not self._read.is_set():
                    self._closed = True
                    self._steps.close()  # the engine's stream ends (the model drops the chat), no save

    def steps(self) -> Iterator[Step] | None:
        """The reply's steps, the first one fetched already (once: a second reader gets None)."""
        with self._lock:
            if self._closed or self._read.is_set():
                return None
            self._read.set()
        return self._rest()

    def _rest(self) -> Iterator[Step]:
        try:
            first = self._first.get()
            if isinstance(first, Exception):
                raise first
            if first is None:
                return
            yield first
            yield from self._steps
        finally:
            self._steps.close()  # a reader that stops early ends the exchange, as a plain one would


def merge(streams: list[Iterator[Step]]) -> Iterator[tuple[int, Step]]:
    """(index, step) from several exchanges as their steps arrive, each exchange in a thread
    of its own so no pane waits for another (Compare)."""
    steps: queue.Queue = queue.Queue()

    def run(index: int, stream: Iterator[Step]) -> None:
        try:
            for step in stream:
                steps.put((index, step))
        except Exception as err:  # handed to the consumer below
            steps.put((index, err))
        finally:
            steps.put((index, None))

    for index, stream in enumerate(streams):
        threading.Thread(target=run, args=(index, stream), daemon=True).start()
    running = len(streams)
    while running:
        index, step = steps.get()
        if step is None:
            running -= 1
        elif isinstance(step, Exception):
            raise step
        else:
            yield index, step
