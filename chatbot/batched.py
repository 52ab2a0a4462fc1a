"""Many users in one process: concurrent chats decoded together, one model in memory.

    python app.py --batching auto
    python -m chatbot.chat --batching auto     # one user: same as off (the direct path)

`BatchedEngine` is a `TransformersEngine` with a second way to stream. The rule: a chat that starts
while no other chat of this engine is in flight goes by the direct path (`TransformersEngine.stream`:
`generate` with the prefix KV cache, the single-user speed of ~0.18 s to a first token); one that
starts while any other is in flight joins transformers' `ContinuousBatchingManager` (paged KV cache;
new requests join the running batch between decoding steps). Decoding a small model on CPU is
memory-bound, so one decoding step for 16 chats costs little more than for one
(`benchmarks.continuous_batching`: 16 users, first token p50 1.47 s against 11.7 s side by side).
Batched eval (`generate`) stays on the direct path: it batches already.

Per request: temperature, top_p, top_k, max_new_tokens, and repetition_penalty (transformers 5.23
drops its processor in a batch; `_RepetitionPenalty` here applies it over each request's prompt and
reply tokens, as `generate` does). Not honoured in a batch: `seed` (one sampler RNG serves the whole
batch). Greedy (`temperature` 0) is exact: the manager samples, and a greedy request asks for
`top_k` 1, which leaves one candidate token.
"""

from __future__ import annotations

import functools
import itertools
import logging
import queue
import threading
import warnings
from collections.abc import Iterator

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    CLASSIC_TO_CB_PROCESSORS_MAP,
    ContinuousBatchingLogitsProcessor,
)
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from chatbot.conversation import Messages
from chatbot.engine import GenerationSettings, TokenStreamer, TransformersEngine
from chatbot.errors import GenerationError
from chatbot.priority import CHAT_NICE, lower_priority

log = logging.getLogger(__name__)

# Paged KV cache: 256 pages of 64 tokens = 16,384 tokens (~0.75 GB for SmolLM2-135M in fp32),
# room for 32 chats of ~500 tokens or one chat of the full 8k window. Left to transformers, the
# size comes from free memory and took ~20 s to set up on CPU for the tiny test model.
PAGE_SIZE = 64
NUM_PAGES = 256
MAX_BATCH_TOKENS = 512  # tokens per forward: long prompts are prefilled in chunks between decode steps
POLL_S = 0.1  # how often the router checks that the manager still runs


class _Finished:
    """Put on a request's queue when the manager stopped before the request finished."""

    def __init__(self, reason: str):
        self.reason = reason


def sampling_kwargs(settings: GenerationSettings, vocab_size: int) -> dict:
    """Per-request logits-processor arguments (the manager samples for every request)."""
    penalty = {"repetition_penalty": float(settings.repetition_penalty)}
    if settings.temperature == 0:
        return {**penalty, "temperature": 1.0, "top_k": 1, "top_p": 1.0}  # one candidate: argmax, exactly
    top_k = settings.top_k or vocab_size  # 0 = off in GenerationSettings; here: keep every token
    return {**penalty, "temperature": float(settings.temperature), "top_k": int(top_k), "top_p": float(settings.top_p)}


class _RepetitionPenalty(ContinuousBatchingLogitsProcessor):
    """`RepetitionPenaltyLogitsProcessor` per request: each request's own penalty over the tokens of
    its prompt and reply so far (the batch's `input_ids` hold one token per request, not its history)."""

    supported_kwargs = {"repetition_penalty": float}
    ignored_kwargs = ()

    def __init__(self, processor: RepetitionPenaltyLogitsProcessor):
        self.penalty = processor.penalty
        self.histories: list[list[int]] = []  # of the requests in the step being decoded, in row order

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.copy_(torch.full_like(int32_tensor, self.penalty, dtype=torch.float32).view(torch.int32))

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        # Runs before the step's forward, in the manager's thread; __call__ follows in the same step.
        self.histories = [r.state.initial_tokens + r.state.generated_tokens for r in requests_with_new_token]
        penalties = [
            r.state.logit_processor_kwargs.get("repetition_penalty", self.penalty) for r in requests_with_new_token
        ]
        return torch.tensor(penalties, dtype=torch.float32).view(torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        penalties = tensor_arg[: scores.size(0)].view(torch.float32).tolist()  # (B,)
        for row, (tokens, penalty) in enumerate(zip(self.histories, penalties, strict=False)):
            if penalty != 1.0 and tokens:
                ids = torch.tensor(sorted({t for t in tokens if t < scores.size(-1)}), device=scores.device)
                picked = scores[row, ids]
                scores[row, ids] = torch.where(picked < 0, picked * penalty, picked / penalty)
        return scores


class BatchedEngine(TransformersEngine):
    """A `TransformersEngine` (its `generate`, prefix cache and direct `stream` for a chat alone)
    whose overlapping chats are decoded together by continuous batching."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_flight = 0  # chats of this engine now streaming, by either path
        self.manager = None  # started at the first chat that needs it, then kept running
        self._lock = threading.Lock()
        self._queues: dict[str, queue.Queue] = {}  # request id -> its outputs, filled by the router
        self._ids = itertools.count()
        # One forward at a time on the shared model. transformers' forward wrapper sets
        # `model.config.is_causal` for the duration of a call (False for the batch's paged attention)
        # and restores it after: a direct-path forward running meanwhile on another thread reads the
        # wrong value and can leave it set, which changed later greedy replies in our tests. On 2
        # cores two forwards at once would only share the cores anyway.
        if not hasattr(self.model.forward, "forward_lock"):  # a second engine on this model shares the lock
            self.model.forward = _locked(self.model.forward)

    def stream(self, messages: Messages, settings: GenerationSettings) -> Iterator[str]:
        with self._lock:
            alone = self.in_flight == 0
            self.in_flight += 1
        try:
            yield from (super().stream(messages, settings) if alone else self._stream_batched(messages, settings))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _stream_batched(self, messages: Messages, settings: GenerationSettings) -> Iterator[str]:
        tokenizer = self.tokenizer
        text = self.render(self.fit_messages(messages, settings))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.context_window - len(ids)  # prompt + reply stay inside the window, as on the direct path
        manager = self._manager()
        rid = f"chat-{next(self._ids)}"
        outputs: queue.Queue = queue.Queue()
        self._queues[rid] = outputs  # before add_request: the first token may come at once
        kwargs = sampling_kwargs(settings, len(tokenizer))
        finished = False
        try:
            added = manager.add_request(
                ids, request_id=rid, max_new_tokens=max(1, min(settings.max_new_tokens, room)), streaming=True, **kwargs
            )
            if added is None:  # the manager refuses new requests (stopping or failed): it logged why
                raise GenerationError("the batched engine is not accepting requests", _FIX)
            streamer = TokenStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)
            seen = 0
            while not finished:
                out = outputs.get()
                if isinstance(out, _Finished):
                    finished = True  # nothing left to cancel
                    raise GenerationError(f"batched generation stopped: {out.reason}", _FIX)
                if out.error:
                    finished = True
                    raise _explain(out.error)
                new = out.generated_tokens[seen:]  # outputs carry every token so far
                seen = len(out.generated_tokens)
                finished = out.is_finished()
                if new:
                    streamer.put(torch.tensor(new))
                if finished:
                    streamer.end()
                yield from _drain(streamer)
        finally:
            self._queues.pop(rid, None)
            if not finished:  # the consumer stopped reading (Stop button, closed tab): free its batch slot
                manager.cancel_request(rid)

    def _manager(self):
        """The running manager, started on first use with its own output router."""
        with self._lock:
            if self.manager is not None and self.manager.is_running():
                return self.manager
            from transformers import GenerationConfig
            from transformers.generation.configuration_utils import ContinuousBatchingConfig

            model = self.model
            eos = model.generation_config.eos_token_id
            gen = GenerationConfig(
                do_sample=True,  # per request: greedy is top_k 1 (sampling_kwargs)
                # Values other than 1.0 so transformers builds each processor; requests bring their own.
                temperature=0.7,
                top_k=50,
                top_p=0.9,
                repetition_penalty=1.1,
                eos_token_id=self.tokenizer.eos_token_id if eos is None else eos,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            cb = ContinuousBatchingConfig(
                page_size=PAGE_SIZE,
                num_blocks=NUM_PAGES,
                max_batch_tokens=MAX_BATCH_TOKENS,
                per_request_processors=True,
                # Flash attention would be switched on the shared model, under the direct path too.
                auto_switch_to_flash=False,
                # Async batching updates a request's tokens one step late: the penalty must see them all.
                use_async_batching=False,
            )
            # transformers maps a generate processor to its per-request batch version through this table.
            CLASSIC_TO_CB_PROCESSORS_MAP[RepetitionPenaltyLogitsProcessor] = _RepetitionPenalty
            attention = model.config._attn_implementation
            with warnings.catch_warnings():  # "penalty only on new tokens": _RepetitionPenalty covers the prompt
                warnings.filterwarnings("ignore", message="Passing `repetition_penalty`")
                manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
            if model.config._attn_implementation != attention:
                log.warning(
                    "continuous batching switched attention %s -> %s", attention, model.config._attn_implementation
                )
            # The manager's thread is not a daemon and would keep the process alive at exit; a thread
            # inherits daemon-ness (and, on Linux, its nice value) from the thread that starts it.
            starter = threading.Thread(target=_start_niced, args=(manager,), daemon=True)
            starter.start()
            starter.join()
            threading.Thread(target=self._route, args=(manager,), daemon=True, name="batched-router").start()
            self.manager = manager
            return manager

    def _route(self, manager) -> None:
        """Hand each output to its request's queue (one reader for all: the manager's own per-request
        iterator re-queues other requests' outputs, which 32 readers would turn into busy polling)."""
        while manager.is_running():
            out = manager.get_result(timeout=POLL_S)
            if out is not None and (outputs := self._queues.get(out.request_id)) is not None:
                outputs.put(out)  # outputs of a cancelled request have no queue any more: dropped
        for outputs in list(self._queues.values()):
            outputs.put(_Finished("the continuous batching manager stopped (see the log for its error)"))

    def close(self) -> None:
        """Stop the manager (requests in flight end with an error); a later chat starts a new one."""
        with self._lock:
            manager, self.manager = self.manager, None
        if manager is not None:
            manager.stop(block=True, timeout=30)


def _start_niced(manager) -> None:
    lower_priority(CHAT_NICE)  # the batch decodes at the direct path's priority: labels stay quick
    manager.start()


def _locked(forward):
    lock = threading.RLock()

    @functools.wraps(forward)  # generate inspects forward's signature: keep it visible
    def locked_forward(*args, **kwargs):
        with lock:
            return forward(*args, **kwargs)

    locked_forward.forward_lock = lock
    return locked_forward


_FIX = "send the message again; if it keeps failing, start without --batching auto and report the error"


def _explain(error: str) -> GenerationError:
    if "out of memory" in error.lower():
        return GenerationError(
            f"batched generation ran out of memory: {error.splitlines()[0]}",
            "lower max_new_tokens, shorten the history, or serve fewer chats at once (--concurrency_limit)",
        )
    return GenerationError(f"batched generation failed: {error.splitlines()[0] if error else 'no reason given'}", _FIX)


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
