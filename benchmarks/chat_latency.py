"""Chat latency: time to first token and streamed tokens/s through the engine vs bare `generate`.

    python -m benchmarks.chat_latency                    # default model, Ada + a 6-turn history
    python -m benchmarks.chat_latency --quick            # tiny model, 8 new tokens

Prompts are the product's (`build_messages` with a real persona file), decoding is greedy
with the product's other defaults. Three moments of a chat, each through
`TransformersEngine.stream` and, on the same prompt and weights, through bare `model.generate`
with a `TextIteratorStreamer` in a thread (what a notebook or a hand-written app does):

- next turn: the 7th message, after the engine served the 6th, so its prompt and reply are in
  the engine's prefix cache. This is the turn a chatting user waits for nearly every time.
- first message: a new chat whose persona and greeting were prefilled when the app started
  (`chatbot.session.warm`).
- cold: nothing cached (the cache cleared: a persona edited a moment ago, or a full cache).

Tokens/s is the whole reply through `engine.stream` vs bare `generate` without a streamer.
Candidate speed-ups are extra rows: bf16 weights (next turn, through the engine), a static KV
cache (cold), and llama.cpp on the default model's GGUF when `llama-cpp-python` is installed.
Methods run interleaved and repeated; latencies are p50/p95 over the repeats.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import REPO, Row, Sizes, add_model_args, at_least, at_most, describe, repeat, report
from benchmarks.common import skipped as skipped_row
from benchmarks.models import model_source

NAME = "chat_latency"
TTFT_GOAL_S = 0.3
STREAM_GOAL = 0.9  # streamed tokens/s >= this share of bare generate's
HISTORY = [  # six turns, as a chat in its fourth exchange has
    {"role": "user", "content": "Hello Ada! I heard you build clocks. What are you working on?"},
    {"role": "assistant", "content": "Hello, love. A wall clock with a wooden escapement. It runs a touch fast."},
    {"role": "user", "content": "Why wood? I thought clock parts were always brass."},
    {"role": "assistant", "content": "Brass is easier. Wood is quieter, and I had a plank of seasoned oak spare."},
    {"role": "user", "content": "And the bees, how are they doing this spring?"},
    {"role": "assistant", "content": "Busy. Marie's hive swarmed last week, so I am one queen short."},
]
MESSAGE = "Oh no! Did you manage to catch the swarm, and what will you call the new queen?"


def parse_args(argv):
    sizes = Sizes(__doc__)
    add_model_args(sizes)
    sizes.add("--max-new-tokens", 64, 8, "tokens per reply")
    sizes.add("--repeats", 10, 3, "timed replies per method")
    sizes.add("--warmup", 1, 1, "untimed replies per method first")
    sizes.parser.add_argument("--persona", type=Path, default=REPO / "personas" / "ada.yaml", help="persona file")
    return sizes.parse(argv)


@dataclass
class Method:
    """Something that streams a reply, and what must be true before it starts (untimed)."""

    pieces: Callable[[], Iterator[str]]
    setup: Callable[[], None] = field(default=lambda: None)


def timed_stream(method: Method) -> dict:
    """Seconds to the first non-empty piece and to the last, and the text."""
    method.setup()
    start = time.perf_counter()
    first, text = None, []
    for piece in method.pieces():
        if piece and first is None:
            first = time.perf_counter() - start
        text.append(piece)
    return {"ttft_s": first, "total_s": time.perf_counter() - start, "text": "".join(text)}


def bare_inputs(model, tokenizer, messages):
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return {k: v.to(model.device) for k, v in enc.items()}


def streamed(model, tokenizer, inputs: dict, kwargs: dict) -> Iterator[str]:
    """A user's streaming chat: `generate` in a thread, text read from a TextIteratorStreamer."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = threading.Thread(target=model.generate, kwargs={**inputs, **kwargs, "streamer": streamer})
    thread.start()
    yield from streamer
    thread.join()


def bare_streamed(model, tokenizer, messages, kwargs) -> Method:
    return Method(lambda: streamed(model, tokenizer, bare_inputs(model, tokenizer, messages), kwargs))


def bare_generate(model, tokenizer, messages, kwargs) -> Method:
    """`model.generate` without a streamer: the reply arrives whole (one piece). It runs in a
    worker thread, as the engine's does: on a busy 2-core machine `generate` in the main thread
    was seen 5-20x slower (OpenMP spin-waiting; OMP_WAIT_POLICY=PASSIVE removed the gap)."""

    def run(inputs: dict, out: list) -> None:
        out.append(model.generate(**inputs, **kwargs))

    def pieces():
        inputs, out = bare_inputs(model, tokenizer, messages), []
        thread = threading.Thread(target=run, args=(inputs, out))
        thread.start()
        thread.join()
        yield tokenizer.decode(out[0][0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    return Method(pieces)


@dataclass
class Chat:
    """The prompts of the three moments, and the cache state the next turn starts from."""

    first: list  # persona, greeting, first message
    next_turn: list  # persona, 6 turns (the 6th the engine's own reply), 7th message
    reused: int  # prompt tokens of the next turn that the cache holds
    saved: object  # that cache


def prompt_ids(engine, messages):
    return engine.tokenizer(engine.render(messages), add_special_tokens=False, return_tensors="pt")["input_ids"][0]


def make_chat(engine, persona, settings) -> Chat:
    """Serve the 6th turn through the engine (its own reply joins the history, as in the app),
    then keep what the 7th turn finds in the cache."""
    from core.conversation import build_messages, opening

    engine.prefix_cache.clear()
    sixth = build_messages(persona, HISTORY[:4], HISTORY[4]["content"])
    reply = "".join(engine.stream(sixth, settings)).strip()
    next_turn = build_messages(persona, [*HISTORY[:5], {"role": "assistant", "content": reply}], MESSAGE)
    saved, reused = engine.prefix_cache.take(prompt_ids(engine, next_turn))
    first = build_messages(persona, opening(persona), HISTORY[0]["content"])
    return Chat(first, next_turn, reused, saved)


def engine_methods(engine, chat: Chat, persona, settings) -> dict[str, Method]:
    """engine.stream at each moment, its cache set up as that moment finds it."""
    from chatbot.session import warm

    cache = engine.prefix_cache

    def after_sixth_turn():
        cache.clear()
        if chat.saved is not None:
            cache.put(prompt_ids(engine, chat.next_turn), copy.deepcopy(chat.saved))

    def persona_warmed():
        cache.clear()
        warm(engine, [persona] if persona else [])

    return {
        "next_turn": Method(lambda: engine.stream(chat.next_turn, settings), after_sixth_turn),
        "first_message": Method(lambda: engine.stream(chat.first, settings), persona_warmed),
        "cold": Method(lambda: engine.stream(chat.next_turn, settings), cache.clear),
    }


def llama_cpp(messages, settings) -> Method | str:
    """llama.cpp on the default model's GGUF (Q4_1), streamed; or why it cannot run here."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install llama-cpp-python: ~11 min to compile on 2 cores)"
    from llama_cpp import Llama

    from core.default_model import gguf_path

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    llm = Llama(model_path=str(gguf_path()), n_ctx=2048, n_threads=threads, verbose=False)

    def pieces():  # llama-cpp-python reuses the previous call's matching prompt prefix on its own
        stream = llm.create_chat_completion(
            messages=messages,
            max_tokens=settings.max_new_tokens,
            temperature=0.0,
            repeat_penalty=settings.repetition_penalty,
            stream=True,
        )
        for chunk in stream:
            yield chunk["choices"][0]["delta"].get("content") or ""

    return Method(pieces)


def measure(methods: dict[str, Method], repeats: int, warmup: int, count) -> dict:
    """Run the methods interleaved (A, B, C, A, B, C, ...) and summarise each."""
    for _ in range(warmup):
        for method in methods.values():
            timed_stream(method)
    runs: dict[str, list[dict]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            runs[name].append(timed_stream(method))
    out = {}
    for name, rs in runs.items():
        tokens = count(rs[-1]["text"])  # greedy: every run gives the same reply
        totals = [r["total_s"] for r in rs]
        ttfts = [r["ttft_s"] for r in rs if r["ttft_s"] is not None]
        out[name] = {
            "ttft_s": describe(ttfts),
            "total_s": describe(totals),
            "tokens": tokens,
            "tokens_per_s": tokens / describe(totals)["p50"] if tokens else None,
            "reply": rs[-1]["text"],
        }
    return out


def ttft(result: dict, q: str = "p50") -> float | None:
    return result["ttft_s"].get(q)


def prepare_ms(engine, messages, settings, repeats: int) -> dict:
    """Milliseconds from messages to input ids: the engine's path (fit to the context window,
    render, encode) vs one `apply_chat_template` call."""
    import statistics

    def product():
        engine._encode([engine.render(engine.fit_messages(messages, settings))])

    def bare():
        bare_inputs(engine.model, engine.tokenizer, messages)

    n = max(repeats, 20)
    return {name: 1000 * statistics.median(repeat(fn, n)) for name, fn in (("product", product), ("bare", bare))}


def main_rows(res: dict, prep: dict, chat: Chat, prompt_tokens: int) -> list[Row]:
    nxt, first, cold = res["next_turn"], res["first_message"], res["cold"]
    bare, bare_first = res["bare_streamer"], res["bare_streamer_first"]
    return [
        Row("prompt preparation ms, engine (fit, render, encode) vs apply_chat_template", prep["product"],
            prep["bare"], "lower is better"),
        Row("first token p50 s, next turn: engine.stream vs bare generate+streamer", ttft(nxt), ttft(bare),
            f"≤ {TTFT_GOAL_S} s", at_most(ttft(nxt), TTFT_GOAL_S),
            note=f"{chat.reused} of the {prompt_tokens} prompt tokens came from the 6th turn's cache"),
        Row("first token p95 s, next turn: engine.stream vs bare generate+streamer", ttft(nxt, "p95"),
            ttft(bare, "p95"), ""),
        Row("first token p50 s, first message (persona prefilled): engine.stream vs bare generate+streamer",
            ttft(first), ttft(bare_first), f"≤ {TTFT_GOAL_S} s", at_most(ttft(first), TTFT_GOAL_S)),
        Row("first token p50 s, cold (nothing cached): engine.stream vs bare generate+streamer", ttft(cold),
            ttft(bare), "", note="what a turn costs when the cache holds nothing of it"),
        Row("first token p50 s, next turn: engine.stream vs bare generate(max_new_tokens=1)", ttft(nxt),
            ttft(res["bare_prefill"]), "", note="the bare prefill alone, without streaming"),
        Row("tokens/s end to end, cold: engine.stream vs bare generate", cold["tokens_per_s"],
            res["bare_generate"]["tokens_per_s"], f"ratio ≥ {STREAM_GOAL}",
            at_least(_ratio(cold, res["bare_generate"]), STREAM_GOAL)),
        Row("tokens/s end to end, next turn: engine.stream vs bare generate", nxt["tokens_per_s"],
            res["bare_generate"]["tokens_per_s"], f"ratio ≥ {STREAM_GOAL}",
            at_least(_ratio(nxt, res["bare_generate"]), STREAM_GOAL)),
    ]  # fmt: skip


VARIANTS = {  # name: (label, the fp32 engine moment it is compared with)
    "bf16": ("bf16 weights, engine.stream, next turn", "fp32_next_turn"),
    "static_cache": ("static KV cache, engine.stream, cold", "fp32_cold"),
    "llama_cpp": ("llama.cpp GGUF Q4_1, streamed, cold", "fp32_cold"),
}


def variant_rows(res: dict, skipped: dict) -> list[Row]:
    rows = []
    for name, (label, against) in VARIANTS.items():
        if name in skipped:
            rows.append(skipped_row(f"{label}: first token p50 s", skipped[name]))
            continue
        v, base = res[name], res[against]
        same = "same reply as the fp32 engine" if v["reply"] == base["reply"] else "reply differs from the fp32 engine"
        rows += [
            Row(f"{label}: first token p50 s (vs fp32 engine)", ttft(v), ttft(base), f"≤ {TTFT_GOAL_S} s",
                at_most(ttft(v), TTFT_GOAL_S), note=same),
            Row(f"{label}: tokens/s (vs fp32 engine)", v["tokens_per_s"], base["tokens_per_s"], "higher is better"),
        ]  # fmt: skip
    return rows


def _ratio(a: dict, b: dict) -> float | None:
    return a["tokens_per_s"] / b["tokens_per_s"] if a["tokens_per_s"] and b["tokens_per_s"] else None


def variants(engine, chat: Chat, settings, args) -> tuple[dict[str, Method], dict]:
    """(methods, skipped reasons) for the candidate speed-ups, each beside the fp32 engine."""
    import torch

    from engines.engine import TransformersEngine

    # The fp32 engine again, interleaved with the variants: the baseline they are compared to.
    own = engine_methods(engine, chat, None, settings)
    methods, skipped = {"fp32_next_turn": own["next_turn"], "fp32_cold": own["cold"]}, {}
    bf16 = TransformersEngine(copy.deepcopy(engine.model).to(torch.bfloat16), engine.tokenizer, "bf16")

    def bf16_after_sixth_turn():  # the history prefilled, as the 6th turn would have left it
        bf16.prefix_cache.clear()
        bf16.warm(chat.next_turn[:-1])

    methods["bf16"] = Method(lambda: bf16.stream(chat.next_turn, settings), bf16_after_sixth_turn)
    uncached = TransformersEngine(engine.model, engine.tokenizer, "static", prefix_cache_tokens=0)

    def static():  # generate's static cache switched on for the call
        config = engine.model.generation_config
        before, config.cache_implementation = config.cache_implementation, "static"
        try:
            yield from uncached.stream(chat.next_turn, settings)
        finally:
            config.cache_implementation = before

    methods["static_cache"] = Method(static)
    if args.model != "default":
        skipped["llama_cpp"] = "runs the default model's GGUF only (--model default)"
    else:
        cpp = llama_cpp(chat.next_turn, settings)
        if isinstance(cpp, Method):
            methods["llama_cpp"] = cpp
        else:
            skipped["llama_cpp"] = cpp
    return methods, skipped


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import log_quietly
    from core.persona import load_persona
    from engines.config import EngineConfig, GenerationSettings
    from engines.factory import load_engine

    log_quietly()
    args = parse_args(argv)
    engine = load_engine(EngineConfig(model=model_source(args.model)))
    persona = load_persona(args.persona)
    settings = GenerationSettings(temperature=0, max_new_tokens=args.max_new_tokens)
    kwargs = {**settings.generate_kwargs(), "pad_token_id": engine.tokenizer.pad_token_id}
    model, tokenizer = engine.model, engine.tokenizer  # the same weights: only the code path differs
    chat = make_chat(engine, persona, settings)
    prompt_tokens = engine.count_tokens(chat.next_turn)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    methods = engine_methods(engine, chat, persona, settings) | {
        "bare_streamer": bare_streamed(model, tokenizer, chat.next_turn, kwargs),
        "bare_streamer_first": bare_streamed(model, tokenizer, chat.first, kwargs),
        "bare_generate": bare_generate(model, tokenizer, chat.next_turn, kwargs),
        "bare_prefill": bare_generate(model, tokenizer, chat.next_turn, {**kwargs, "max_new_tokens": 1}),
    }
    print(f"{engine.name}: next-turn prompt {prompt_tokens} tokens, {args.repeats} replies per method", flush=True)
    res = measure(methods, args.repeats, args.warmup, count)
    extra, skipped = variants(engine, chat, settings, args)
    res |= measure(extra, args.repeats, args.warmup, count)
    prep = prepare_ms(engine, chat.next_turn, settings, args.repeats)
    rows = main_rows(res, prep, chat, prompt_tokens) + variant_rows(res, skipped)
    info = {"prompt_tokens": prompt_tokens, "reused_tokens": chat.reused, "model": engine.name, "methods": res,
            "skipped": skipped, "prepare_ms": prep}  # fmt: skip
    report(NAME, rows, args, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
