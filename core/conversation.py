"""A conversation as a list of messages, and the pure functions every chat surface uses.

A message is `{"role": "user" | "assistant" | "notice", "content": str}` (extra keys such as
a stored turn's `id` ride along untouched). A `notice` marks a persona switch in the
transcript; it is shown, never sent to the model, which sees only the turns after the last one
(`dialogue`). The conversation service (`chatbot.service`,
over a history in memory or in the store), training and eval all go through these functions, so
greeting, undo, retry, persona switch and history trimming behave the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from core.errors import MessageError, PersonaError
from core.persona import Persona, render_system_prompt

Messages = list[dict]

# Far above any context window we run (8k tokens is ~32k chars); it only stops a pasted
# file from being tokenised before the context-window check can say it is too long.
MAX_MESSAGE_CHARS = 100_000
DIALOGUE_ROLES = ("user", "assistant")


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


def opening(persona: Persona) -> Messages:
    """The history a new chat starts with: the persona's greeting, if it has one."""
    return [{"role": "assistant", "content": persona.greeting}] if persona.greeting else []


def notice(persona: Persona) -> dict:
    """The transcript marker of a switch to `persona` (never sent to the model)."""
    return {"role": "notice", "content": f"From here on the model speaks as {persona.name}, starting afresh."}


def last_notice(history: Messages) -> int | None:
    """Index of the last persona switch (notice) in `history`, or None."""
    return next((i for i in range(len(history) - 1, -1, -1) if history[i]["role"] == "notice"), None)


def dialogue(history: Messages) -> Messages:
    """The user/assistant turns the model sees, as plain `{"role", "content"}` dicts: those since
    the last persona switch (notice). The new persona starts afresh: the old persona's replies
    under the new system prompt kept it talking like the old one (swap probe: ~65 % of replies
    closer to the old persona), and the new prompt before them made the first reply prefill the
    whole conversation cold (3-8 s on 2 CPU cores) where the switched-to persona's cached system
    prompt now serves. Notices are never sent."""
    last = last_notice(history)
    start = 0 if last is None else last + 1
    return [{"role": m["role"], "content": m["content"]} for m in history[start:] if m["role"] in DIALOGUE_ROLES]


def build_messages(persona: Persona, history: Messages, user_message: str | None = None) -> Messages:
    """System prompt for `persona`, then the dialogue (since the last switch), then the new message.
    Rebuilt from scratch every turn, so after a switch nothing of the old persona remains."""
    messages = [{"role": "system", "content": render_system_prompt(persona)}, *dialogue(history)]
    if user_message is not None:
        messages.append({"role": "user", "content": user_message})
    return messages


def under(persona: Persona, messages: Messages) -> Messages:
    """`messages` (a system prompt first) with `persona`'s system prompt instead: the prompt as the
    persona switched away from would see it, the negative that steers a reply after a switch
    (`engines.engine.guided`)."""
    return [{"role": "system", "content": render_system_prompt(persona)}, *messages[1:]]


def has_user_turn(history: Messages) -> bool:
    return any(m["role"] == "user" for m in history)


def switched(history: Messages, persona: Persona) -> Messages:
    """The history after switching to `persona`: before anyone spoke, the new persona's
    opening; mid-chat, the transcript kept and a notice added (it speaks from the next turn, and
    the model sees only the turns after the notice: `dialogue`)."""
    return [*history, notice(persona)] if has_user_turn(history) else opening(persona)


def last_exchange(history: Messages) -> int | None:
    """Index of the last user message (the exchange undo and retry take back), or None."""
    return next((i for i in range(len(history) - 1, -1, -1) if history[i]["role"] == "user"), None)


def taken_back(history: Messages) -> list[int]:
    """Indices of the messages undo and retry take back: the last user message and the
    replies after it. Notices stay (a persona switch is not undone by undoing a reply)."""
    start = last_exchange(history)
    if start is None:
        return []
    return [i for i in range(start, len(history)) if history[i]["role"] in DIALOGUE_ROLES]


def undone(history: Messages) -> tuple[Messages, str | None]:
    """(the history without its last exchange, the user message that exchange began with).
    Nothing to undo (only a greeting, or nothing) gives the history unchanged and None."""
    gone = taken_back(history)
    if not gone:
        return list(history), None
    return [m for i, m in enumerate(history) if i not in gone], history[gone[0]]["content"]


def fit(messages: Messages, count_tokens: Callable[[Messages], int], budget: int) -> Messages:
    """`messages` with the oldest dialogue turns dropped until `count_tokens(...) <= budget`.

    The one trimming rule of the product: chat (`ChatEngine.fit_messages`), training records
    and reference perplexity all use it, so a model is trained on the contexts it is later
    asked in. The system message (the persona) and the last message always stay; after a drop
    the dialogue restarts on a user turn, as chat templates expect. When even that is over
    budget the shortest form is returned and the caller decides (the engine refuses the
    message, training leaves the example out).
    """
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system) :]
    if len(rest) <= 1 or count_tokens(messages) <= budget:  # the usual case: it all fits, one count
        return list(messages)
    # Where the kept dialogue may start, shortest drop first: the whole (over budget, above),
    # then each later user turn, then the last message alone. Fewer messages never count more
    # tokens, so the first start that fits is found by bisection (a few tokenisations instead
    # of one per turn).
    starts = [0, *(i for i in range(1, len(rest)) if rest[i]["role"] == "user")]
    if starts[-1] != len(rest) - 1:
        starts.append(len(rest) - 1)
    lo, hi = 1, len(starts) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(system + rest[starts[mid] :]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return system + rest[starts[lo] :]


def too_long(
    fitted: Messages, count_tokens: Callable[[Messages], int], budget: int, window: int
) -> MessageError | PersonaError:
    """The error for a prompt still over `budget` after `fit` (its shortest form, `fitted`):
    the persona's when its system prompt alone overflows (no message is short enough), else
    the message's, saying how much of the budget the persona takes."""
    reply = window - budget
    persona = fitted[0] if fitted and fitted[0]["role"] == "system" else None
    persona_tokens = count_tokens([persona]) if persona else 0
    if persona_tokens > budget:
        first_line = persona["content"].splitlines()[0]
        who = first_line if len(first_line) <= 70 else first_line[:67] + "..."
        return PersonaError(
            f'the persona is too long for this model: its system prompt ("{who}") alone takes '
            f"{persona_tokens} tokens, but only {budget} fit (context window {window} minus {reply} for the reply)",
            f"shorten the persona's facts and knowledge by at least {persona_tokens - budget} tokens, "
            "lower max_new_tokens, or use a model with a longer context window",
        )
    share = f", {persona_tokens} of them the persona's system prompt" if persona else ""
    return MessageError(
        f"the message is too long: the prompt needs {count_tokens(fitted)} tokens{share}, but only {budget} fit "
        f"(context window {window} minus {reply} for the reply)",
        "shorten the message, or lower max_new_tokens",
    )
