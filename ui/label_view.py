"""The Label tab's widgets: where the persona, the conversation, the answer and the buttons go
(side by side on a desktop; on a phone the answer and Good/Bad on the first screen), its keys
and its CSS. The handlers are in `ui/label.py`."""

import json
from dataclasses import dataclass

import gradio as gr

from store import QUEUE_ORDER
from ui.common import shortcuts_js
from ui.context import AppContext

NO_RATER = "Type your name in the **Rater** box at the top, then press Enter to start labelling."
KEYS_HINT = "Keys: G or 1 good · B or 2 bad · S skip · U undo"
BUTTON_IDS = {"good": "label-good", "bad": "label-bad", "skip": "label-skip", "undo": "label-undo"}

# Key -> the button it clicks (`event.key`, lower-cased).
SHORTCUTS = {"g": "good", "1": "good", "b": "bad", "2": "bad", "s": "skip", "u": "undo"}

# Clicks the Label tab's buttons from the keyboard (`ui.common.shortcuts_js`). `demo.launch(js=...)` calls it
# once on page load; the guard makes a second install (the tab's own, below) harmless.
# Keys do nothing while typing in a field, with a modifier held, or when the Label tab is
# hidden (a button in a hidden tab has no offsetParent).
LABEL_SHORTCUTS_JS = shortcuts_js("label", {key: BUTTON_IDS[action] for key, action in SHORTCUTS.items()})


# The tab's own CSS, put in the page by the keys hint's js_on_load (app.py's launch has none):
# the context a rater judges against cannot be wiped (the Chatbot's trash button), and on a
# phone the answer and Good/Bad fit the first screen (390x844) under a short conversation.
LABEL_CSS = """
#label-context button[aria-label="Clear"] { display: none !important; }
@media (max-width: 640px) {
  #label-context { height: 150px !important; min-height: 0 !important; }
  #label-verdicts button { min-width: 0 !important; }
}
"""
# On a narrow screen the persona starts folded (its name stays in the header; a tap opens it).
LABEL_LOAD_JS = f"""
(() => {{
  if (!document.getElementById("label-css")) {{
    const style = document.createElement("style");
    style.id = "label-css";
    style.textContent = {json.dumps(LABEL_CSS)};
    document.head.appendChild(style);
  }}
  const header = document.querySelector("#label-persona button.label-wrap");
  if (window.innerWidth <= 640 && header && header.classList.contains("open")) header.click();
  ({LABEL_SHORTCUTS_JS})();
}})();
"""
VERDICT_NAMES = {"good": "👍 Good", "bad": "👎 Bad"}


@dataclass
class LabelView:
    progress: gr.Markdown
    item_id: gr.State  # the item on screen; None when there is none
    shown_for: gr.State  # the rater it was given to: a renamed rater gets their own item first
    persona_box: gr.Accordion
    persona: gr.Textbox
    chat: gr.Chatbot
    answer: gr.Textbox
    comment: gr.Textbox
    buttons: dict[str, gr.Button]  # by BUTTON_IDS key
    mine: gr.State  # item id -> (verdict, comment) of this page's labels, for undo

    @property
    def outputs(self) -> list:
        buttons = [self.buttons[key] for key in ("good", "bad", "skip")]
        return [self.item_id, self.shown_for, self.persona_box, self.persona, self.chat, self.answer, self.progress,
                self.comment, *buttons]  # fmt: skip


def layout(ctx: AppContext) -> LabelView:
    gr.Markdown("Would this persona say this, and is it a good answer? Judge the highlighted answer.")
    progress = gr.Markdown("Loading your next item…" if ctx.signed_in else NO_RATER, elem_id="label-progress")
    item_id, shown_for, mine = gr.State(None), gr.State(None), gr.State({})
    with gr.Row(equal_height=False):  # side by side on a desktop; stacked on a phone, persona first
        with gr.Column(scale=1, min_width=280), gr.Accordion("Persona", elem_id="label-persona") as persona_box:
            persona = gr.Textbox(show_label=False, interactive=False, lines=8, max_lines=24)
        with gr.Column(scale=2):
            chat = gr.Chatbot(
                label="Conversation so far",
                height=300,
                feedback_options=None,
                buttons=["copy"],  # no "share": it would post the item outside the blind rating
                placeholder="(the answer opens the conversation)",
                elem_id="label-context",
            )
            with gr.Column(variant="panel"):
                answer = gr.Textbox(label="👉 Answer to judge", interactive=False, lines=2, max_lines=16,
                                    elem_id="label-answer")  # fmt: skip
            off = dict(interactive=False)  # until an answer is on screen
            with gr.Row(elem_id="label-verdicts"):
                buttons = {
                    "good": gr.Button("👍 Good", variant="primary", elem_id=BUTTON_IDS["good"], min_width=0, **off),
                    "bad": gr.Button("👎 Bad", variant="stop", elem_id=BUTTON_IDS["bad"], min_width=0, **off),
                }
            comment = gr.Textbox(label="Comment (optional)", placeholder="Why good or bad? Saved with the label.")
            with gr.Row():
                buttons["skip"] = gr.Button("Skip", elem_id=BUTTON_IDS["skip"], size="sm", min_width=0, **off)
                buttons["undo"] = gr.Button("Undo last label", elem_id=BUTTON_IDS["undo"], size="sm", min_width=0)
            # js_on_load also installs the shortcuts, so they work even if app.py does not pass
            # LABEL_SHORTCUTS_JS to launch().
            gr.HTML(KEYS_HINT, js_on_load=LABEL_LOAD_JS)
            with gr.Accordion("Which answers come first?", open=False):
                gr.Markdown(QUEUE_ORDER)
    return LabelView(progress, item_id, shown_for, persona_box, persona, chat, answer, comment, buttons, mine)


def undone_note(verdict_comment: tuple[str, str] | None) -> str:
    if verdict_comment is None:  # labelled elsewhere (another page, the chat's thumbs)
        return "Your last label was removed: that answer is back. "
    verdict, note = verdict_comment
    kept = " Your comment is back in the box." if note else ""
    return f"Undone: you had labelled this answer **{VERDICT_NAMES[verdict]}**.{kept} Judge it again. "
