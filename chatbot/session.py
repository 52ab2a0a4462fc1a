"""A chat under a persona in memory: send, undo, retry, switch, reset over any `ChatEngine`.

The terminal chat and local regression runs use it: the conversation service
(`chatbot.service`) over a `MemoryHistory`, as the app is the same service over the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from chatbot import service
from chatbot.history import MemoryHistory
from chatbot.scope import classifier
from core.conversation import Messages, build_messages, opening
from core.persona import Persona
from engines.config import GenerationSettings
from engines.engine import ChatEngine


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
        self.reset()

    @property
    def history(self) -> Messages:
        """The conversation as `{"role", "content"}` messages (a deflection marked `"deflected"`)."""
        return [{"role": t["role"], "content": t["content"]} | ({"deflected": True} if t["deflected"] else {})
                for t in self._history.turns]  # fmt: skip

    def _pieces(self, steps: Iterator[service.Step]) -> Iterator[str]:
        """The reply's new text at each step; a deflection (one saved step) whole."""
        said = ""
        for step in steps:
            if step.turn_id is None:
                yield step.reply[len(said) :]
                said = step.reply
            elif not said:
                yield step.reply

    def send(self, text: str) -> Iterator[str]:
        """Yield reply pieces; the exchange joins the history only when the reply finished,
        so an error or an abandoned stream leaves the history as it was."""
        steps = service.exchange(self._history, lambda: self.engine, text, self.persona, self.engine.name,
                                 self.settings, scope_guard=self.scope_guard)  # fmt: skip
        yield from self._pieces(steps)

    def reply(self, text: str) -> str:
        """`send`, collected."""
        return "".join(self.send(text)).strip()

    @property
    def deflected(self) -> bool:
        """Whether the last reply was the persona's scope deflection (the model not called)."""
        return bool(self._history.turns and self._history.turns[-1]["deflected"])

    def switch_persona(self, persona: Persona) -> None:
        """The new persona speaks from the next turn on; its prompt replaces the old one."""
        self.persona = persona
        service.switch(self._history, persona)

    def undo(self) -> str | None:
        """Remove the last exchange; return the user message it began with."""
        return service.undo(self._history)

    def retry(self) -> Iterator[str]:
        """Regenerate the last reply (with sampling it will usually differ). The old exchange is
        replaced only when the new reply is complete: a failed or abandoned one leaves it."""
        yield from self._pieces(service.retry(self._history, lambda: self.engine, self.persona, self.engine.name,
                                              self.settings, self.scope_guard))  # fmt: skip

    def reset(self) -> None:
        """Start over under the current persona (its greeting, if any, opens the chat)."""
        self._history = MemoryHistory(opening(self.persona), self.persona)
