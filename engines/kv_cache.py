"""KV caches of recent prompts, so a chat's next turn only prefills what is new.

A chat prompt is the previous prompt, plus the reply just generated, plus one new user
message. Without reuse every turn runs the whole persona and history through the model
again (on 2 CPU cores and the default model: ~1.4 s before the first token of a 470-token
prompt). Keeping the KV cache that `generate` built (prompt and reply) and starting the next
turn from its longest matching token prefix leaves a few dozen tokens to prefill. Matching
is on token ids, so a reply that re-tokenises differently, a trimmed history or an edited
persona just reuse less; the result is the same model computation either way. This is what
vLLM's automatic prefix caching and llama.cpp's prompt cache do for their engines.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass
class _Entry:
    ids: torch.Tensor  # (T,) token ids the cache holds keys and values for
    cache: object  # a transformers DynamicCache of batch 1 covering `ids`


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the longest common prefix of two 1-D id tensors."""
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0, 0]) if len(differ) else n


def reusable(cache) -> bool:
    """Only plain full-attention layers can be cut back to any prefix: sliding-window,
    linear-attention and static layers drop or pre-size state, so they are not kept."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers = getattr(cache, "layers", None)
    return isinstance(cache, DynamicCache) and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class PrefixCache:
    """Least recently used KV caches, at most `max_tokens` tokens in all; thread-safe.

    `take` hands out a private copy (generation extends it in place), so two chats that share
    a persona prefix never write into each other's cache.
    """

    def __init__(self, max_tokens: int, min_tokens: int = 16):
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens  # shorter matches are not worth the copy
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_key = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return sum(len(e.ids) for e in self._entries.values())

    def take(self, ids: torch.Tensor, copy_cache: bool = True) -> tuple[object | None, int]:
        """(a copy of the cache of the longest stored prefix of `ids`, its length), or (None, 0).

        At least one token of `ids` is left out of the copy: the model must read one to predict
        the next. `copy_cache=False`: the stored cache itself, uncropped (it may hold more than
        `length` tokens), for a caller that only reads its first `length` (stored caches are
        never changed, so a reader is safe even if the entry is dropped meanwhile).
        """
        ids = ids.cpu()
        with self._lock:
            best, length = None, 0
            for key, entry in self._entries.items():
                n = common_prefix(entry.ids, ids)
                if n > length:
                    best, length = key, n
            length = min(length, len(ids) - 1)
            if best is None or length < self.min_tokens:
                return None, 0
            self._entries.move_to_end(best)
            entry = self._entries[best]
            if not copy_cache:
                return entry.cache, length
            cache = copy.deepcopy(entry.cache)  # (under the lock: `put` may drop the entry)
        if cache.get_seq_length() > length:
            cache.crop(length - cache.get_seq_length())  # a negative count: tokens to remove
        return cache, length

    def put(self, ids: torch.Tensor, cache) -> None:
        """Keep `cache`, which holds keys and values for the first `cache.get_seq_length()` of `ids`."""
        if self.max_tokens <= 0 or not reusable(cache):
            return
        ids = ids.cpu()[: cache.get_seq_length()].clone()
        if len(ids) < self.min_tokens or len(ids) > self.max_tokens:
            return
        with self._lock:
            # An entry this one extends is redundant: the new one serves every prompt it served.
            for key in [k for k, e in self._entries.items() if common_prefix(e.ids, ids) == len(e.ids)]:
                del self._entries[key]
            self._entries[self._next_key] = _Entry(ids, cache)
            self._next_key += 1
            while self.tokens > self.max_tokens:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
