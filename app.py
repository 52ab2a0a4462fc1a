"""Persona Studio web app: chat with a persona on the embedded default model.

    python app.py                       # http://127.0.0.1:7860
    python app.py --model runs/my-model --port 8000

This first version has the Chat view; Compare, Label and Results tabs build on it. Handlers
stay thin: prompts, sessions and generation live in `chatbot/`.
"""

from __future__ import annotations

import logging
import os
import sys

import gradio as gr
from pydantic import Field

from chatbot.config import parse_config
from chatbot.engine import ChatEngine, GenerationSettings
from chatbot.errors import PersonaStudioError
from chatbot.loading import EngineConfig, load_engine
from chatbot.persona import Persona, load_personas
from chatbot.session import build_messages, check_message


class AppConfig(EngineConfig):
    # Hugging Face Spaces sets GRADIO_SERVER_NAME=0.0.0.0; locally we stay on loopback.
    host: str = Field(os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), description="Interface to listen on.")
    port: int = Field(int(os.environ.get("GRADIO_SERVER_PORT", 7860)), description="Port to listen on.")
    personas_dir: str = Field("personas", description="Folder of persona YAML files.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)


def _text(content) -> str:
    """Gradio 6 hands chat content back as a list of parts; the chat template wants text."""
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def _greeting(persona: Persona) -> list[dict]:
    return [{"role": "assistant", "content": persona.greeting}] if persona.greeting else []


def build_demo(engine: ChatEngine, personas: dict[str, Persona], settings: GenerationSettings) -> gr.Blocks:
    first = next(iter(personas))

    def respond(message: str, history: list[dict], persona_key: str):
        try:
            message = check_message(message)
        except PersonaStudioError as err:
            raise gr.Error(str(err)) from None
        history = [{"role": m["role"], "content": _text(m["content"])} for m in history or []]
        messages = build_messages(personas[persona_key], history, message)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        try:
            for piece in engine.stream(messages, settings):
                history[-1]["content"] += piece
                yield history, ""
        except PersonaStudioError as err:
            raise gr.Error(str(err)) from None

    def switch(persona_key: str):
        return _greeting(personas[persona_key])

    with gr.Blocks(title="Persona Studio") as demo:
        gr.Markdown(f"# Persona Studio\nChat with a persona on **{engine.name}**.")
        choices = [(f"{p.name}: {p.description}" if p.description else p.name, key) for key, p in personas.items()]
        persona = gr.Dropdown(choices=choices, value=first, label="Persona")
        chatbot = gr.Chatbot(value=_greeting(personas[first]), label="Chat", height=420)
        message = gr.Textbox(placeholder="Say something and press Enter", label="Message")
        message.submit(respond, [message, chatbot, persona], [chatbot, message], api_name="chat")
        persona.change(switch, persona, chatbot, api_name="switch_persona")
    return demo


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        cfg = parse_config(AppConfig, argv, description=__doc__)
        personas = load_personas(cfg.personas_dir)
        if not personas:
            raise PersonaStudioError(f"no persona files in {cfg.personas_dir}", "add a *.yaml persona there")
        engine = load_engine(cfg)
    except PersonaStudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    demo = build_demo(engine, personas, cfg.generation)
    demo.queue(default_concurrency_limit=2, max_size=64).launch(server_name=cfg.host, server_port=cfg.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
