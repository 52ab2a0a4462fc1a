"""Chats in bf16 against fp32 on CPU: the app's chat engine (`ChatEngineConfig.cpu_bf16`).

    python -m benchmarks.chat_dtype            # default model; ~3 min on 2 cores
    python -m benchmarks.chat_dtype --quick    # tiny model: checks the script runs

Both copies of the weights are loaded as the app's model process loads them (the batched engine,
`engines.child.spare_threads()` torch threads) and measured turn about, so both see the same
machine. Per dtype: the first streamed piece of each warm message of a chat (the engine's prefix
cache holds the conversation, so this is the prefill of the new message, the moment a person waits
on), one chat's pieces/s, and `--users` chats at once (aggregate pieces/s, first piece p50). The
greedy replies of the warm messages are compared too: how many bf16 replies equal fp32's word for
word (the same weights in half the bits; they drift apart once one token differs). On a CPU without
bf16 instructions (AVX512-BF16, AMX) the app stays fp32 and this table says so.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

from benchmarks.common import Row, Sizes, add_model_args, at_most, describe, log_quietly, report
from benchmarks.models import model_source

NAME = "chat_dtype"
WARM_QUESTIONS = [
    "Hi! How are you today?",
    "What did you build when you were working?",
    "Do you still like jazz?",
    "What grows in your garden this year?",
    "Do you have any family nearby?",
    "What was your favourite ship?",
    "Tell me about the sea.",
]


def parse_args(argv):
    sizes = Sizes(__doc__)
    add_model_args(sizes)
    sizes.add("--turns", 7, 3, "messages of the warm chat (the first, cold, is not counted)")
    sizes.add("--users", 16, 2, "chats at once")
    sizes.add("--max-new-tokens", 48, 8, "tokens per reply")
    sizes.parser.add_argument("--persona", default="personas/ada.yaml", help="persona file")
    return sizes.parse(argv)


def warm_chat(engine, system: list[dict], turns: int, settings) -> dict:
    """First piece (s) of each message after the first, the replies, one chat's pieces/s."""
    messages, firsts, replies, pieces, seconds = list(system), [], [], 0, 0.0
    for question in (WARM_QUESTIONS * 2)[:turns]:
        messages.append({"role": "user", "content": question})
        start, first, reply = time.perf_counter(), None, ""
        for piece in engine.stream(messages, settings):
            first = first if first is not None else time.perf_counter() - start
            reply, pieces = reply + piece, pieces + 1
        seconds += time.perf_counter() - start
        messages.append({"role": "assistant", "content": reply.strip()})
        firsts.append(first)
        replies.append(reply.strip())
    return {"first_piece_s": firsts[1:], "replies": replies[1:], "pieces_per_s": pieces / seconds}


def many_users(engine, system: list[dict], users: int, settings) -> dict:
    firsts, pieces = [0.0] * users, [0] * users

    def run(i: int) -> None:
        start = time.perf_counter()
        chat = [*system, {"role": "user", "content": f"Hello, I am visitor {i}. What do you do all day?"}]
        for k, _ in enumerate(engine.stream(chat, settings)):
            firsts[i] = firsts[i] or time.perf_counter() - start
            pieces[i] = k + 1

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"pieces_per_s": sum(pieces) / wall, "first_piece_s": describe(firsts)}


def main(argv: list[str] | None = None) -> int:
    import torch

    from core.conversation import build_messages
    from core.persona import load_persona
    from engines.child import spare_threads
    from engines.config import EngineConfig, GenerationSettings, cpu_has_bf16
    from engines.factory import load_engine

    log_quietly()
    args = parse_args(argv)
    torch.set_num_threads(spare_threads())  # as the app's model process
    settings = GenerationSettings(temperature=0, max_new_tokens=args.max_new_tokens)
    system = build_messages(load_persona(args.persona), [])  # the persona's system prompt
    engines = {d: load_engine(EngineConfig(model=model_source(args.model), dtype=d, device="cpu"))
               for d in ("bfloat16", "float32")}  # fmt: skip
    res = {d: {} for d in engines}
    for engine in engines.values():  # untimed: imports, kernels, the persona's prefix
        "".join(engine.stream([*system, {"role": "user", "content": "Hello!"}], settings))
    for dtype, engine in engines.items():
        res[dtype]["warm"] = warm_chat(engine, system, args.turns, settings)
    for dtype, engine in engines.items():
        res[dtype]["many"] = many_users(engine, system, args.users, settings)
    pairs = zip(res["bfloat16"]["warm"]["replies"], res["float32"]["warm"]["replies"], strict=True)
    same = sum(a == b for a, b in pairs)
    for engine in engines.values():
        engine.close()
    bf, fp = res["bfloat16"], res["float32"]
    has = "yes" if cpu_has_bf16() else "NO (the app keeps fp32)"
    note = f"{args.turns - 1} warm messages; CPU bf16 instructions: {has}"
    warm_bf, warm_fp = statistics.median(bf["warm"]["first_piece_s"]), statistics.median(fp["warm"]["first_piece_s"])
    rows = [
        Row("warm message, first piece p50 s (bf16 vs fp32)", warm_bf, warm_fp, "ratio < 1",
            at_most(warm_bf / warm_fp, 1), note),
        Row("one chat, pieces/s (bf16 vs fp32)", bf["warm"]["pieces_per_s"], fp["warm"]["pieces_per_s"], "ratio ≥ 1",
            bf["warm"]["pieces_per_s"] >= fp["warm"]["pieces_per_s"], f"{args.max_new_tokens} tokens a reply"),
        Row(f"{args.users} chats at once, pieces/s together", bf["many"]["pieces_per_s"], fp["many"]["pieces_per_s"],
            "ratio ≥ 1", bf["many"]["pieces_per_s"] >= fp["many"]["pieces_per_s"]),
        Row(f"{args.users} chats at once, first piece p50 s", bf["many"]["first_piece_s"]["p50"],
            fp["many"]["first_piece_s"]["p50"], "ratio < 1",
            at_most(bf["many"]["first_piece_s"]["p50"] / fp["many"]["first_piece_s"]["p50"], 1)),
        Row("greedy replies equal to fp32's, of the warm messages", same, len(bf["warm"]["replies"]), "", None,
            "the rest differ from some token on"),
    ]  # fmt: skip
    report(NAME, rows, args, res | {"same_replies": same})
    return 0


if __name__ == "__main__":
    sys.exit(main())
