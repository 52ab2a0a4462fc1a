"""A chat under a persona in memory: send, undo, retry, switch, reset over any `ChatEngine`.

The terminal chat and local regression scripts use it; the app keeps the same history in the
store instead. Both are the pure functions of `core.conversation` over a message list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from chatbot.scope import classifier, deflection
from core import conversation
from core.conversation import Messages, build_messages, check_message, opening
from core.errors import MessageError
from core.persona import Persona
from engines.engine import ChatEngine, GenerationSettings


def warm(engine: ChatEngine, personas: Iterable[Persona]) -> None:
    """Prefill each persona's system prompt and greeting, so the first reply of a chat only
    has to read the user's message (engines without a prompt cache ignore this); get the
    scope classifiers of personas with a scope ready."""
    for persona in personas:
        engine.warm(build_messages(persona, opening(persona)))
    for persona in personas:
        if persona.scope is not None:  # the scope guard's classifier, loaded or trained now
            classifier(persona)


class ChatSession:
    """One conversation. `send` streams a reply and records the exchange once it is complete.

    `scope_guard`: a persona with a `scope` answers off-topic questions with its deflection,
    without calling the model; the reply is marked `"deflected": True` in the history."""

    def __init__(
        self,
        engine: ChatEngine,
        persona: Persona,
        settings: GenerationSettings | None = None,
        scope_guard: bool = True,
    ):
        self.engine = engine
        self.persona = persona
        self.settings = settings or GenerationSettings()
        self.scope_guard = scope_guard
        self.history: Messages = opening(persona)

    def send(self, text: str) -> Iterator[str]:
        """Yield reply pieces; the exchange joins the history only when the reply finished,
        so an error or an abandoned stream leaves the history as it was."""
        message = check_message(text)
        deflected = deflection(self.persona, message) if self.scope_guard else None
        if deflected is not None:
            yield deflected
            self.history += [
                {"role": "user", "content": message},
                {"role": "assistant", "content": deflected, "deflected": True},
            ]
            return
        pieces: list[str] = []
        for piece in self.engine.stream(build_messages(self.persona, self.history, message), self.settings):
            pieces.append(piece)
            yield piece
        self.history += [
            {"role": "user", "content": message},
            {"role": "assistant", "content": "".join(pieces).strip()},
        ]

    def reply(self, text: str) -> str:
        """`send`, collected."""
        return "".join(self.send(text)).strip()

    @property
    def deflected(self) -> bool:
        """Whether the last reply was the persona's scope deflection (the model not called)."""
        return bool(self.history and self.history[-1].get("deflected"))

    def switch_persona(self, persona: Persona) -> None:
        """The new persona speaks from the next turn on; its prompt replaces the old one."""
        self.persona = persona
        self.history = conversation.switched(self.history, persona)

    def undo(self) -> str | None:
        """Remove the last exchange; return the user message it began with."""
        self.history, user = conversation.undone(self.history)
        return user

    def retry(self) -> Iterator[str]:
        """Regenerate the last reply (with sampling it will usually differ). If the new
        reply fails or is abandoned, the old exchange is put back."""
        before = self.history
        self.history, user = conversation.undone(before)
        if user is None:
            raise MessageError("there is no reply to retry yet", "send a message first")
        done = False
        try:
            yield from self.send(user)
            done = True
        finally:
            if not done:
                self.history = before

    def reset(self) -> None:
        """Start over under the current persona (its greeting, if any, opens the chat)."""
        self.history = opening(self.persona)
