"""Compare tab: two model versions answer the same message, shown blind as "A" and "B", and the
rater votes A better / B better / tie / both bad. The names are shown once the vote is saved.

A round: both versions answer the same persona and messages, each in a new stored conversation
(source "compare") seeded with the shared history, so the two replies answer exactly the same
context (a preference pair). Which version is A is drawn at random each round and kept in a
`gr.State`, which stays on the server: no page element and no endpoint says it before the vote.
The next message continues from the preferred reply (A's after a tie, "both bad" or no vote).
A vote is stored like a label: one transaction, on disk when the button returns.

API (`gradio_client`, by name):

    /compare(message, persona, version_a="base", version_b=None, conversation_a=None,
             conversation_b=None) -> (conversation_a, reply_a, conversation_b, reply_b), streamed;
             by version (not blind): version_b None is the newest trained version
    /vote(conversation_a, conversation_b, vote, rater="") -> "saved: a (A = base, B = v1) by rita"
             the last replies of the two conversations, as the caller calls them A and B;
             vote "a" | "b" | "tie" | "both_bad". A script that wants blind votes shuffles itself.
"""

# No `from __future__ import annotations`: `gr.api` reads the endpoint types from the live
# annotations.

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import gradio as gr

from core.conversation import check_message, dialogue, opening
from core.errors import MessageError, PersonaStudioError
from eval.blind import mask_messages
from store import NewPreference, Turn
from ui import conversations
from ui.chat_api import GENERATION, TAKING
from ui.common import (
    BUSY_HINT,
    claim,
    empties_box_js,
    escape_html,
    for_chatbot,
    keeps_content,
    new_page,
    release,
    shortcuts_js,
    shows_errors,
    style_js,
    toast,
)
from ui.context import AppContext
from ui.label import LABEL_QUEUE
from ui.leaderboard import pick_versions
from ui.raters import rater_for

CompareResult = tuple[int | None, str, int | None, str]  # conversation_a, reply_a, conversation_b, reply_b

VOTE_TEXT = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
VOTE_IDS = {vote: f"compare-vote-{vote}" for vote in VOTE_TEXT}
# Key -> vote. The Label tab's keys (g, b, s, u) act only while its buttons are on screen.
SHORTCUTS = {"a": "a", "1": "a", "b": "b", "2": "b", "t": "tie", "3": "tie", "n": "both_bad", "4": "both_bad"}
KEYS_HINT = "Keys: A · B · T tie · N both bad (or 1 2 3 4)"
ASK = "Send a message: both versions answer it, shown as **A** and **B** in random order."


def compare_steps(
    ctx: AppContext, message: str, key: str, versions: tuple[str, str], conversation_ids: tuple, seed=None
) -> Iterator[tuple[int, conversations.Step]]:
    """(side, step) of both exchanges as they stream; `seed` starts new conversations from it."""
    persona = ctx.persona(key)
    streams = [
        conversations.exchange(ctx, message, key, persona, version, ctx.settings, conv, seed=seed, source="compare")
        for version, conv in zip(versions, conversation_ids, strict=True)
    ]
    yield from conversations.merge(streams)


def last_reply(ctx: AppContext, conversation_id: int) -> tuple[Turn, list[dict]]:
    """The conversation's last reply and the messages before it ({"role", "content"})."""
    turns = [t for t in ctx.store.conversation(int(conversation_id)) if t.withdrawn is None]
    if not turns or turns[-1].role != "assistant" or turns[-1].model_version is None:
        raise MessageError(
            f"conversation {conversation_id} does not end with a model's reply",
            "vote once both versions have answered (/compare returns both conversation ids)",
        )
    return turns[-1], dialogue([{"role": t.role, "content": t.content} for t in turns[:-1]])


def record_vote(ctx: AppContext, conversation_a: int, conversation_b: int, vote: str, rater: str) -> NewPreference:
    """Store the rater's vote on the last replies of the two conversations (A and B as given);
    both must answer the same messages under the same persona."""
    if int(conversation_a) == int(conversation_b):
        raise MessageError("A and B are the same conversation", "pass the two conversation ids /compare returned")
    (a, context), (b, context_b) = last_reply(ctx, conversation_a), last_reply(ctx, conversation_b)
    if context != context_b or a.persona != b.persona:
        raise MessageError(
            f"the last replies of conversations {conversation_a} and {conversation_b} answer different messages",
            "vote on two replies to the same messages: the first /compare call of two new conversations",
        )
    preference = NewPreference(
        persona_name=a.persona_name, persona=a.persona or {"name": a.persona_name}, context=context,
        reply_a=a.content, reply_b=b.content, version_a=a.model_version, version_b=b.model_version, vote=vote,
        rater=rater, conversation_a=int(conversation_a), conversation_b=int(conversation_b),
    )  # fmt: skip
    ctx.store.add_preference(preference)
    return preference


@dataclass
class Round:
    """A pair on screen: the stored conversations as A and B, and the vote once saved."""

    conversations: tuple[int, int]
    vote: str | None = None

    def history(self, ctx: AppContext) -> list[dict]:
        """What the next round starts from: the preferred side's conversation (A's by default)."""
        preferred = self.conversations[1 if self.vote == "b" else 0]
        return dialogue(conversations.stored_messages(ctx.store.conversation(preferred)))


def blind(messages: list[dict]) -> list[dict]:
    """Messages for a blind pane: no stored turn ids (nothing on the page to look a reply up by)."""
    return for_chatbot([{k: v for k, v in m.items() if k != "id"} for m in messages])


def sendable() -> dict:
    """The Send button once the round is saved (it says "Answering…" while both stream)."""
    return gr.update(value="Send to both", interactive=True)


ONLY_BASE = "Only `base` exists so far: train a version (`python -m training.train`) to compare against it."
# A phone: A and B side by side (both replies on screen at once), each a little shorter.
COMPARE_CSS = """
@media (max-width: 640px) {
  #compare-panes { flex-wrap: nowrap !important; gap: 6px; }
  #compare-panes > * { min-width: 0 !important; }
  #compare-a, #compare-b { height: 46vh !important; }
}
"""


def build_compare_tab(ctx: AppContext, rater: gr.Textbox) -> None:
    personas, _ = ctx.personas()
    first = next(iter(personas), None)
    versions = ctx.pool.versions()
    gr.HTML("", js_on_load=f"({style_js('compare', COMPARE_CSS)})();", padding=False)
    with gr.Row():
        persona = gr.Dropdown(ctx.persona_choices(), value=first, label="Persona", scale=2, min_width=300,
                              allow_custom_value=True)  # fmt: skip
        version_1 = gr.Dropdown(versions, value="base", label="Version 1", scale=1, allow_custom_value=True)
        version_2 = gr.Dropdown(versions, value=ctx.pool.newest(), label="Version 2", scale=1,
                                allow_custom_value=True)  # fmt: skip
    only_base = gr.Markdown(ONLY_BASE, visible=len(versions) == 1, elem_id="compare-only-base")
    status = gr.Markdown(ASK, elem_id="compare-status")
    start = blind(opening(personas[first])) if first else []
    # No "share" button: it would post a pair outside the blind vote.
    panes_args = dict(height=420, buttons=["copy"], min_width=120)
    with gr.Row(elem_id="compare-panes"):
        chat_a = gr.Chatbot(start, label="A", elem_id="compare-a", **panes_args)
        chat_b = gr.Chatbot(start, label="B", elem_id="compare-b", **panes_args)
    with gr.Row():
        buttons = {
            vote: gr.Button(
                text,
                elem_id=VOTE_IDS[vote],
                interactive=False,
                variant="primary" if vote in ("a", "b") else "secondary",
                min_width=80,
            )
            for vote, text in VOTE_TEXT.items()
        }
    gr.HTML(KEYS_HINT, js_on_load=f"({shortcuts_js('compare', {k: VOTE_IDS[v] for k, v in SHORTCUTS.items()})})();")
    with gr.Row():
        message = gr.Textbox(placeholder="The same message goes to both; press Enter", show_label=False, scale=6,
                             elem_id="compare-input")  # fmt: skip
        send = gr.Button("Send to both", scale=1, min_width=80, elem_id="compare-send")
    with gr.Row():
        clear = gr.Button("New conversation")
        pick = gr.Button("Pick the pair for me", elem_id="compare-pick")  # eval.pairing: least certain, least voted
    pair = gr.State(None)  # the Round on screen; server-side only, so A/B stays blind
    page = gr.State(new_page())  # this page's running round (ui.common.new_page)
    pending = gr.State(None)  # the message accepted to send next: its change runs both versions
    claiming = threading.Lock()

    def panes(a: list[dict], b: list[dict]) -> tuple:  # blind: labelled A and B only
        return gr.update(value=a, label="A"), gr.update(value=b, label="B")

    def voting(enabled: bool) -> list:
        return [gr.update(interactive=enabled) for _ in buttons]

    def take(text, key, page):
        """Accept the message at once (the page emptied the box already, `empties_box_js`) or
        refuse it with the reason and the text back in the box, e.g. while a round streams."""
        try:
            message = check_message(text)
            ctx.persona(key)  # a persona removed since the page loaded: refused here
        except PersonaStudioError as err:
            toast(err)
            return text, gr.skip(), gr.skip()
        if not claim(page):
            gr.Warning(BUSY_HINT, title="Not sent yet")
            return text, gr.skip(), gr.skip()
        page["sent"] += 1
        return gr.skip(), {"text": message, "n": page["sent"]}, gr.update(value="Answering…", interactive=False)

    def compare(sent, key, v1, v2, shown: Round | None, page):
        try:
            order = (v1, v2) if random.random() < 0.5 else (v2, v1)  # which version is A, this round
            seed = shown.history(ctx) if shown else None
            names = [*ctx.pool.versions(), v1, v2]  # no reply may say which version wrote it (eval/blind.py)
            before = blind(mask_messages(seed if seed is not None else opening(ctx.persona(key)), names))
            mine = {"role": "user", "content": escape_html(sent["text"]), "metadata": None}
            messages, ids = [[*before, mine], [*before, mine]], [None, None]
            yield *panes(*messages), shown, "Both versions are answering…", *voting(False), gr.skip()
            # The round on screen stays until both replies are saved: if one fails, the next
            # message still continues from it.
            for side, step in compare_steps(ctx, sent["text"], key, order, (None, None), seed):
                messages[side], ids[side] = blind(mask_messages(step.messages, names)), step.conversation_id
                yield *panes(*messages), shown, "Both versions are answering…", *voting(False), gr.skip()
            ask = "Which reply is better? Vote below; the versions' names are shown after your vote."
            release(page)  # before the last update reaches the page: a send right after it is taken
            yield *panes(*messages), Round(tuple(ids)), ask, *voting(True), sendable()
        except (PersonaStudioError, gr.Error) as err:
            release(page)
            toast(err, f"Not sent: “{sent['text']}”. ")
            was = (
                blind(mask_messages(shown.history(ctx), ctx.pool.versions()))
                if shown
                else blind(opening(ctx.persona(key)))
            )
            yield *panes(was, was), shown, ASK, *voting(shown is not None and shown.vote is None), sendable()
        finally:
            release(page)

    def on_vote(vote: str):
        def handler(shown: Round | None, typed: str, request: gr.Request, profile: gr.OAuthProfile | None):
            # Two vote keys pressed together run at once on the same Round (a State value is
            # the session's object, not a copy): the first claims the pair, the second is refused.
            who = rater_for(ctx, typed, profile, request)  # before the claim: a refusal leaves the pair open
            with claiming:
                if shown is None or shown.vote is not None:
                    raise MessageError("there is no new pair of replies to vote on", "send a message first")
                shown.vote = vote
            try:
                saved = record_vote(ctx, *shown.conversations, vote, who)
            except BaseException:
                shown.vote = None  # not saved: the rater may vote again
                raise
            names = (saved.version_a, saved.version_b)
            done = f"Saved: **{VOTE_TEXT[vote]}**. A was `{names[0]}`, B was `{names[1]}`. Send the next message."
            current = [gr.update(label=f"{side} — {name}") for side, name in zip("AB", names, strict=True)]
            return *current, shown, done, *voting(False)

        return keeps_content(handler)  # a refusal (no rater name) keeps both replies on screen

    @keeps_content
    def reset(key):
        start = blind(opening(ctx.persona(key)))
        return *panes(start, start), "", None, ASK, *voting(False)

    def listed():
        """Versions and persona files re-read (on page load, when a picker opens): a version
        trained or a persona file added while the app runs appears, a removed file goes."""
        names = ctx.pool.versions()
        return gr.update(choices=names), gr.update(choices=names), gr.update(visible=len(names) == 1)

    def on_load():
        """A page opens on the persona files and versions there are now (a fresh round)."""
        names, choices = ctx.pool.versions(), ctx.persona_choices()
        keys = [k for _, k in choices]
        return (gr.update(choices=choices, value=keys[0] if keys else None), gr.update(choices=names),
                gr.update(choices=names, value=ctx.pool.newest()), gr.update(visible=len(names) == 1))  # fmt: skip

    instant = dict(api_name=False, show_progress="hidden", **TAKING)
    for picker in (version_1, version_2):
        picker.focus(listed, None, [version_1, version_2, only_base], **instant)
    persona.focus(lambda: gr.update(choices=ctx.persona_choices()), None, persona, **instant)
    gr.on(None, on_load, None, [persona, version_1, version_2, only_base], **instant)  # on page load
    outputs = [chat_a, chat_b, pair, status, *buttons.values()]
    for trigger in (message.submit, send.click):
        trigger(take, [message, persona, page], [message, pending, send],
                js=empties_box_js("compare-input", "compare-send"), **instant)  # fmt: skip
    pending.change(compare, [pending, persona, version_1, version_2, pair, page], [*outputs, send], api_name=False,
                   concurrency_id=GENERATION, trigger_mode="multiple")  # fmt: skip
    for vote, button in buttons.items():
        button.click(on_vote(vote), [pair, rater], outputs, api_visibility="private", **LABEL_QUEUE)
    reset_outputs = [chat_a, chat_b, message, pair, status, *buttons.values()]
    clear.click(reset, persona, reset_outputs, api_name=False)
    persona.change(reset, persona, reset_outputs, api_name=False)
    pick.click(pick_versions(ctx), persona, [version_1, version_2], api_name=False).then(
        reset, persona, reset_outputs, api_name=False
    )
    _add_api(ctx)


def _add_api(ctx: AppContext) -> None:
    def compare_api(
        message: str,
        persona: str,
        version_a: str = "base",
        version_b: str | None = None,
        conversation_a: int | None = None,
        conversation_b: int | None = None,
    ) -> Iterator[CompareResult]:
        """The message to two versions under one persona, streamed: (conversation_a, reply_a,
        conversation_b, reply_b). Pass the conversation ids back to continue both."""
        result = [conversation_a, "", conversation_b, ""]
        versions = (version_a, version_b or ctx.pool.newest())
        for side, step in compare_steps(ctx, message, persona, versions, (conversation_a, conversation_b)):
            result[2 * side : 2 * side + 2] = [step.conversation_id, step.reply]
            yield tuple(result)

    def vote(
        conversation_a: int,
        conversation_b: int,
        vote: Literal["a", "b", "tie", "both_bad"],
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        rater: str = "",
    ) -> str:
        """Vote on the last replies of two conversations (from one /compare call) as A and B:
        "a" (A is better), "b", "tie" or "both_bad". On disk when this returns."""
        saved = record_vote(ctx, conversation_a, conversation_b, vote, rater_for(ctx, rater, profile, request))
        return f"saved: {saved.vote} (A = {saved.version_a}, B = {saved.version_b}) by {saved.rater}"

    gr.api(shows_errors(compare_api), api_name="compare", concurrency_id=GENERATION)
    gr.api(shows_errors(vote), api_name="vote", **LABEL_QUEUE)
