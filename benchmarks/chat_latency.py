"""Chat latency: time to first token and streamed tokens/s through the engine vs bare `generate`.

    python -m benchmarks.chat_latency                    # default model, Ada + a 6-turn history
    python -m benchmarks.chat_latency --quick            # tiny model, 8 new tokens

The prompt is the product's: `build_messages(persona, history, message)` with a real persona
file and a 6-turn history, greedy decoding with the product's other defaults. Product:
`TransformersEngine.stream`. Alternatives on the same weights and prompt: bare
`model.generate` with a `TextIteratorStreamer` in a thread (first token as a user sees it)
and without one (tokens/s; `max_new_tokens=1` for the prefill alone). Runs are interleaved
and repeated; latencies are p50/p95 over them.

Candidate speed-ups are extra rows against the product's fp32 engine: bf16 weights and a
static KV cache (through `TransformersEngine.stream` itself), the persona prefix's KV cache
computed once and reused for every turn (bare generate), and llama.cpp on the GGUF file of the
default model when `llama-cpp-python` is installed.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.common import REPO, Row, Sizes, add_model_args, at_least, at_most, describe, repeat, report
from benchmarks.common import skipped as skipped_row
from benchmarks.models import model_source

NAME = "chat_latency"
TTFT_GOAL_S = 0.3
STREAM_GOAL = 0.9  # streamed tokens/s >= this share of bare generate's
MAIN_THREAD_NOTE = (
    "seen on a busy 2-core machine: generate in the main thread ran 5-20x slower than in a worker thread, and "
    "OMP_WAIT_POLICY=PASSIVE removed the gap (OpenMP spin-waiting); so every bare method here runs in a worker "
    "thread, as engine.stream does, and this row shows the gap on this machine"
)
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


def timed_stream(pieces: Callable[[], Iterator[str]]) -> dict:
    """Seconds to the first non-empty piece and to the last, and the text."""
    start = time.perf_counter()
    first, text = None, []
    for piece in pieces():
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


def bare_streamed(model, tokenizer, messages, kwargs) -> Callable[[], Iterator[str]]:
    return lambda: streamed(model, tokenizer, bare_inputs(model, tokenizer, messages), kwargs)


def bare_generate(model, tokenizer, messages, kwargs, main_thread: bool = False) -> Callable[[], Iterator[str]]:
    """`model.generate` without a streamer: the reply arrives whole (one piece). It runs in a
    worker thread, as the engine's does, unless `main_thread` (see MAIN_THREAD_NOTE)."""

    def run(inputs: dict, out: list) -> None:
        out.append(model.generate(**inputs, **kwargs))

    def pieces():
        inputs, out = bare_inputs(model, tokenizer, messages), []
        if main_thread:
            run(inputs, out)
        else:
            thread = threading.Thread(target=run, args=(inputs, out))
            thread.start()
            thread.join()
        yield tokenizer.decode(out[0][0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    return pieces


def prefix_reuse(model, tokenizer, messages, kwargs) -> Callable[[], Iterator[str]] | str:
    """Streamed generate that starts from the persona prefix's KV cache (computed once, as a
    chat would per persona) and prefills only the history and the new message. Returns the
    reason instead when the system prompt's tokens are not a prefix of the full prompt's."""
    import torch

    prefix = tokenizer.apply_chat_template(messages[:1], return_tensors="pt", return_dict=True)["input_ids"]
    full = bare_inputs(model, tokenizer, messages)["input_ids"]
    if not torch.equal(full[0, : prefix.shape[1]].cpu(), prefix[0]):
        return "the persona's tokens are not a prefix of the prompt's under this chat template"
    with torch.inference_mode():
        cache = model(input_ids=prefix.to(model.device), use_cache=True).past_key_values

    def pieces():  # generate only prefills the tokens the cache does not hold
        inputs = {**bare_inputs(model, tokenizer, messages), "past_key_values": copy.deepcopy(cache)}
        return streamed(model, tokenizer, inputs, kwargs)

    return pieces


def llama_cpp(messages, settings) -> Callable[[], Iterator[str]] | str:
    """llama.cpp on the default model's GGUF (Q4_1), streamed; or why it cannot run here."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install llama-cpp-python: ~11 min to compile on 2 cores)"
    from llama_cpp import Llama

    from chatbot.default_model import gguf_path

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    llm = Llama(model_path=str(gguf_path()), n_ctx=2048, n_threads=threads, verbose=False)

    def pieces():
        stream = llm.create_chat_completion(
            messages=messages,
            max_tokens=settings.max_new_tokens,
            temperature=0.0,
            repeat_penalty=settings.repetition_penalty,
            stream=True,
        )
        for chunk in stream:
            yield chunk["choices"][0]["delta"].get("content") or ""

    return pieces


def measure(methods: dict[str, Callable[[], Iterator[str]]], repeats: int, warmup: int, count) -> dict:
    """Run the methods interleaved (A, B, C, A, B, C, ...) and summarise each."""
    for _ in range(warmup):
        for pieces in methods.values():
            timed_stream(pieces)
    runs: dict[str, list[dict]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, pieces in methods.items():
            runs[name].append(timed_stream(pieces))
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


def main_rows(res: dict, prep: dict) -> list[Row]:
    p, s, g, g1 = res["product"], res["bare_streamer"], res["bare_generate"], res["bare_prefill"]
    main = res["bare_generate_main"]
    return [
        Row(
            "prompt preparation ms, engine (fit_messages, render, encode) vs apply_chat_template",
            prep["product"],
            prep["bare"],
            "lower is better",
        ),
        Row(
            "first token p50 s, engine.stream vs bare generate+streamer",
            ttft(p),
            ttft(s),
            f"≤ {TTFT_GOAL_S} s",
            at_most(ttft(p), TTFT_GOAL_S),
        ),
        Row("first token p95 s, engine.stream vs bare generate+streamer", ttft(p, "p95"), ttft(s, "p95"), ""),
        Row(
            "first token p50 s, engine.stream vs bare generate(max_new_tokens=1)",
            ttft(p),
            ttft(g1),
            "",
            note="the streamer emits text a word at a time, so its first piece can need more than one token",
        ),
        Row(
            "tokens/s end to end, engine.stream vs bare generate",
            p["tokens_per_s"],
            g["tokens_per_s"],
            f"ratio ≥ {STREAM_GOAL}",
            at_least(_ratio(p, g), STREAM_GOAL),
        ),
        Row(
            "tokens/s, bare generate in the main thread vs in a worker thread",
            main["tokens_per_s"],
            g["tokens_per_s"],
            "",
            note=MAIN_THREAD_NOTE,
        ),
    ]


def variant_rows(res: dict, skipped: dict) -> list[Row]:
    base = res["engine_fp32"]
    rows = []
    for name, label in VARIANT_LABELS.items():
        if name in skipped:
            rows.append(skipped_row(f"{label}: first token p50 s", skipped[name]))
            continue
        v = res[name]
        same = "same reply as the fp32 engine" if v["reply"] == base["reply"] else "reply differs from the fp32 engine"
        rows += [
            Row(
                f"{label}: first token p50 s (vs fp32 engine)",
                ttft(v),
                ttft(base),
                f"≤ {TTFT_GOAL_S} s",
                at_most(ttft(v), TTFT_GOAL_S),
                note=same,
            ),
            Row(f"{label}: tokens/s (vs fp32 engine)", v["tokens_per_s"], base["tokens_per_s"], "higher is better"),
        ]
    return rows


VARIANT_LABELS = {
    "bf16": "bf16 weights, engine.stream",
    "static_cache": "static KV cache, engine.stream",
    "prefix_cache": "persona-prefix KV reuse, bare generate+streamer",
    "llama_cpp": "llama.cpp GGUF Q4_1, streamed",
}


def _ratio(a: dict, b: dict) -> float | None:
    return a["tokens_per_s"] / b["tokens_per_s"] if a["tokens_per_s"] and b["tokens_per_s"] else None


def variants(engine, messages, settings, kwargs, args) -> tuple[dict, dict]:
    """(methods, skipped reasons) for the candidate speed-ups."""
    import torch

    from chatbot.engine import TransformersEngine

    # The fp32 engine again, interleaved with the variants: the baseline they are compared to.
    methods, skipped = {"engine_fp32": lambda: engine.stream(messages, settings)}, {}
    bf16 = TransformersEngine(copy.deepcopy(engine.model).to(torch.bfloat16), engine.tokenizer, "bf16")
    methods["bf16"] = lambda: bf16.stream(messages, settings)

    def static():  # the engine's own path, with generate's static cache switched on for the call
        config = engine.model.generation_config
        before, config.cache_implementation = config.cache_implementation, "static"
        try:
            yield from engine.stream(messages, settings)
        finally:
            config.cache_implementation = before

    methods["static_cache"] = static
    prefix = prefix_reuse(engine.model, engine.tokenizer, messages, kwargs)
    methods["prefix_cache"] = prefix if callable(prefix) else None
    if not callable(prefix):
        skipped["prefix_cache"] = prefix
    if args.model != "default":
        skipped["llama_cpp"] = "runs the default model's GGUF only (--model default)"
    else:
        cpp = llama_cpp(messages, settings)
        methods["llama_cpp"] = cpp if callable(cpp) else None
        if not callable(cpp):
            skipped["llama_cpp"] = cpp
    return {k: v for k, v in methods.items() if v is not None}, skipped


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import log_quietly
    from chatbot.engine import GenerationSettings, TransformersEngine
    from chatbot.persona import load_persona
    from chatbot.session import build_messages

    log_quietly()
    args = parse_args(argv)
    engine = TransformersEngine.load(model_source(args.model))
    messages = build_messages(load_persona(args.persona), HISTORY, MESSAGE)
    settings = GenerationSettings(temperature=0, max_new_tokens=args.max_new_tokens)
    kwargs = {**settings.generate_kwargs(), "pad_token_id": engine.tokenizer.pad_token_id}
    model, tokenizer = engine.model, engine.tokenizer  # the same weights: only the code path differs

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    methods = {
        "product": lambda: engine.stream(messages, settings),
        "bare_streamer": bare_streamed(model, tokenizer, messages, kwargs),
        "bare_generate": bare_generate(model, tokenizer, messages, kwargs),
        "bare_prefill": bare_generate(model, tokenizer, messages, {**kwargs, "max_new_tokens": 1}),
        "bare_generate_main": bare_generate(model, tokenizer, messages, kwargs, main_thread=True),
    }
    print(
        f"{engine.name}: prompt {engine.count_tokens(messages)} tokens, {args.repeats} replies per method", flush=True
    )
    res = measure(methods, args.repeats, args.warmup, count)
    extra, skipped = variants(engine, messages, settings, kwargs, args)
    res |= measure(extra, args.repeats, args.warmup, count)
    prep = prepare_ms(engine, messages, settings, args.repeats)
    rows = main_rows(res, prep) + variant_rows(res, skipped)
    info = {
        "prompt_tokens": engine.count_tokens(messages),
        "model": engine.name,
        "methods": res,
        "skipped": skipped,
        "prepare_ms": prep,
    }
    report(NAME, rows, args, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
