"""Perplexity of the reference reply under a model version, teacher-forced after the prompt.

Per item the prompt is `engine.render(messages)` (persona, history, the template's
generation prompt) and the reply is the reference tokenised on its own: exactly the tokens a
model would have to generate after that prompt. Only those reply tokens are scored: not the
prompt, not padding, and not the end-of-turn token (`<|im_end|>`), so the number measures
the reply's words, is comparable across chat templates, and does not flatter a model merely
for having learned where turns end.
"""

from __future__ import annotations

import logging
import math
import statistics

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


def _encode(tokenizer, prompt: str, reference: str, window: int) -> tuple[list[int], int]:
    """Token ids of prompt + reply, fitted to `window`, and the number of reply tokens at the end.

    The chat template already holds the special tokens, so none are added. A prompt that is
    too long loses its oldest tokens; the reply stays whole unless it alone fills the window.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    if len(reply_ids) >= window:  # at least one prompt token must stay to predict the first reply token from
        log.warning(
            "a reference of %d tokens does not fit the %d-token window: scoring its start", len(reply_ids), window
        )
        reply_ids = reply_ids[: window - 1]
    room = window - len(reply_ids)
    if len(prompt_ids) > room:
        prompt_ids = prompt_ids[len(prompt_ids) - room :]
    return prompt_ids + reply_ids, len(reply_ids)


def _batch_nll(model, batch: list[tuple[list[int], int]], pad_id: int) -> list[tuple[float, int]]:
    """Summed NLL (nats) and count of the reply tokens of each sequence in `batch`.

    Left padding puts every reply at the end of its row, so logits are needed only for the
    last `longest reply + 1` positions (`logits_to_keep`): (B, K, V) instead of (B, T, V),
    which with a 49k vocabulary is most of the memory.
    """
    replies = [n for _, n in batch]
    if max(replies) == 0:
        return [(0.0, 0) for _ in batch]
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, _) in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    # Positions count real tokens only, so a left-padded row sees the positions it would alone.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(replies) + 1
    device = model.device
    logits = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=position_ids.to(device),
        logits_to_keep=keep,
        use_cache=False,
    ).logits  # (B, keep, V): predictions for positions width-keep+1 .. width (the last is unused)
    targets = input_ids[:, width - keep + 1 :].to(device)  # (B, keep-1)
    # Target column j is a reply token of row b when it lies in the row's last n_b columns;
    # only those (N of them) go through the softmax, padding and prompt never do.
    column = torch.arange(keep - 1, device=device)
    is_reply = column[None, :] >= (keep - 1 - torch.tensor(replies, device=device))[:, None]  # (B, keep-1)
    nll = F.cross_entropy(logits[:, :-1][is_reply].float(), targets[is_reply], reduction="none")  # (N,)
    rows = torch.arange(len(batch), device=device)[:, None].expand_as(is_reply)[is_reply]  # (N,)
    sums = torch.zeros(len(batch), device=device, dtype=nll.dtype).index_add_(0, rows, nll).tolist()
    return [(float(s), n) for s, n in zip(sums, replies, strict=True)]


def reference_nll(
    engine, conversations: list[Messages], references: list[str], batch_size: int = 8, progress: bool = False
) -> list[tuple[float, int]]:
    """Per item, (summed negative log-likelihood in nats, token count) of the reference reply
    after `engine.render(messages)`, under `engine.model`; same order as the input.

    Items are sorted by length so each batch pads little. An empty reference gives (0.0, 0).
    """
    if len(conversations) != len(references):
        raise ValueError(f"{len(conversations)} conversations but {len(references)} references")
    tokenizer = engine.tokenizer
    items = [
        _encode(tokenizer, engine.render(messages), reference, engine.context_window)
        for messages, reference in zip(conversations, references, strict=True)
    ]
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(items)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out either way
    batches = range(0, len(order), batch_size)
    with torch.inference_mode():
        for start in tqdm(batches, desc="reference perplexity", unit="batch", disable=not progress):
            idx = order[start : start + batch_size]
            for i, result in zip(idx, _batch_nll(engine.model, [items[i] for i in idx], pad_id), strict=True):
                results[i] = result
    return results


def perplexity(nll_counts: list[tuple[float, int]]) -> dict:
    """`perplexity`: exp(total NLL / total tokens), the corpus-level number (long replies weigh
    more); `perplexity_item_mean`: the mean over items of exp(item NLL / item tokens);
    `per_item`: those item values (NaN for an item without tokens). The two summary numbers
    are left out when no item has a token."""
    per_item = [math.exp(nll / n) if n else math.nan for nll, n in nll_counts]
    tokens = sum(n for _, n in nll_counts)
    if not tokens:
        return {"per_item": per_item}
    return {
        "perplexity": math.exp(sum(nll for nll, _ in nll_counts) / tokens),
        "perplexity_item_mean": statistics.fmean(p for p in per_item if not math.isnan(p)),
        "per_item": per_item,
    }
