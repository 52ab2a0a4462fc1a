"""Small helpers shared by the tabs: errors as toasts, messages for display, keyboard shortcuts
(who the rater is: `ui.raters`)."""

from __future__ import annotations

import functools
import html
import inspect
import json

import gradio as gr

from core.conversation import Messages
from core.errors import PersonaStudioError


def user_error(err: PersonaStudioError) -> gr.Error:
    """A `PersonaStudioError` as a Gradio error toast: the problem, then the fix."""
    return gr.Error(f"{err.problem}. {err.fix}" if err.fix else err.problem)


def shows_errors(handler):
    """Wrap a handler (plain or generator) so a `PersonaStudioError` reaches the user as an
    error toast that names the problem and the fix. The signature is kept (`gr.api` reads it)."""
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def stream(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except PersonaStudioError as err:
                raise user_error(err) from None

        return stream

    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except PersonaStudioError as err:
            raise user_error(err) from None

    return call


def escape_html(text: str) -> str:
    """Text for a Chatbot, which renders (sanitised) HTML: a "<script>" someone typed must
    show as those characters. Display only: the model and the store always get the raw text."""
    return html.escape(text, quote=False)


def for_chatbot(messages: Messages) -> list[dict]:
    """Conversation messages as a `gr.Chatbot` value: escaped text; a notice shown as a titled
    box; a stored turn's id in the metadata, so a 👍 names the turn it labels (not its text)."""
    shown = []
    for m in messages:
        metadata = {"id": m["id"]} if m.get("id") is not None else {}
        if m["role"] == "notice":
            to = f" to {m['persona_name']}" if m.get("persona_name") else ""
            metadata["title"] = escape_html(f"Persona switched{to}")
            shown.append({"role": "assistant", "content": escape_html(m["content"]), "metadata": metadata})
        else:
            shown.append({"role": m["role"], "content": escape_html(m["content"]), "metadata": metadata or None})
    return shown


def shortcuts_js(name: str, buttons: dict[str, str]) -> str:
    """A JS function that clicks the button with element id `buttons[key]` when `key` is pressed
    (for `gr.HTML(js_on_load=f"({...})();")` or `launch(js=...)`). `name` guards against a
    second install. Keys do nothing while typing in a field, with a modifier held, on a disabled
    button, or when the button's tab is hidden (a button in a hidden tab has no offsetParent), so
    two tabs may use the same keys."""
    flag = json.dumps(f"personaStudioKeys_{name}")
    return """
() => {
  if (window[FLAG]) return;
  window[FLAG] = true;
  const ids = IDS;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    const id = ids[event.key.toLowerCase()];
    const button = id && document.getElementById(id);
    if (!button || button.disabled || button.offsetParent === null) return;
    event.preventDefault();
    button.click();
  });
}
""".replace("FLAG", flag).replace("IDS", json.dumps(buttons))
