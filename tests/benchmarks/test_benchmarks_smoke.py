"""Each benchmark runs end to end with --quick (tiny model, a few steps or items) and writes its JSON.

Not timings: the numbers of a quick run mean nothing. These keep the scripts from rotting as
the code paths they call change. Those that start processes (training workers, the app)
take ~20-30 s on 2 cores and are marked slow.
"""

import json

import pytest

from benchmarks import (
    chat_dtype,
    chat_latency,
    concurrent_chat,
    continuous_batching,
    eval_throughput,
    label_load,
    train_throughput,
)

ROW_KEYS = {"metric", "product", "alternative", "ratio", "target", "met", "note"}


@pytest.fixture(autouse=True)
def _default_model(default_model_dir):
    """The tiny benchmark model borrows the default model's tokenizer."""


def run_quick(module, tmp_path, *extra) -> dict:
    assert module.main(["--quick", "--out", str(tmp_path), *extra]) == 0
    data = json.loads((tmp_path / f"{module.NAME}.json").read_text())
    assert data["benchmark"] == module.NAME and data["quick"] is True
    assert {"cpu", "usable_cores", "torch", "torch_threads", "ram_gb", "gpu"} <= set(data["machine"])
    assert data["rows"] and all(set(row) >= ROW_KEYS for row in data["rows"])
    assert not [row for row in data["rows"] if row["note"].startswith("failed")]
    return data


def rows_by_metric(data: dict) -> dict[str, dict]:
    return {row["metric"]: row for row in data["rows"]}


@pytest.mark.slow
def test_train_throughput_compares_product_and_bare_trl(tmp_path):
    data = run_quick(train_throughput, tmp_path)
    variants = data["results"]["variants"]
    for name in ("product", "trl"):
        assert variants[name]["tokens_per_s"] > 0 and variants[name]["timed_steps"] == 3
    tokens = rows_by_metric(data)["tokens/s, (a) product vs (b) bare TRL"]
    assert tokens["ratio"] == pytest.approx(tokens["product"] / tokens["alternative"])
    # No GPU here: the CUDA-only variants are skipped with a reason, never given a number.
    skipped = [row for row in data["rows"] if row["note"].startswith("skipped")]
    assert skipped and all(row["product"] is None for row in skipped)


def test_chat_latency_measures_the_engine_and_bare_generate(tmp_path):
    data = run_quick(chat_latency, tmp_path, "--repeats", "2")
    methods = data["results"]["methods"]
    for name in ("next_turn", "first_message", "cold", "bare_streamer", "bare_generate", "bf16", "static_cache"):
        assert methods[name]["ttft_s"]["n"] == 2, name
    # Greedy on the same weights: cached or not, the engine and bare generate say the same thing.
    assert methods["next_turn"]["reply"] == methods["cold"]["reply"] == methods["bare_generate"]["reply"]
    assert methods["first_message"]["reply"] == methods["bare_streamer_first"]["reply"]
    assert data["results"]["reused_tokens"] > 0  # the next turn really started from the 6th turn's cache
    assert "llama_cpp" in data["results"]["skipped"]  # quick runs the tiny model, not the GGUF


def test_chat_dtype_compares_bf16_with_fp32_chats(tmp_path):
    data = run_quick(chat_dtype, tmp_path)
    assert set(data["results"]) >= {"bfloat16", "float32", "same_replies"}
    for dtype in ("bfloat16", "float32"):
        assert len(data["results"][dtype]["warm"]["first_piece_s"]) == 2  # --quick: 3 messages, the first cold
        assert data["results"][dtype]["many"]["pieces_per_s"] > 0


def test_eval_throughput_times_generation_and_each_metric(tmp_path):
    data = run_quick(eval_throughput, tmp_path)
    results = data["results"]
    assert results["text_metrics"]["bleu"]["same_corpus_bleu"] and results["text_metrics"]["bertscore"]["same_f1"]
    ppl = results["perplexity"]
    assert ppl["product_perplexity"] == pytest.approx(ppl["bare_perplexity"], rel=1e-3)
    assert all(row["product"] is not None for row in data["rows"])


def test_continuous_batching_answers_every_user(tmp_path):
    data = run_quick(continuous_batching, tmp_path)
    [run] = data["results"]["runs"]
    assert run["users"] == run["answered"] == 2 and run["aggregate_tok_s"] > 0


@pytest.mark.slow
def test_concurrent_chat_drives_the_real_app(tmp_path):
    data = run_quick(concurrent_chat, tmp_path)  # the in-process engine and the batched one
    by_n = data["results"]["by_limit"]["2"]
    assert set(by_n) == {"1", "2"} and all(s["errors"] == 0 and s["ttft_s"]["n"] == int(n) for n, s in by_n.items())
    assert data["results"]["suggested_limit"] == 2
    batched = data["results"]["by_engine"]["batched, limit=2"]
    assert all(s["errors"] == 0 and s["tokens_per_s"] > 0 for s in batched.values())
    greedy = [row for row in data["rows"] if row["metric"].startswith("greedy replies")]
    assert len(greedy) == 2 and all(row["met"] for row in greedy)  # batched replies = in-process ones, user by user


def test_concurrent_chat_rows_compare_engines_with_today():
    """Rows from made-up results: targets at 16 users, greedy agreement, a skipped engine."""

    def at(ttft, tokens, replies):
        return {"ttft_s": {"p50": ttft, "p95": ttft}, "tokens_per_s": tokens, "errors": 0, "error_examples": [],
                "replies_per_s": 1.0, "replies": replies}  # fmt: skip

    today = {1: at(0.18, 18.0, ["a"]), 16: at(11.7, 17.0, ["a", "b"])}
    batched = {1: at(0.18, 18.0, ["a"]), 16: at(1.4, 52.0, ["a", "c"])}
    setups = {"inprocess, limit=4": today, "batched, limit=16": batched}
    rows, decision = concurrent_chat.build_rows(setups, {4: today}, 4, {"llamacpp": "no server"})
    rows = rows_by_metric({"rows": [row.as_dict() for row in rows]})
    assert decision["today"] == "inprocess, limit=4" and decision["suggested_limit"] == 4
    assert rows["first token p50 s, N=16, batched, limit=16 (vs N=1)"]["met"] is True
    assert rows["aggregate tokens/s, N=16, batched, limit=16 (vs in-process)"]["met"] is True  # 52 / 17 >= 3
    assert rows["greedy replies = in-process's, N=16, batched, limit=16"]["product"] == 1
    assert rows["all N, llamacpp"]["note"] == "skipped: no server"


@pytest.mark.slow
def test_label_load_counts_every_label_in_the_store(tmp_path):
    data = run_quick(label_load, tmp_path)
    scenarios = data["results"]["now"]
    keys = [f"4 raters{chat}, /{route}" for route in ("call", "run") for chat in ("", " + 2 chatters")]
    assert set(scenarios) == {"idle", *keys}
    for key in keys:
        s = scenarios[key]
        assert s["labels_acked"] > 0 and s["refused"] == s["errors"] == 0, s
        assert s["store"] == {"rows": s["labels_acked"], "acked": s["labels_acked"], "missing": 0, "extra": 0,
                              "items_labelled_twice": 0}  # fmt: skip
    for key in keys[1::2]:
        assert scenarios[key]["chat_replies"]["n"] > 0 and scenarios[key]["chat_errors"] == 0


def test_gpu_rows_score_the_issue_targets_from_given_numbers():
    """The CUDA-only rows, from made-up results: this machine cannot run them."""
    res = {
        variant: {"tokens_per_s": tokens, "median_step_s": 1.0, "cuda_peak_mb": 1000.0}
        for variant, tokens in (("product", 3000.0), ("trl", 1000.0), ("unsloth", 3100.0), ("qlora", 900.0))
    }
    mfu = {"by_variant": {"product": 25.0, "unsloth": 26.0}, "base_parameters": 1_235_814_400, "peak": "H100"}
    rows = {row.metric: row for row in train_throughput.build_rows(res, {}, True, mfu)}
    assert rows["tokens/s, (a) vs (c) bare Unsloth"].met is True  # 3000 / 3100 = 0.97 >= 0.95
    assert rows["tokens/s, (a) vs (d) transformers+PEFT+bnb"].met is True  # 3.3 >= 3
    mfu_row = rows["MFU %, 4N basis, (a) vs (c)"]
    assert mfu_row.met is False and "15.0 points below 40%" in mfu_row.note


def test_mfu_counts_llama_1b_shaped_as_llama_3_2_1b():
    from transformers import LlamaConfig

    from benchmarks.models import LLAMA_1B_SHAPED, SHAPES

    n = train_throughput.base_parameters(LlamaConfig(**SHAPES[LLAMA_1B_SHAPED]))
    assert n == 1_235_814_400  # Llama-3.2-1B, tied embeddings counted once
    # 10k tokens/s x 4N on a 989 TFLOP/s H100: 5.0 %
    assert train_throughput.mfu_percent(10_000, n, 989e12) == pytest.approx(5.0, abs=0.01)
