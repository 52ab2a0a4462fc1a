"""Small helpers shared by the tabs: errors as toasts, messages for display, keyboard shortcuts
(who the rater is: `ui.raters`)."""

from __future__ import annotations

import functools
import html
import inspect
import json
import threading
import time

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


def keeps_content(handler):
    """Wrap a UI handler (plain or generator) so that a refusal or an error shows as a toast and
    leaves every output as it is: a raised error would blank the outputs into an "Error" panel
    (the chat, a typed message, both Compare panes after their replies took 20 s). API endpoints
    use `shows_errors`: a script needs the call to fail."""

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def stream(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except (PersonaStudioError, gr.Error) as err:
                toast(err)
                yield gr.skip()

        return stream

    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except (PersonaStudioError, gr.Error) as err:
            toast(err)
            return gr.skip()

    return call


def toast(err: PersonaStudioError | gr.Error, before: str = "") -> None:
    """The error as a toast (Gradio's warning kind: an error kind exists only as a raise)."""
    text = f"{err.problem}. {err.fix}" if isinstance(err, PersonaStudioError) else str(err.message)
    gr.Warning(before + text, title=getattr(err, "title", None) or "Not done", duration=12)


# A page (browser tab) writes one reply at a time: a message sent while one streams is refused
# with the reason and stays in the box. A reply never takes this long; past it, the page is taken
# to have lost its event (a closed stream) and may send again.
STUCK_S = 600.0
_CLAIMING = threading.Lock()


def new_page() -> dict:
    """A page's state (`gr.State(new_page())`: each session gets a copy): when its reply began
    (0: none running) and the verdicts saved on its chat replies (turn id -> "Like"/"Dislike")."""
    return {"busy_since": 0.0, "sent": 0, "ratings": {}}


def claim(page: dict) -> bool:
    """Start the page's reply; False while one is already being written."""
    with _CLAIMING:
        if page["busy_since"] and time.monotonic() - page["busy_since"] < STUCK_S:
            return False
        page["busy_since"] = time.monotonic()
        return True


def release(page: dict) -> None:
    page["busy_since"] = 0.0


BUSY_HINT = "A reply is still being written: your message stays in the box. Press Enter again once it is done."


def empties_box_js(box_id: str, send_id: str) -> str:
    """The `js=` of a send event: empty the message box the moment Enter is pressed (its text
    already travels with the event), unless the Send button says a reply is being written (the
    server refuses that send; the text stays). Emptied by the server's answer instead, a box
    would lose what was typed in between. A refused send puts the text back."""
    box, send = json.dumps(f"#{box_id} textarea, #{box_id} input"), json.dumps(f"#{send_id}")
    return f"""
(...args) => {{
  const send = document.querySelector({send});
  const box = document.querySelector({box});
  if (box && !(send && send.disabled)) {{
    box.value = "";
    box.dispatchEvent(new Event("input", {{ bubbles: true }}));
  }}
  return args;
}}
"""


def style_js(name: str, css: str) -> str:
    """A JS function that adds `css` to the page once (for `gr.HTML(js_on_load=...)`): a tab's
    own rules, without touching the app's `gr.Blocks(css=...)`."""
    return """
() => {
  if (document.getElementById(ID)) return;
  const style = document.createElement("style");
  style.id = ID;
  style.textContent = CSS;
  document.head.appendChild(style);
}
""".replace("ID", json.dumps(f"persona-studio-css-{name}")).replace("CSS", json.dumps(css))


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
