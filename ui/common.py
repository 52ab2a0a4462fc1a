"""Small helpers shared by the tabs."""

from __future__ import annotations

import html

import gradio as gr

from chatbot.errors import PersonaStudioError


def rater_name(typed: str | None, request: gr.Request | None = None) -> str:
    """The logged-in user when auth is on, else the name typed in the header."""
    if request is not None and getattr(request, "username", None):
        return request.username
    name = (typed or "").strip()
    if not name:
        raise gr.Error("Enter your name in the 'Rater' box at the top first: labels are saved under it.")
    return name


def user_error(err: PersonaStudioError) -> gr.Error:
    """A `PersonaStudioError` as a Gradio error toast: the problem, then the fix."""
    return gr.Error(f"{err.problem}. {err.fix}" if err.fix else err.problem)


def text_of(content) -> str:
    """Gradio 6 hands chat content back as a list of parts; the chat template wants text."""
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def shown(text: str) -> str:
    """Text for a Chatbot: HTML in messages or personas must show as text, never render or run.
    The chat history holds this escaped form; `raw` turns it back before the model sees it."""
    return html.escape(text, quote=False)


def raw(text: str) -> str:
    return html.unescape(text)
