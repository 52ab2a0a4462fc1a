"""Perplexity of the reference reply under a model version, teacher-forced after the prompt.

Per item the prompt is `engine.render(messages)` (persona, history, the template's
generation prompt) and the reply is the reference tokenised on its own: exactly the tokens a
model would have to generate after that prompt. A prompt too long for the context window with
the reply's tokens reserved is trimmed by the product's one rule, `core.conversation.fit`
(whole oldest turns dropped, as in chat and in training); an item that does not fit even with
only the persona and the last message is left out (scored as no tokens).

Only the reply tokens are scored: not the prompt, not padding, and not the end-of-turn token
(`<|im_end|>`), so the number measures the reply's words, is comparable across chat
templates, and does not flatter a model merely for having learned where turns end.

Turns of one conversation share their prefix: a turn's prompt + reply tokens are usually the
exact start of a later turn's prompt, and a causal LM gives a prefix the same logits alone or
inside the longer sequence. So items whose tokens are an exact prefix of another item's are
scored together from one forward over the longest of them; all other items are batched.
"""

from __future__ import annotations

import logging
import math
import statistics

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from core.conversation import fit

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]

# Kept positions per shared forward: (1024, V) fp32 logits, ~200 MB at a 49k vocabulary. A
# conversation's turns of one speaker need far fewer (SPC: ~10 replies of ~15 tokens).
GROUP_POSITIONS = 1024

Item = tuple[list[int], int]  # (prompt + reply token ids, number of reply tokens at the end)


def _encode(engine, messages: Messages, reference: str) -> Item | None:
    """Token ids of prompt + reply and the number of reply tokens at the end, or None when the
    reply does not fit the context window after even the shortest prompt.

    The chat template already holds the special tokens, so none are added. A prompt that is
    too long loses whole oldest turns (`fit`, with the reply's tokens reserved), never part of one.
    """
    tokenizer = engine.tokenizer
    reply_ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    budget = engine.context_window - len(reply_ids)  # tokens left for the prompt
    prompt_ids = tokenizer(engine.render(messages), add_special_tokens=False)["input_ids"]
    if len(prompt_ids) > budget:
        fitted = fit(messages, engine.count_tokens, budget)
        prompt_ids = tokenizer(engine.render(fitted), add_special_tokens=False)["input_ids"]
        if len(prompt_ids) > budget:
            return None
    return prompt_ids + reply_ids, len(reply_ids)


def _batch_nll(model, batch: list[Item], pad_id: int) -> list[tuple[float, int]]:
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


def prefix_groups(items: list[Item], max_positions: int = GROUP_POSITIONS) -> list[list[int]]:
    """Indices of `items` grouped so that each member's ids are an exact prefix of the group's
    first (longest) member's ids; items with an empty reply are left out.

    In lexicographic order every sequence that extends A follows A directly, so one pass from
    the end over the sorted ids finds each item's group with a single prefix check: no hash
    buckets to tune, and thousands of items sharing one system prompt cost only list
    comparisons. A group stops taking members at `max_positions` reply tokens (bounds its logits).
    """
    order = sorted((i for i, (_, n) in enumerate(items) if n), key=lambda i: items[i][0])
    groups: list[list[int]] = []
    positions = 0
    for pos in range(len(order) - 1, -1, -1):
        ids, n = items[order[pos]]
        after = items[order[pos + 1]][0] if pos + 1 < len(order) else None
        if after is not None and after[: len(ids)] == ids and positions + n <= max_positions:
            groups[-1].append(order[pos])
            positions += n
        else:
            groups.append([order[pos]])
            positions = n
    return groups


def _group_nll(model, items: list[Item], members: list[int]) -> list[tuple[float, int]]:
    """Summed NLL (nats) and count of each member's reply tokens from one forward over the
    longest member's ids (`members[0]`), of which every member's ids are a prefix.

    The logit at position p predicts token p + 1, so a member of length L with n reply tokens
    needs positions L-n-1 .. L-2; only the union of those goes through the LM head
    (`logits_to_keep` as a 1-D tensor of positions, which a PeftModel passes on too).
    """
    device = model.device
    sequence = torch.tensor(items[members[0]][0], device=device)  # (T,)
    spans = [(len(ids) - n - 1, n) for ids, n in (items[i] for i in members)]  # (first position, count)
    positions = sorted({start + k for start, n in spans for k in range(n)})
    keep = torch.tensor(positions, device=device)  # (K,)
    logits = model(input_ids=sequence[None], logits_to_keep=keep, use_cache=False).logits[0]  # (K, V)
    nll = F.cross_entropy(logits.float(), sequence[keep + 1], reduction="none")  # (K,)
    # A member's reply positions are consecutive, so its losses are a consecutive run of `nll`.
    index = {p: k for k, p in enumerate(positions)}
    return [(float(nll[index[start] : index[start] + n].sum()), n) for start, n in spans]


def reference_nll(
    engine, conversations: list[Messages], references: list[str], batch_size: int = 8, progress: bool = False
) -> list[tuple[float, int]]:
    """Per item, (summed negative log-likelihood in nats, token count) of the reference reply
    after `engine.render(messages)` (fitted to the window by `fit`), under `engine.model`; same
    order as the input.

    Items that are exact token prefixes of a longer item share its forward (`prefix_groups`);
    the rest are sorted by length and batched so each batch pads little. An empty reference,
    or an item that does not fit the window, gives (0.0, 0).
    """
    if len(conversations) != len(references):
        raise ValueError(f"{len(conversations)} conversations but {len(references)} references")
    tokenizer = engine.tokenizer
    encoded = [_encode(engine, m, r) for m, r in zip(conversations, references, strict=True)]
    if left_out := sum(item is None for item in encoded):
        log.warning(
            "reference perplexity: %d of %d items do not fit the %d-token window even with only the persona and "
            "the last message: left out (scored as no tokens)",
            left_out,
            len(encoded),
            engine.context_window,
        )
    items = [([], 0) if item is None else item for item in encoded]  # no reply tokens: in no group or batch
    groups = prefix_groups(items)
    shared = [g for g in groups if len(g) > 1]
    alone = sorted((g[0] for g in groups if len(g) == 1), key=lambda i: len(items[i][0]))
    batches = [alone[start : start + batch_size] for start in range(0, len(alone), batch_size)]
    forwards = len(shared) + len(batches)
    n_shared = sum(map(len, shared))
    log.info(
        "reference perplexity: %d items, %d forwards (%d items share %d)", len(items), forwards, n_shared, len(shared)
    )
    results: list[tuple[float, int]] = [(0.0, 0)] * len(items)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out either way
    bar = tqdm(total=forwards, desc="reference perplexity", unit="forward", disable=not progress)
    with torch.inference_mode(), bar:
        for members in shared:
            for i, result in zip(members, _group_nll(engine.model, items, members), strict=True):
                results[i] = result
            bar.update()
        for idx in batches:
            for i, result in zip(idx, _batch_nll(engine.model, [items[i] for i in idx], pad_id), strict=True):
                results[i] = result
            bar.update()
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
