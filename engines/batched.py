"""Many users in one process: the decoding steps of concurrent chats run as one batch.

    python app.py --batching auto
    python -m chatbot.chat --batching auto

Decoding a small model on CPU is memory-bound: one forward for 16 chats' next tokens costs little
more than for one (the weights are read once either way). `BatchedEngine` is a `TransformersEngine`
whose chats all go through one scheduler thread that

1. **admits** new chats: each starts from its prefix-cache entry (`engines.kv_cache`; mid-chat that
   is the persona and the whole history, so only the new message is prefilled); newcomers are
   prefilled together, as one left-padded forward, and sample their first token;
2. **merges** them into the running batch: one KV cache of all chats, left-padded to a common length
   (an attention mask hides the padding; each chat keeps its own positions);
3. **decodes** one token for every chat per forward, samples each with its own settings, streams it,
   and drops a chat that finished (or whose reader went away: the Stop button) from the batch; its
   KV cache goes back to the prefix cache for the chat's next turn.

Why not transformers' own `ContinuousBatchingManager` (paged attention, which this module used
before): it has no prefix cache, so every mid-chat message prefills its persona and history again
(hundreds of tokens), which for 16 users at once made first tokens several times slower and
aggregate throughput lower than one chat at a time (benchmarks/README.md, "Many users at once"). The
model's own forward, its `DynamicCache` and transformers' logits processors do the work here; this
module only decides which rows go into which forward.

Per request, as `generate` does them: temperature, top_p, top_k, repetition_penalty (over prompt
and reply), max_new_tokens, and `seed` (each request samples from its own `torch.Generator`).
Greedy replies equal the direct path's up to floating-point ties (a padded batch sums in another
order). Batched eval (`generate`) keeps the direct path: it batches already.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Iterator

import torch
from transformers import LogitsProcessorList
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from core.conversation import Messages
from core.errors import GenerationError
from engines.config import GenerationSettings
from engines.engine import TokenStreamer, TransformersEngine, guided, out_of_memory
from engines.kv_cache import reusable
from engines.priority import CHAT_NICE, lower_priority

log = logging.getLogger(__name__)

SPARE_TOKENS = 64  # room the batch cache keeps for coming tokens, so a step writes in place
PREFILL_TOKENS = 256  # most tokens (rows x padded length) in one prefill forward
TRIM_TOKENS = 32  # padding all rows share at the left is cut once it is this wide
IDLE_S = 60.0  # seconds without a chat after which the scheduler thread ends (the next chat starts one)
# Token slots of the batch's KV cache (rows x the longest row, padding included): 32 mid-chat rows of
# ~600 tokens use 19k. 65,536 is ~3 GB of fp32 KV for SmolLM2-135M (~8 GB bf16 for Llama-3-8B);
# one 8k-token chat beside 31 short ones would otherwise pad all 32 to 8k (~12 GB).
BATCH_TOKENS = 65_536


class _Done:
    """Put on a request's queue after its last token."""


class _Request:
    """One chat reply being generated: its tokens so far, its sampling, its output queue."""

    def __init__(self, ids: list[int], settings: GenerationSettings, max_new_tokens: int, eos: set[int]):
        self.ids = list(ids)  # prompt, then each sampled token
        self.prompt_tokens = len(ids)
        self.max_new_tokens = max_new_tokens
        self.eos = eos
        self.greedy = settings.temperature == 0
        processors = [RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)]
        if not self.greedy:  # generate's order: temperature, top-k, top-p
            processors.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_k:
                processors.append(TopKLogitsWarper(settings.top_k))
            if settings.top_p < 1.0:
                processors.append(TopPLogitsWarper(settings.top_p))
        self.processors = LogitsProcessorList(processors)
        self.generator = None
        if settings.seed is not None:
            self.generator = torch.Generator().manual_seed(settings.seed)
        # Rows with equal settings are sampled together; a seeded row alone, from its own generator.
        self.sampling = None if self.generator else settings.model_dump(exclude={"max_new_tokens", "seed"})
        self.out: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()  # the reader went away
        self.cache = None  # prefix-cache copy until admitted
        self.reused = 0

    def done(self, token: int) -> bool:
        return token in self.eos or len(self.ids) - self.prompt_tokens >= self.max_new_tokens or self.cancelled.is_set()


class _GrowingLayer(DynamicLayer):
    """A `DynamicLayer` over a buffer with spare room: a decoding step writes its token in place
    instead of `torch.cat` copying the whole batch's keys and values (16 chats x 600 tokens: ~440 MB
    per step for SmolLM2-135M, as much memory traffic as the forward itself)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int | None = None):
        """Over a copy of `keys` and `values`; or, with `filled`, over these buffers themselves, of which
        the first `filled` positions hold tokens (the rest is room)."""
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        if filled is None:
            self._fill(keys, values)
        else:
            self.kbuf, self.vbuf, self.n = keys, values, filled
            self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]

    def _fill(self, keys: torch.Tensor, values: torch.Tensor, coming: int = 0) -> None:
        b, h, t, d = keys.shape
        room = t + max(_spare(t), coming)
        self.kbuf = keys.new_empty(b, h, room, d)
        self.vbuf = values.new_empty(b, values.shape[1], room, values.shape[-1])
        self.kbuf[:, :, :t], self.vbuf[:, :, :t] = keys, values
        self.n = t
        self.keys, self.values = self.kbuf[:, :, :t], self.vbuf[:, :, :t]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        t = key_states.shape[-2]
        if self.n + t > self.kbuf.shape[-2]:
            self._fill(self.keys, self.values, t)
        self.kbuf[:, :, self.n : self.n + t] = key_states
        self.vbuf[:, :, self.n : self.n + t] = value_states
        self.n += t
        self.keys, self.values = self.kbuf[:, :, : self.n], self.vbuf[:, :, : self.n]
        return self.keys, self.values


def batchable(model) -> bool:
    """Whether this module can batch `model`: every layer keeps plain full-attention keys and values
    (a sliding window or linear attention keeps other state, which rows cannot be padded into)."""
    try:
        return reusable(DynamicCache(config=model.config))
    except Exception:  # a config transformers cannot build a cache from: not one to batch
        return False


def _spare(tokens: int) -> int:
    """Positions a cache of `tokens` keeps free for the tokens to come (a quarter, at least SPARE_TOKENS)."""
    return max(SPARE_TOKENS, tokens // 4)


def _cache(layers: list[tuple[torch.Tensor, torch.Tensor]], filled: int | None = None) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = [_GrowingLayer(k, v, filled) for k, v in layers]
    return cache


def _right_aligned(parts: list[torch.Tensor | None], length: int, room: int) -> torch.Tensor:
    """One (B, H, length + room, D) buffer holding `parts` ((b, H, t, D) each, t <= length; None: one
    row of nothing) one under the other, each ending at position `length`, zeros before it. One copy
    of each part: building it with `torch.cat` and padding copied a batch's keys and values 2-3 times."""
    like = next(p for p in parts if p is not None)
    rows = sum(1 if p is None else p.shape[0] for p in parts)
    buf = like.new_empty(rows, like.shape[1], length + room, like.shape[-1])
    row = 0
    for part in parts:
        b, t = (1, 0) if part is None else (part.shape[0], part.shape[-2])
        buf[row : row + b, :, : length - t].zero_()  # padding: zeros, never stale memory (NaN * 0 = NaN)
        if t:
            buf[row : row + b, :, length - t : length] = part
        row += b
    return buf


def _kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


class _Batch:
    """The running rows: their requests, one left-padded KV cache, and its attention mask."""

    def __init__(self):
        self.rows: list[_Request] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, T) long: 1 where a row has a real token

    def add(self, rows: list[_Request], cache, mask: torch.Tensor) -> None:
        """Append rows whose own cache and mask (same layout) came from a prefill."""
        if not rows:
            return
        if not self.rows:  # a prefill from cached rows made its cache with room to grow: kept as it is
            grows = all(isinstance(layer, _GrowingLayer) for layer in cache.layers)
            self.rows, self.cache, self.mask = list(rows), cache if grows else _cache(_kv(cache)), mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        a, b = width - self.mask.shape[1], width - mask.shape[1]
        room = _spare(width)
        layers = [
            (_right_aligned([k1, k2], width, room), _right_aligned([v1, v2], width, room))
            for (k1, v1), (k2, v2) in zip(_kv(self.cache), _kv(cache), strict=True)
        ]
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (a, 0)), torch.nn.functional.pad(mask, (b, 0))])
        self.rows += rows
        self.cache = _cache(layers, filled=width)

    def remove(self, gone: list[int]) -> list[tuple[_Request, DynamicCache]]:
        """Drop rows `gone`; returns each with a batch-1 cache of its real tokens (for the prefix cache)."""
        if not gone:
            return []
        leaving = []
        for i in gone:
            start = int(self.mask.shape[1] - self.mask[i].sum())  # rows are right-aligned: padding first
            own = [(k[i : i + 1, :, start:].clone(), v[i : i + 1, :, start:].clone()) for k, v in _kv(self.cache)]
            leaving.append((self.rows[i], DynamicCache(ddp_cache_data=own)))
        gone_set = set(gone)
        keep = [i for i in range(len(self.rows)) if i not in gone_set]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = None
            return leaving
        index = torch.tensor(keep)
        mask = self.mask[index]
        lead = int((mask.cumsum(1) == 0).sum(1).min())  # padding every row has
        lead = lead if lead >= TRIM_TOKENS else 0
        self.mask = mask[:, lead:]
        self.cache = _cache([(k[index, :, lead:], v[index, :, lead:]) for k, v in _kv(self.cache)])
        return leaving


class BatchedEngine(TransformersEngine):
    """A `TransformersEngine` whose chats (`stream`) are decoded together by one scheduler thread."""

    batches = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        self.eos = set(eos) if isinstance(eos, list) else {eos}
        self.batch = _Batch()
        self._pending: list[_Request] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Ended before the interpreter's teardown: a thread left inside torch at exit sometimes aborted
        # the process ("terminate called without an active exception", exit 134). A weak reference:
        # the exit hook must not keep a dropped engine's model in memory.
        atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def in_flight(self) -> int:
        """Chats waiting or streaming."""
        with self._wake:
            return len(self._pending) + len(self.batch.rows)

    def stream(
        self, messages: Messages, settings: GenerationSettings, negative: Messages | None = None
    ) -> Iterator[str]:
        if guided(settings, negative):  # the few replies after a switch: generate's own guidance, beside the batch
            yield from TransformersEngine.stream(self, messages, settings, negative)
            return
        ids = self.tokenizer(self.render(self.fit_messages(messages, settings)), add_special_tokens=False)["input_ids"]
        room = self.context_window - len(ids)  # prompt + reply stay inside the window, as on the direct path
        request = _Request(ids, settings, max(1, min(settings.max_new_tokens, room)), self.eos)
        self._submit(request)
        streamer = TokenStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True)
        try:
            while True:
                item = request.out.get()
                if isinstance(item, Exception):
                    raise item
                if item is _Done:
                    streamer.end()
                    yield from _drain(streamer)
                    return
                streamer.put(torch.tensor([item]))
                yield from _drain(streamer)
        finally:
            request.cancelled.set()  # the Stop button or a closed tab: the scheduler drops its row

    def _submit(self, request: _Request) -> None:
        with self._wake:
            if self._closed:
                raise GenerationError("the batched engine was closed", "start the app again")
            self._pending.append(request)
            if self._thread is None:  # none yet, or it ended after IDLE_S with nothing to do
                self._thread = threading.Thread(target=self._run, daemon=True, name="batched-decoding")
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        lower_priority(CHAT_NICE)  # the batch decodes at the direct path's priority: labels stay quick
        while True:
            with self._wake:
                if not self._pending and not self.batch.rows and not self._closed:
                    self._wake.wait(timeout=IDLE_S)
                if self._closed:
                    break
                if not self._pending and not self.batch.rows:
                    # Idle: end, so an engine the pool dropped (an old version) holds no thread and is
                    # freed; the next chat starts a new one.
                    self._thread = None
                    return
                pending, self._pending = self._admissible(self._pending)
            try:
                with torch.inference_mode():
                    for group in _groups(self._prepare(pending)):
                        self._prefill(group)
                    if self.batch.rows:
                        self._decode()
            except Exception as err:  # every chat in flight gets the error; the next ones start afresh
                log.exception("batched generation failed")
                with self._wake:
                    rows, self.batch = self.batch.rows + pending, _Batch()
                for request in rows:
                    request.out.put(_explain(err))
        with self._wake:
            rows, self._pending = self.batch.rows + self._pending, []
            self._thread = None
        for request in rows:
            request.out.put(GenerationError("the batched engine was closed", "start the app again"))

    def _admissible(self, pending: list[_Request]) -> tuple[list[_Request], list[_Request]]:
        """(newcomers that join now, those that wait for rows to finish): the batch's KV cache, every
        row padded to the longest, stays within BATCH_TOKENS; a chat alone always starts."""
        rows = len(self.batch.rows)
        width = self.batch.mask.shape[1] if rows else 0
        join, wait = [], []
        for request in pending:
            need = max(width, len(request.ids) + request.max_new_tokens)
            if rows and (rows + 1) * need > BATCH_TOKENS:
                wait.append(request)
                continue
            rows, width = rows + 1, need
            join.append(request)
        return join, wait

    def _prepare(self, pending: list[_Request]) -> list[_Request]:
        """Attach each newcomer's prefix-cache entry; drop those whose reader already left."""
        ready = []
        for request in pending:
            if request.cancelled.is_set():
                continue
            # The stored cache itself: the prefill only reads it, copying each row's part once.
            request.cache, request.reused = self.prefix_cache.take(torch.tensor(request.ids), copy_cache=False)
            ready.append(request)
        return ready

    def _prefill(self, rows: list[_Request]) -> None:
        """One forward for newcomers: each row's tokens its prefix cache lacks, left-padded to the
        longest; a row with fewer new tokens recomputes some cached ones, so no row has padding
        between its cache and its input. Then first tokens, and the rows join the batch."""
        width = max(len(r.ids) - r.reused for r in rows)
        keep = [max(0, r.reused - (width - (len(r.ids) - r.reused))) for r in rows]  # cached tokens kept
        cached = max(keep)
        inputs = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), cached + width, dtype=torch.long)
        positions = torch.ones(len(rows), width, dtype=torch.long)
        owns = []  # per row: its cached keys and values of each layer (k tokens); None: none
        for i, (r, k) in enumerate(zip(rows, keep, strict=True)):
            fresh = r.ids[k:]
            inputs[i, width - len(fresh) :] = torch.tensor(fresh)
            mask[i, cached - k : cached] = 1
            mask[i, cached + width - len(fresh) :] = 1
            positions[i, width - len(fresh) :] = torch.arange(k, k + len(fresh))
            owns.append([(key[..., :k, :], value[..., :k, :]) for key, value in _kv(r.cache)] if k else None)
            r.cache = None
        past = DynamicCache(config=self.model.config)
        if cached:
            # Each layer: one buffer with every row's cached part right-aligned at `cached`, and room for
            # this forward's `width` tokens and the decoding after it (written in place).
            layers = len(next(own for own in owns if own))
            room = width + _spare(cached + width)
            by_layer = zip(*(own or [None] * layers for own in owns), strict=True)
            past = _cache(
                [tuple(_right_aligned([kv[n] if kv else None for kv in kvs], cached, room) for n in (0, 1))
                 for kvs in by_layer],
                filled=cached,
            )  # fmt: skip
        offset = len(self.batch.rows)
        out = self.model(
            input_ids=inputs.to(self.model.device),
            attention_mask=mask.to(self.model.device),
            position_ids=positions.to(self.model.device),
            past_key_values=past,
            cache_position=torch.arange(cached, cached + width, device=self.model.device),
            use_cache=True,
            logits_to_keep=1,
        )
        with self._wake:
            self.batch.add(rows, out.past_key_values, mask)
        self._emit(out.logits[:, -1], offset)

    def _decode(self) -> None:
        """One token for every row of the batch."""
        batch = self.batch
        positions = batch.mask.sum(1, keepdim=True)  # each row's next position: its real tokens so far
        step = batch.mask.shape[1]
        batch.mask = torch.cat([batch.mask, torch.ones(len(batch.rows), 1, dtype=torch.long)], dim=1)
        out = self.model(
            input_ids=torch.tensor([[r.ids[-1]] for r in batch.rows], device=self.model.device),
            attention_mask=batch.mask.to(self.model.device),
            position_ids=positions.to(self.model.device),
            past_key_values=batch.cache,
            cache_position=torch.tensor([step], device=self.model.device),
            use_cache=True,
        )
        self._emit(out.logits[:, -1], 0)

    def _emit(self, logits: torch.Tensor, offset: int) -> None:
        """Sample the next token of the batch's rows offset, offset + 1, ... (one per row of `logits`),
        stream it, and retire the rows that finished."""
        rows = list(enumerate(self.batch.rows[offset : offset + len(logits)], start=offset))
        finished = [i for i, request in rows if request.cancelled.is_set()]
        live = [(i, request) for i, request in rows if not request.cancelled.is_set()]
        tokens = _pick([request for _, request in live], logits[[i - offset for i, _ in live]])
        for (i, request), token in zip(live, tokens, strict=True):
            request.ids.append(token)
            if token not in request.eos:
                request.out.put(token)
            if request.done(token):
                finished.append(i)
        with self._wake:
            leaving = self.batch.remove(finished)
        for request, cache in leaving:
            if reusable(cache):  # the next turn of this chat starts from here (kept before the reply ends)
                self.prefix_cache.put(torch.tensor(request.ids), cache)
            request.out.put(_Done)

    def close(self) -> None:
        """Stop the scheduler; chats in flight end with an error."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)


def _close_at_exit(ref: weakref.ref) -> None:
    if (engine := ref()) is not None:
        engine.close()


def _pick(requests: list[_Request], logits: torch.Tensor) -> list[int]:
    """The next token of each request from its row of `logits` (R, V), by its own settings, as
    `generate` picks it; rows with equal settings go through the logits processors together."""
    tokens = [0] * len(requests)
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        key = repr(request.sampling) if request.sampling is not None else f"seeded {i}"
        groups.setdefault(key, []).append(i)
    for rows in groups.values():
        first = requests[rows[0]]
        width = max(len(requests[i].ids) for i in rows)
        # Each row padded with its own first token: the penalty sees no token the row lacks.
        ids = torch.tensor([requests[i].ids + requests[i].ids[:1] * (width - len(requests[i].ids)) for i in rows])
        scores = first.processors(ids, logits[rows].float())
        if first.greedy:
            picked = scores.argmax(-1)
        else:
            picked = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=first.generator).squeeze(-1)
        for i, token in zip(rows, picked.tolist(), strict=True):
            tokens[i] = token
    return tokens


def _groups(rows: list[_Request]) -> Iterator[list[_Request]]:
    """Newcomers in prefill groups: by number of new tokens, so padding stays small (a group pads
    at most about twice its real tokens) and one forward stays under PREFILL_TOKENS."""
    rows = sorted(rows, key=lambda r: len(r.ids) - r.reused)
    group, real = [], 0
    for r in rows:
        new = len(r.ids) - r.reused
        if group and ((len(group) + 1) * new > max(2 * (real + new), 64) or (len(group) + 1) * new > PREFILL_TOKENS):
            yield group
            group, real = [], 0
        group.append(r)
        real += new
    if group:
        yield group


_FIX = "send the message again; if it keeps failing, start without --batching auto and report the error"


def _explain(err: Exception) -> GenerationError:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if out_of_memory(err):
        return GenerationError(
            f"batched generation ran out of memory: {text}",
            "lower max_new_tokens, shorten the history, or serve fewer chats at once (--concurrency_limit)",
        )
    if isinstance(err, GenerationError):
        return err
    return GenerationError(f"batched generation failed: {text}", _FIX)


def _drain(streamer: TokenStreamer) -> Iterator[str]:
    """The text pieces the streamer has ready, without waiting."""
    while True:
        try:
            piece = streamer.text_queue.get_nowait()
        except queue.Empty:
            return
        if piece is streamer.stop_signal:
            return
        if piece:
            yield piece
