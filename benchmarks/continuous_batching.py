"""Continuous batching probe: transformers' own `ContinuousBatchingManager` (paged KV cache, new
requests join the running batch between decoding steps) with N users at once, against one request
alone through `generate`. The measurement behind issue 13's "many users in one process": is the
existing mechanism fast enough on CPU to be the app's batched engine?

    python -m benchmarks.continuous_batching                 # default model, 1, 4 and 16 users
    python -m benchmarks.continuous_batching --users 16,32
    python -m benchmarks.continuous_batching --quick         # tiny model, 2 users

Each user sends one real prompt (a validation turn of the shared Synthetic-Persona-Chat file, its
persona as the system message, rendered by the tokenizer's chat template), 50 ms after the
previous user, and streams `--max-new-tokens` greedy tokens (EOS off, so every request decodes
the same length). First token: from `add_request` to the first streamed token. Aggregate
tokens/s: all users' tokens over the wall time from the first request to the last token.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

from benchmarks.common import Row, Sizes, add_model_args, at_least, at_most, log_quietly, report
from benchmarks.models import model_source

NAME = "continuous_batching"
STAGGER_S = 0.05


def parse_args(argv):
    sizes = Sizes(__doc__)
    add_model_args(sizes)
    sizes.add("--users", "1,4,16", "2", "comma-separated numbers of users at once", type=str)
    sizes.add("--max-new-tokens", 64, 4, "tokens each user's reply decodes")
    sizes.add("--page-size", 64, 16, "tokens per KV-cache page (ContinuousBatchingConfig.page_size)")
    sizes.add("--num-blocks", 256, 8, "KV-cache blocks (ContinuousBatchingConfig.num_blocks)")
    sizes.add("--max-batch-tokens", 512, 64, "tokens per forward (ContinuousBatchingConfig.max_batch_tokens)")
    return sizes.parse(argv)


def prompts(tokenizer, args, n: int) -> list[list[int]]:
    from corpus.examples import DataConfig, load_examples

    examples, _ = load_examples(DataConfig(path=args.data), "validation")
    texts = [tokenizer.apply_chat_template(e.messages, tokenize=False, add_generation_prompt=True) for e in examples]
    return [tokenizer(texts[i % len(texts)], add_special_tokens=False)["input_ids"] for i in range(n)]


def alone(model, ids: list[int], new: int) -> float:
    """Tokens/s of one request through `generate` (greedy, exactly `new` tokens)."""
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new, do_sample=False)
    return new / (time.perf_counter() - start)


def users_at_once(manager, batch: list[list[int]], new: int) -> dict:
    first: dict[int, float] = {}

    def user(i: int) -> None:
        time.sleep(i * STAGGER_S)
        sent = time.perf_counter()
        rid = manager.add_request(batch[i], request_id=f"u{i}", max_new_tokens=new, streaming=True)
        for out in manager.request_id_iter(rid):
            first.setdefault(i, time.perf_counter() - sent)
            if out.is_finished():
                return

    start = time.perf_counter()
    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(batch))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    waits = sorted(first.values())
    return {
        "users": len(batch),
        "first_token_p50_s": statistics.median(waits),
        "first_token_max_s": waits[-1],
        "aggregate_tok_s": len(batch) * new / wall,
        "answered": len(waits),
    }


def main(argv=None) -> int:
    log_quietly()
    args = parse_args(argv)
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from engines.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_source(args.model), None, dtype="float32", device="cpu")
    counts = [int(n) for n in str(args.users).split(",")]
    batch = prompts(tokenizer, args, max(counts))
    new = args.max_new_tokens
    alone(model, batch[0], 4)  # warm-up
    one = alone(model, batch[0], new)
    # eos_token_id -1: no request stops early, so every user decodes `new` tokens.
    gen = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
    cb = ContinuousBatchingConfig(
        page_size=args.page_size, num_blocks=args.num_blocks, max_batch_tokens=args.max_batch_tokens
    )
    manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
    manager.start()
    try:
        users_at_once(manager, batch[:1], 4)  # warm-up
        runs = [users_at_once(manager, batch[:n], new) for n in counts]
    finally:
        manager.stop(block=True)
    rows = []
    for run in runs:
        n = run["users"]
        rows.append(Row(f"{n} users: first token p50 s (continuous batching)", run["first_token_p50_s"],
                        target="≤ 1.5 s at 16 users" if n == 16 else "",
                        met=at_most(run["first_token_p50_s"], 1.5) if n == 16 else None))  # fmt: skip
        rows.append(Row(f"{n} users: aggregate tokens/s, continuous batching vs one request alone",
                        run["aggregate_tok_s"], one, target="ratio ≥ 3 at 16 users" if n == 16 else "",
                        met=at_least(run["aggregate_tok_s"] / one, 3.0) if n == 16 else None))  # fmt: skip
    prompt_tokens = [len(ids) for ids in batch]
    results = {"alone_tok_s": one, "runs": runs, "prompt_tokens_mean": statistics.mean(prompt_tokens)}
    report(NAME, rows, args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
