"""Whole-conversation training sequences (`data.unit: conversation`).

A per-turn example re-encodes its persona and history for a ~10-token reply; here each
(conversation, speaker) is one sequence: that speaker's persona as the system message, the
whole dialogue, and the loss on every one of the speaker's replies (with the template's
end-of-turn tokens) and nothing else. The records are TRL's pre-tokenized form,
`{"input_ids", "completion_mask"}`: `SFTTrainer` builds the labels from the mask
(`completion_only_loss=True`), so the padded, padding-free and packed collators all apply.

A reply's masked span is exactly what a per-turn example's completion is: the tokens between
the chat rendered up to the reply's prompt (`add_generation_prompt=True`) and the chat rendered
through the reply. So the loss on a reply matches its per-turn example's when both see the
same history. Conversations longer than `max_seq_length` are split at turn boundaries: each
piece is the system message, then from the user turn before its first reply to its last reply.

    python -m training.sequences --config training/recipes/smollm2-135m-lora-cpu.yaml \
        --data.path ../shared/data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv
    # tokens per epoch of the train split, per turn vs whole conversations (tokenizer only)
"""

from __future__ import annotations

import logging
from collections import Counter

from core.conversation import Messages
from corpus.examples import Example
from corpus.mix import last_replies

log = logging.getLogger("training")


def conversation_chats(examples: list[Example]) -> list[Messages]:
    """One chat per (conversation, speaker) of `examples`, in first-seen order: its last reply's
    prompt and reply. The examples must carry their whole history (`max_history_turns=None`):
    every reply of a pair (`turn_examples`), or its last one once per draw (`load_training_data`).
    A pair drawn several times (a mix that repeats a source) appears as often, on average."""
    drawn: Counter[tuple[str, str]] = Counter()
    replies: dict[tuple[str, str], set[int]] = {}
    for example in examples:
        key = (example.conversation_id, example.speaker)
        drawn[key] += 1
        replies.setdefault(key, set()).add(example.turn_index)
    chats = []
    for example in last_replies(examples):
        key = (example.conversation_id, example.speaker)
        chats += [example.chat()] * max(1, round(drawn[key] / len(replies[key])))
    return chats


def _ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]  # the template holds the specials


def tokenize_chat(tokenizer, chat: Messages) -> tuple[list[int], list[tuple[int, int]]]:
    """(input_ids of the whole chat, [(start, end) of each assistant reply's supervised tokens]).

    Each span runs from the end of the rendered prompt (generation prompt included) to the end
    of the rendered chat through that reply: the reply and its end-of-turn tokens. The chat is
    tokenised once; a boundary is where a token of it ends at the prefix's last character."""
    replies = [i for i, message in enumerate(chat) if message["role"] == "assistant"]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    prefixes = []
    for i in replies:
        prefixes.append(tokenizer.apply_chat_template(chat[:i], tokenize=False, add_generation_prompt=True))
        prefixes.append(tokenizer.apply_chat_template(chat[: i + 1], tokenize=False))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens_through = {end: k + 1 for k, (_, end) in enumerate(encoded["offset_mapping"])}  # char end -> count
    bounds = []
    for prefix in prefixes:
        if not text.startswith(prefix) or (len(prefix) not in tokens_through and prefix):
            return _tokenize_prefixes(tokenizer, text, prefixes)  # no clean boundary: tokenise each prefix
        bounds.append(tokens_through.get(len(prefix), 0))
    return encoded["input_ids"], list(zip(bounds[::2], bounds[1::2], strict=True))


def _tokenize_prefixes(tokenizer, text: str, prefixes: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """The slow path: every prefix tokenised on its own, checked to be a prefix of the chat's tokens."""
    full, *bounds = _ids(tokenizer, [text, *prefixes])
    spans = []
    for prompt, through in zip(bounds[::2], bounds[1::2], strict=True):
        if full[: len(through)] != through or through[: len(prompt)] != prompt:
            raise ValueError("the chat template does not render a chat's prefix as a prefix of the chat")
        spans.append((len(prompt), len(through)))
    return full, spans


def _record(ids: list[int], spans: list[tuple[int, int]]) -> dict:
    mask = [0] * len(ids)
    for start, end in spans:
        mask[start:end] = [1] * (end - start)
    return {"input_ids": ids, "completion_mask": mask}


def _pieces(chat: Messages, tokenizer, max_seq_length: int) -> tuple[list[dict], int]:
    """(records of `chat` split at turn boundaries to fit, replies left out). Greedy: a piece
    takes as many (user turn, reply) steps as fit by the whole chat's token boundaries, then is
    rendered on its own and shrunk by a reply while it does not fit."""
    head = chat[:1] if chat and chat[0]["role"] == "system" else []
    body = chat[len(head) :]
    replies = [i for i, message in enumerate(body) if message["role"] == "assistant"]
    # Token counts through each message: an estimate (re-rendered pieces are checked below).
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    char_ends = [len(tokenizer.apply_chat_template(chat[: m + 1], tokenize=False)) for m in range(len(chat))]
    ends = [sum(1 for _, end in offsets if end <= char_end) for char_end in char_ends]
    head_len = ends[0] if head else 0

    def estimate(start: int, last: int) -> int:
        before = ends[len(head) + start - 1] if len(head) + start > 0 else 0
        return head_len + ends[len(head) + replies[last]] - before

    records, left_out, first = [], 0, 0  # `first`: index in `replies` of the next reply to place
    while first < len(replies):
        # The piece starts at the turn after the previous piece's last reply (a user turn, if any).
        start = replies[first - 1] + 1 if first else 0
        last = first
        while last + 1 < len(replies) and estimate(start, last + 1) <= max_seq_length:
            last += 1
        ids, spans = tokenize_chat(tokenizer, head + body[start : replies[last] + 1])
        while len(ids) > max_seq_length and last > first:
            last -= 1
            ids, spans = tokenize_chat(tokenizer, head + body[start : replies[last] + 1])
        if len(ids) <= max_seq_length:
            records.append(_record(ids, spans))
        else:  # even one reply with its prompting turn does not fit
            left_out += 1
        first = last + 1
    return records, left_out


def conversation_records(chats: list[Messages], tokenizer, max_seq_length: int) -> list[dict]:
    """TRL pre-tokenized records, `{"input_ids", "completion_mask"}`, one per chat or per piece
    of a chat longer than `max_seq_length` tokens."""
    records, split, left_out = [], 0, 0
    for chat in chats:
        ids, spans = tokenize_chat(tokenizer, chat)
        if len(ids) <= max_seq_length:
            records.append(_record(ids, spans))
            continue
        pieces, lost = _pieces(chat, tokenizer, max_seq_length)
        records += pieces
        split, left_out = split + 1, left_out + lost
    if split:
        log.info(
            "%d of %d conversations were split at turn boundaries to fit %d tokens (%d replies left out: "
            "too long even alone)",
            split,
            len(chats),
            max_seq_length,
            left_out,
        )
    return records


def epoch_tokens(records: list[dict]) -> dict:
    """Tokens one epoch of `records` runs through the model, and how many of them carry the loss."""
    tokens = sum(len(r["input_ids"]) for r in records)
    if records and "completion_mask" in records[0]:
        supervised = sum(sum(r["completion_mask"]) for r in records)
    else:
        supervised = sum(r["supervised"] for r in records)
    return {"sequences": len(records), "tokens": tokens, "supervised_tokens": supervised}


def _turn_token_records(examples: list[Example], tokenizer, max_seq_length: int) -> list[dict]:
    from training.records import to_records

    records = []
    for record in to_records(examples, tokenizer, max_seq_length):
        ids, spans = tokenize_chat(tokenizer, record["prompt"] + record["completion"])
        start, end = spans[-1]
        records.append({"input_ids": ids, "supervised": end - start})
    return records


def main(cfg) -> int:
    """Print the tokens per epoch of `cfg`'s train split as per-turn examples and as whole
    conversations (tokenizer only: no model is loaded)."""
    from transformers import AutoTokenizer

    from corpus.mix import load_training_data
    from engines.loading import resolve_model

    source, extra = resolve_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    rows = {}
    for unit in ("turn", "conversation"):
        data = cfg.data.model_copy(update={"unit": unit})
        train, _, _ = load_training_data(data, 1)
        if unit == "turn":
            records = _turn_token_records(train, tokenizer, cfg.model.max_seq_length)
        else:
            records = conversation_records(conversation_chats(train), tokenizer, cfg.model.max_seq_length)
        rows[unit] = epoch_tokens(records)
        print(f"{unit:<13} {rows[unit]}", flush=True)
    ratio = rows["turn"]["tokens"] / max(1, rows["conversation"]["tokens"])
    print(f"tokens per epoch, turn / conversation: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    import sys

    from core.cli import entry_point
    from training.config import TrainConfig

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(entry_point(TrainConfig, __doc__)(main)())
