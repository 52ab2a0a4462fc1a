"""Chat with a persona in the terminal, streamed. Reads lines from stdin, so it can be piped.

    python -m chatbot.chat --persona personas/ada.yaml
    printf 'Hi!\\nWhat do you do all day?\\n' | python -m chatbot.chat --persona personas/ada.yaml

In the chat: /persona FILE switches persona, /undo, /retry, /reset, /help, /quit.
"""

from __future__ import annotations

import logging
import sys

from pydantic import Field

from chatbot.session import ChatSession
from core.cli import entry_point
from core.errors import PersonaStudioError
from core.persona import load_persona
from engines.config import ChatEngineConfig, GenerationSettings
from engines.factory import load_engine

HELP = "/persona FILE  switch persona | /undo | /retry | /reset | /help | /quit"


class ChatConfig(ChatEngineConfig):
    persona: str = Field("personas/ada.yaml", description="Persona YAML file to speak as.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    scope_guard: bool = Field(True, description="Off-topic questions get the persona's deflection (if it has a scope).")


def _print_stream(pieces, session: ChatSession, out=None) -> None:
    out = out or sys.stdout  # looked up at call time: the stdout of now, not of import time
    out.write("bot> ")
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    if session.deflected:  # on stderr: a piped transcript keeps only the conversation
        print(f"[off-topic for {session.persona.name}: the scope's deflection, the model was not asked; "
              "--scope_guard false turns the guard off]", file=sys.stderr)  # fmt: skip


def _command(session: ChatSession, line: str) -> bool:
    """Run a /command; return False to quit."""
    cmd, _, arg = line.partition(" ")
    if cmd == "/quit":
        return False
    if cmd == "/persona":
        session.switch_persona(load_persona(arg.strip()))
        print(f"[persona switched to {session.persona.name}]")
    elif cmd == "/undo":
        print("[removed the last exchange]" if session.undo() else "[nothing to undo]")
    elif cmd == "/retry":
        _print_stream(session.retry(), session)
    elif cmd == "/reset":
        session.reset()
        print("[conversation cleared]")
    else:
        print(HELP)
    return True


def run(session: ChatSession, lines) -> None:
    """The read-reply loop; errors a user can fix are printed and the chat goes on."""
    interactive = sys.stdin.isatty()
    if session.history:
        print(f"bot> {session.history[0]['content']}")
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = lines.readline()
        if not line:  # end of input
            return
        line = line.rstrip("\n")
        try:
            if line.startswith("/"):
                if not _command(session, line):
                    return
            elif line.strip() or interactive:
                _print_stream(session.send(line), session)
        except PersonaStudioError as err:
            print(f"error: {err}", file=sys.stderr)


@entry_point(ChatConfig, __doc__)
def main(cfg: ChatConfig) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    persona = load_persona(cfg.persona)
    engine = load_engine(cfg)
    print(f"[{persona.name} on {engine.name}; {HELP}]", file=sys.stderr)
    run(ChatSession(engine, persona, cfg.generation, cfg.scope_guard), sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
