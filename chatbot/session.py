"""A chat under a persona: history, persona switches, undo and retry, over any `ChatEngine`.

The messages sent to the engine are always rebuilt from scratch as
`[system = render(current persona)] + history + [user message]`, so after a persona switch
nothing of the old persona's prompt remains; the dialogue itself (what was said) is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from chatbot.engine import ChatEngine, GenerationSettings, Messages
from chatbot.errors import MessageError
from chatbot.persona import Persona, render_system_prompt

# Far above any context window we run (8k tokens is ~32k chars); it only stops a pasted
# file from being tokenised before the context-window check can say it is too long.
MAX_MESSAGE_CHARS = 100_000


def check_message(text: str) -> str:
    """The message to send, or a `MessageError` saying why it cannot be sent."""
    if not text or not text.strip():
        raise MessageError("the message is empty", "type something to say before sending")
    if len(text) > MAX_MESSAGE_CHARS:
        raise MessageError(
            f"the message is {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}",
            "send a shorter message (the model's context window holds a few thousand words at most)",
        )
    return text.strip()


def build_messages(persona: Persona, history: Messages, user_message: str | None = None) -> Messages:
    """System prompt for `persona`, then the user/assistant history, then the new message."""
    dialogue = [{"role": m["role"], "content": m["content"]} for m in history if m["role"] in ("user", "assistant")]
    messages = [{"role": "system", "content": render_system_prompt(persona)}, *dialogue]
    if user_message is not None:
        messages.append({"role": "user", "content": user_message})
    return messages


def opening(persona: Persona) -> Messages:
    """The history a new chat starts with: the persona's greeting, if it has one."""
    return [{"role": "assistant", "content": persona.greeting}] if persona.greeting else []


def warm(engine: ChatEngine, personas: Iterable[Persona]) -> None:
    """Prefill each persona's system prompt and greeting, so the first reply of a chat only
    has to read the user's message (engines without a prompt cache ignore this)."""
    for persona in personas:
        engine.warm(build_messages(persona, opening(persona)))


class ChatSession:
    """One conversation. `send` streams a reply and records the exchange once it is complete."""

    def __init__(self, engine: ChatEngine, persona: Persona, settings: GenerationSettings | None = None):
        self.engine = engine
        self.persona = persona
        self.settings = settings or GenerationSettings()
        self.history: Messages = []
        self.reset()

    def send(self, text: str) -> Iterator[str]:
        """Yield reply pieces; the exchange joins the history only when the reply finished,
        so an error or an abandoned stream leaves the history as it was."""
        message = check_message(text)
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

    def switch_persona(self, persona: Persona) -> None:
        """The new persona speaks from the next turn on; its prompt replaces the old one."""
        self.persona = persona

    def undo(self) -> str | None:
        """Remove the last user/assistant exchange; return the user message it held."""
        if len(self.history) >= 2 and self.history[-2]["role"] == "user":
            user = self.history[-2]["content"]
            del self.history[-2:]
            return user
        return None

    def retry(self) -> Iterator[str]:
        """Regenerate the last reply (with sampling it will usually differ). If the new
        reply fails or is abandoned, the old exchange is put back."""
        if not (len(self.history) >= 2 and self.history[-2]["role"] == "user"):
            raise MessageError("there is no reply to retry yet", "send a message first")
        last = self.history[-2:]
        del self.history[-2:]
        done = False
        try:
            yield from self.send(last[0]["content"])
            done = True
        finally:
            if not done:
                self.history += last

    def reset(self) -> None:
        """Start over under the current persona (its greeting, if any, opens the chat)."""
        self.history = opening(self.persona)
