"""Training records from examples: each chat rendered and counted through the tokenizer's chat
template, prompts fitted to `max_seq_length` with the product's one trimming rule, as TRL's
prompt-completion records (SFT) or the preference trainers' prompts (`training.preference`)."""

from __future__ import annotations

import logging

from core.conversation import Messages, fit
from corpus.examples import Example

log = logging.getLogger("training")


def chat_tokens(tokenizer, chats: list[Messages]) -> list[int]:
    """Tokens of each chat as TRL trains on it: rendered by the chat template (system preamble
    included, e.g. Llama 3.1's dates), tokenised without added special tokens (the template
    holds them): `len(apply_chat_template(prompt + completion, tokenize=True))`, batched."""
    if not chats:
        return []
    texts = [tokenizer.apply_chat_template(chat, tokenize=False) for chat in chats]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def fit_example(example: Example, tokenizer, max_seq_length: int) -> Messages | None:
    """The prompt of `example` cut by `core.conversation.fit` (whole oldest turns dropped,
    restarting on a user turn; system and last message kept) so prompt + reply fit
    `max_seq_length`, or None when even the shortest prompt does not."""
    reply = [{"role": "assistant", "content": example.target}]
    counts: dict[int, int] = {}  # by prompt length: fit's bisection and the final check share them

    def count(messages: Messages) -> int:
        if len(messages) not in counts:
            counts[len(messages)] = chat_tokens(tokenizer, [messages + reply])[0]
        return counts[len(messages)]

    prompt = fit(example.messages, count, max_seq_length)
    return prompt if count(prompt) <= max_seq_length else None


def to_records(examples: list[Example], tokenizer, max_seq_length: int) -> list[dict]:
    """TRL prompt-completion records: the loss falls on `completion` (the persona's reply) only.

    Prompt + reply are fitted to `max_seq_length` with the product's one trimming rule (the
    one chat uses), counted exactly through the chat template, so TRL never truncates and the
    reply is never cut. Examples that do not fit even as system + last message + reply are
    left out. Most fit whole: one batched tokenisation decides that, and only the rest are fitted.
    """
    totals = chat_tokens(tokenizer, [ex.chat() for ex in examples])
    records, trimmed, left_out = [], 0, 0
    for example, total in zip(examples, totals, strict=True):
        prompt = example.messages
        if total > max_seq_length:
            prompt = fit_example(example, tokenizer, max_seq_length)
            if prompt is None:
                left_out += 1
                continue
            trimmed += 1
        records.append({"prompt": list(prompt), "completion": [{"role": "assistant", "content": example.target}]})
    if trimmed or left_out:
        log.info(
            "%d of %d examples lost their oldest turns to fit %d tokens; %d did not fit even so and are left out",
            trimmed,
            len(examples),
            max_seq_length,
            left_out,
        )
    return records
