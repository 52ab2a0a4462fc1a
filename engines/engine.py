"""Generation behind one small interface.

`ChatEngine` is what the chat, the app and eval talk to: messages in (the OpenAI-style
`{"role", "content"}` list), text out, streamed or batched. `TransformersEngine` runs a local
transformers model (optionally with a LoRA adapter); `engines.remote.OpenAIEngine` asks any
OpenAI-compatible server (`transformers serve`, vLLM, llama.cpp's server) through the same
methods. No Gradio here.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer, set_seed

from core.conversation import Messages, fit, too_long
from core.errors import GenerationError, ModelLoadError
from engines.config import PREFIX_CACHE_TOKENS, GenerationSettings
from engines.kv_cache import PrefixCache
from engines.priority import CHAT_NICE, lower_priority

log = logging.getLogger(__name__)


def prompt_tokens(tokenizer, messages: Messages) -> int:
    """Tokens of `messages` after `tokenizer`'s chat template, generation prompt included: what every
    engine counts to fit a history (a local model, a server's base, the app's side of a child process)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


class Fitted(list):
    """Messages an engine fitted to its context window (`ChatEngine.fit_messages`): `stream`
    trusts them as they are, so a prompt the app fitted (to tell the user what was trimmed) is
    not counted again. A list, so it goes wherever messages go (a process pipe, a server)."""

    def __init__(self, messages: Messages, tokens: int, trimmed: int):
        super().__init__(messages)
        self.tokens = tokens  # prompt tokens after the chat template, generation prompt included
        self.trimmed = trimmed  # oldest messages left out


class ChatEngine(ABC):
    """A generation backend. Subclasses give tokens counts and generation; trimming the
    history to the context window is shared here so every backend trims the same way."""

    name: str
    context_window: int  # tokens of prompt + reply the backend accepts
    batches = False  # concurrent chats are decoded together (the app then lets more in at once)

    @abstractmethod
    def count_tokens(self, messages: Messages) -> int:
        """Prompt tokens for `messages` after the chat template, generation prompt included."""

    @abstractmethod
    def stream(
        self, messages: Messages, settings: GenerationSettings, negative: Messages | None = None
    ) -> Iterator[str]:
        """Yield the reply in pieces as they are generated. `negative`: the same prompt under the
        persona just switched away from; a backend that can (`guided`) steers the reply away from it."""

    @abstractmethod
    def generate(
        self, conversations: list[Messages], settings: GenerationSettings, negatives: list[Messages] | None = None, **kw
    ) -> list[str]:
        """One reply per conversation, in order; `negatives`, one per conversation, as in `stream`."""

    def warm(self, messages: Messages) -> None:
        """Get ready for prompts that start with `messages` (e.g. a persona's system prompt).
        A no-op unless the backend keeps prompt caches; remote servers cache on their own."""
        return None

    def fit_messages(self, messages: Messages, settings: GenerationSettings) -> Fitted:
        """`messages` trimmed (`core.conversation.fit`) so prompt + max_new_tokens fit the
        context window; at most half the window is held back for the reply, so a huge
        max_new_tokens cannot starve the prompt. A message too long on its own is refused, and
        a persona whose system prompt alone overflows gets an error of its own (`too_long`).
        Already `Fitted` messages are returned as they are (fitted once, counted once)."""
        if isinstance(messages, Fitted):
            return messages
        budget = self.context_window - min(settings.max_new_tokens, self.context_window // 2)
        counts: dict[int, int] = {}  # fit's candidates are suffixes: their length names them

        def count(candidate: Messages) -> int:
            if len(candidate) not in counts:
                counts[len(candidate)] = self.count_tokens(candidate)
            return counts[len(candidate)]

        fitted = fit(messages, count, budget)
        if count(fitted) > budget:
            raise too_long(fitted, self.count_tokens, budget, self.context_window)
        if len(fitted) < len(messages):
            log.info("trimmed %d old messages to fit the context", len(messages) - len(fitted))
        return Fitted(fitted, count(fitted), len(messages) - len(fitted))


def guided(settings: GenerationSettings, negative) -> bool:
    """Whether a reply is steered away from a negative prompt (a persona switched away from)."""
    return negative is not None and settings.guidance_scale != 1


class _StopOnEvent(StoppingCriteria):
    """Ends generation when the consumer stops reading (e.g. the user pressed stop)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TokenStreamer(TextIteratorStreamer):
    """Hands out each token's text as soon as it is generated.

    `TextIteratorStreamer` holds text back until a word is complete (a space follows), which
    delays a reply's first words by two or three decoding steps (~0.1 s each on 2 CPU cores).
    Decoding the tokens so far and handing out what is new is exact for byte-level BPE
    (Llama 3, SmolLM2), except for a character whose bytes span tokens: it decodes as U+FFFD
    until complete, so it is held back until then.
    """

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            value = value[0]  # (1, T) -> (T,): batch size 1 only, as the base class
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\ufffd"):
            return
        self.on_finalized_text(text[self.print_len :])
        self.print_len = len(text)
        if text.endswith("\n"):  # start over: decoding stays short on long replies
            self.token_cache, self.print_len = [], 0

    def end(self) -> None:
        # A reply cut at max_new_tokens can stop inside a character: its bytes so far decode as
        # U+FFFD, which the base class would hand out. Drop the unfinished character instead.
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs) if self.token_cache else ""
        self.token_cache, self.print_len, printable = [], 0, text[self.print_len :].rstrip("\ufffd")
        self.next_tokens_are_prompt = True
        self.on_finalized_text(printable, stream_end=True)


class TransformersEngine(ChatEngine):
    """A local transformers causal LM with its tokenizer's chat template."""

    def __init__(
        self,
        model,
        tokenizer,
        name: str,
        max_context_tokens: int | None = None,
        prefix_cache_tokens: int = PREFIX_CACHE_TOKENS,
    ):
        if not tokenizer.chat_template:
            raise ModelLoadError(
                f"the tokenizer of {name} has no chat template",
                "use an Instruct/chat model (e.g. unsloth/llama-3-8b-Instruct-bnb-4bit) or set tokenizer.chat_template",
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        native = getattr(model.config, "max_position_embeddings", None) or 2048
        self.context_window = min(native, max_context_tokens) if max_context_tokens else native
        # KV caches of recent chat turns: the next turn of a chat prefills only its new tokens.
        self.prefix_cache = PrefixCache(prefix_cache_tokens)

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, messages: Messages) -> int:
        return prompt_tokens(self.tokenizer, messages)

    def _encode(self, texts: list[str]) -> dict:
        # The chat template already holds the special tokens (BOS etc.): add none twice.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        return {k: v.to(self.model.device) for k, v in enc.items()}

    def _generate_kwargs(self, settings: GenerationSettings, inputs: dict) -> dict:
        """Decoding kwargs, with the reply capped so prompt + reply stay inside the window."""
        room = self.context_window - inputs["input_ids"].shape[1]
        kwargs = settings.generate_kwargs()
        kwargs["max_new_tokens"] = max(1, min(settings.max_new_tokens, room))
        return {**kwargs, "pad_token_id": self.tokenizer.pad_token_id}

    def _guidance(self, settings: GenerationSettings, negatives: list[Messages]) -> dict:
        """generate's classifier-free guidance (transformers' UnbatchedClassifierFreeGuidance
        processor): each token's log-probabilities under the prompt, pushed `guidance_scale` times
        away from those under `negatives` (one per row, the batch's order and padding side). After
        a switch the negative is the same dialogue under the old persona, so what the two prompts
        share (the user's question, written to the old persona) cancels and the new persona's
        facts decide: at scale 3 the swap probe's replies closer to the old persona fell from 0.425
        to 0.20 on the default recipe, 0.575 to 0.15 on the base (benchmarks/README.md, "Persona
        switch"). The cost: a 135M model then sometimes misspells a name it rarely saw
        ("Brighteline"); keeping to tokens the prompt finds plausible (contrastive decoding's
        constraint) fixed the spelling but undid most of the gain, so it is not applied."""
        enc = self._encode([self.render(self.fit_messages(m, settings)) for m in negatives])
        return {"guidance_scale": settings.guidance_scale, "negative_prompt_ids": enc["input_ids"],
                "negative_prompt_attention_mask": enc["attention_mask"]}  # fmt: skip

    def warm(self, messages: Messages) -> None:
        """Run `messages` (no generation prompt) through the model once and keep the KV cache."""
        if self.prefix_cache.max_tokens <= 0:
            return
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        ids = self._encode([text])["input_ids"]
        with torch.inference_mode():
            cache = self.model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        self.prefix_cache.put(ids[0], cache)

    def stream(
        self, messages: Messages, settings: GenerationSettings, negative: Messages | None = None
    ) -> Iterator[str]:
        inputs = self._encode([self.render(self.fit_messages(messages, settings))])
        streamer = TokenStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop, failure = threading.Event(), []
        kwargs = {**inputs, **self._generate_kwargs(settings, inputs), "streamer": streamer}
        kwargs["stopping_criteria"] = StoppingCriteriaList([_StopOnEvent(stop)])
        # A guided reply leaves the prefix cache alone: the batched engine's thread uses it too.
        cached = not guided(settings, negative)
        if cached:  # generate prefills only the prompt tokens the reused cache does not hold, and extends it
            cache, reused = self.prefix_cache.take(inputs["input_ids"][0])
            if cache is not None:
                kwargs["past_key_values"] = cache
            log.debug("prompt %d tokens, %d from the prefix cache", inputs["input_ids"].shape[1], reused)
        else:
            kwargs |= self._guidance(settings, [negative])
        if settings.seed is not None:
            set_seed(settings.seed)

        def run() -> None:
            lower_priority(CHAT_NICE)  # a label or a page load never waits behind this reply
            try:
                with torch.inference_mode():
                    out = self.model.generate(**kwargs, return_dict_in_generate=True)
                if cached:
                    self.prefix_cache.put(out.sequences[0], out.past_key_values)
            except Exception as err:  # re-raised in the consumer's thread below
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            stop.set()
            thread.join()
        if failure:
            raise _explain(failure[0]) from failure[0]

    def generate(
        self,
        conversations: list[Messages],
        settings: GenerationSettings,
        negatives: list[Messages] | None = None,
        batch_size: int = 8,
        progress: bool = False,
    ) -> list[str]:
        """Batched generation. Prompts are sorted by length so each batch pads little;
        replies come back in the input order. `negatives`: one per conversation, or None."""
        texts = [self.render(self.fit_messages(m, settings)) for m in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        replies: list[str] = [""] * len(texts)
        if settings.seed is not None:
            set_seed(settings.seed)
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc="generating", unit="batch", disable=not progress):
            idx = order[start : start + batch_size]
            inputs = self._encode([texts[i] for i in idx])
            kwargs = self._generate_kwargs(settings, inputs)
            if guided(settings, negatives):
                kwargs |= self._guidance(settings, [negatives[i] for i in idx])
            try:
                with torch.inference_mode():
                    out = self.model.generate(**inputs, **kwargs)
            except Exception as err:
                raise _explain(err, batch_size) from err
            new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (B, new) after the left-padded prompt
            for i, text in zip(idx, self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
                replies[i] = text.rstrip("\ufffd").strip()  # whole characters only, as streamed (TokenStreamer.end)
        return replies


def out_of_memory(err: Exception) -> bool:
    """A CUDA or CPU allocation failure (the CPU one is a plain RuntimeError saying so)."""
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _explain(err: Exception, batch_size: int | None = None) -> Exception:
    """Turn an out-of-memory error into advice; leave anything else as it is."""
    if out_of_memory(err):
        batch = f"lower the batch size (now {batch_size}), " if batch_size else ""
        return GenerationError(
            f"generation ran out of memory: {str(err).splitlines()[0]}",
            f"{batch}lower max_new_tokens, shorten the history, or load the model in 4-bit on a GPU",
        )
    return err
