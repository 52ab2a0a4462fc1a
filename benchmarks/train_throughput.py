"""Training throughput: the product's training path against the scripts users would write instead.

    python -m benchmarks.train_throughput            # CPU: default model, (a) product vs (b) bare TRL
    python -m benchmarks.train_throughput            # CUDA: Llama-3.2-1B-shaped QLoRA, + (c) Unsloth, (d), MFU
    python -m benchmarks.train_throughput --quick    # tiny model, a few steps

Variants: (a) the product (`training.trainer.build_trainer` + `trainer.train()`), (b) a bare TRL
`SFTTrainer` script on chat-template text, and on CUDA (c) a bare Unsloth script and (d)
transformers + PEFT + bitsandbytes QLoRA. All get the same model, training examples, LoRA
settings, batch, sequence length, optimizer and seed (QLoRA 4-bit on CUDA, fp32 LoRA on CPU).
Each runs in its own process (see benchmarks/train_variants.py); `--repeats` rounds run the
variants interleaved, so a slow spell on a shared machine hurts all of them alike.

Tokens/s counts real (non-padding) tokens over the steps after warm-up. On CPU the default
steps cover one whole epoch (4 conversations: 100 examples, 25 steps of 4, the first untimed),
so variants whose samplers order batches differently (the recipe's `group_by_length` starts
with the longest batches, which run more tokens/s) are timed on the same examples; a window of
a few steps would flatter it (6 steps after 2: 1.42x; over the epoch: 1.19x). MFU (CUDA) =
tokens/s x 4N / peak bf16 FLOP/s: a LoRA step costs ~2N forward + ~2N backward (input
gradients only: the frozen weights get none), N = base parameters, tied embeddings once
(they are the output layer's matmul); attention's own FLOPs are left out.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import REPO, Row, Sizes, add_model_args, at_least, report, skipped
from benchmarks.models import LLAMA_1B_SHAPED, model_source

NAME = "train_throughput"
RECIPES = REPO / "training" / "recipes"
# Dense bf16 tensor-core peak (no sparsity), TFLOP/s, by a piece of the device name; first match wins.
PEAK_TFLOPS = (
    ("H100 PCIe", 756),
    ("H100 NVL", 835),
    ("H100", 989),
    ("H200 NVL", 835),  # the NVL part is clocked lower: not an H200's 989
    ("H200", 989),
    ("GH200", 989),
    ("A100", 312),
    ("L40S", 362),
    ("L4", 121),
    ("A10G", 70),
    ("A10", 125),
)
MFU_GOAL_PCT = 40.0


def parse_args(argv: list[str] | None):
    sizes = Sizes(__doc__)
    add_model_args(sizes, gpu_model=LLAMA_1B_SHAPED)
    sizes.add("--batch", 4, 2, "per-device batch size", gpu=8)
    sizes.add("--seq-len", 384, 128, "max sequence length (tokens)", gpu=1024)
    sizes.add("--warmup", 1, 1, "untimed steps first (>= 1)", gpu=5)
    sizes.add("--steps", 24, 3, "timed optimizer steps", gpu=20)
    sizes.add("--limit", 4, 4, "training conversations to draw examples from", gpu=40)
    sizes.add("--repeats", 2, 1, "interleaved rounds of all variants; the median round counts")
    p = sizes.parser
    p.add_argument("--recipe", type=Path, help="base recipe (default: the CPU recipe, or the 1B QLoRA one on CUDA)")
    p.add_argument("--backend", choices=("auto", "trl", "unsloth"), default="auto", help="the product's backend")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if it is not in the built-in list")
    p.add_argument("--timeout", type=int, default=3600, help="seconds one variant may take")
    p.add_argument(
        "--variants", default="product,trl,unsloth,qlora", help="comma-separated subset to run (e.g. product for 8B)"
    )
    p.add_argument(
        "--gradient-checkpointing",
        choices=("recipe", "on", "off"),
        default="recipe",
        help="as the recipe says (default), or forced on/off for every variant: a measured choice, "
        "since a 1B-8B QLoRA at 8 x 1024 may fit a big GPU without it",
    )
    args = sizes.parse(argv)
    args.warmup = max(1, args.warmup)
    return args


def product_config(args, cuda: bool) -> dict:
    """The recipe with this benchmark's sizes: the TrainConfig every variant is built from."""
    from training.config import TrainConfig

    recipe = args.recipe or RECIPES / ("llama3.2-1b-qlora-unsloth.yaml" if cuda else "smollm2-135m-lora-cpu-turns.yaml")
    values = yaml.safe_load(Path(recipe).read_text())
    values.update(backend=args.backend, max_steps=args.warmup + args.steps, device="cuda" if cuda else "cpu")
    values["model"] = {
        **values.get("model", {}),
        "name": model_source(args.model),
        "max_seq_length": args.seq_len,
        "load_in_4bit": cuda,
    }
    # All conversations in `train`: no validation split, so no evaluation inside the timed steps.
    values["data"] = {
        **values.get("data", {}),
        "path": str(args.data),
        "limit": args.limit,
        "split_fractions": (1.0, 0.0, 0.0),
    }
    values["sft"] = {
        **values.get("sft", {}),
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        **(
            {}
            if args.gradient_checkpointing == "recipe"
            else {"gradient_checkpointing": args.gradient_checkpointing == "on"}
        ),
        "save_steps": 10**6,  # no checkpoint inside the timed steps
    }
    return TrainConfig.model_validate(values).model_dump(mode="json")


def run_variant(variant: str, config: dict, args, scratch: Path) -> dict:
    """Train one variant in a fresh process; its result, or {"error": ...} with the log's tail."""
    folder = scratch / variant
    folder.mkdir(parents=True, exist_ok=True)
    spec, out, log = folder / "spec.json", folder / "result.json", folder / "log.txt"
    spec.write_text(json.dumps({"variant": variant, "config": config, "warmup": args.warmup, "scratch": str(folder)}))
    print(f"  {variant} ...", flush=True)
    with open(log, "w") as log_file:
        try:
            code = subprocess.run(
                [sys.executable, "-m", "benchmarks.train_variants", str(spec), str(out)],
                cwd=REPO,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {args.timeout} s"
    if code == 0 and out.is_file():
        return json.loads(out.read_text())
    tail = log.read_text().strip().splitlines()[-15:]
    print(f"  {variant} failed ({code}):\n    " + "\n    ".join(tail), file=sys.stderr)
    return {"variant": variant, "error": tail[-1] if tail else str(code)}


def epoch_examples(config: dict) -> int:
    """Training sequences in one epoch of the whole train split (the recipe's data.unit, no limit)."""
    from corpus.examples import DataConfig
    from corpus.mix import load_training_data
    from training.sequences import conversation_chats

    data = DataConfig.model_validate({**config["data"], "limit": None, "split_fractions": (0.8, 0.1, 0.1)})
    train, _, _ = load_training_data(data, 1)
    return len(conversation_chats(train)) if data.unit == "conversation" else len(train)


def gpu_skip_reasons(cuda: bool) -> dict[str, str]:
    """Why (c) and (d) cannot run here; empty when they can."""
    reasons = {}
    if not cuda:
        return {v: "needs a CUDA GPU; this machine has none" for v in ("unsloth", "qlora")}
    if importlib.util.find_spec("unsloth") is None:
        reasons["unsloth"] = "unsloth is not installed (pip install unsloth)"
    if importlib.util.find_spec("bitsandbytes") is None:
        reasons["qlora"] = "bitsandbytes is not installed"
    return reasons


def base_parameters(config) -> int:
    """N: parameters of a model built from its config on the meta device (4-bit packing would
        halve a count taken from the loaded model); tied embeddings count once (as the output layer),
    an untied model's input embedding not at all (a lookup). (accelerate's
        `init_empty_weights` leaves them untied under transformers 5: 1.50 B for Llama-3.2-1B.)"""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    if getattr(config, "tie_word_embeddings", False):
        return total
    # Untied: the input embedding is a lookup, no matmul FLOPs (the output layer is counted).
    return total - model.get_input_embeddings().weight.numel()


def mfu_percent(tokens_per_s: float, n: int, peak_flops: float) -> float:
    """Model FLOPs utilisation of a LoRA step, 4N FLOPs per token, in % of the peak."""
    return 100 * tokens_per_s * 4 * n / peak_flops


def peak_flops(args) -> tuple[float | None, str]:
    import torch

    name = torch.cuda.get_device_name(0)
    if args.peak_tflops:
        return args.peak_tflops * 1e12, f"{name}: {args.peak_tflops} TFLOP/s (--peak-tflops)"
    tflops = next((t for key, t in PEAK_TFLOPS if key in name), None)
    if tflops is None:
        return None, f"{name} is not in the peak-FLOPs list: pass --peak-tflops"
    return tflops * 1e12, f"{name}: {tflops} dense bf16 TFLOP/s"


def median_result(runs: list[dict]) -> dict:
    """The round with the median tokens/s (all step times pooled); an error if none finished."""
    ok = [r for r in runs if r.get("tokens_per_s")]
    if not ok:
        return runs[-1] if runs else {"error": "not run"}
    best = sorted(ok, key=lambda r: r["tokens_per_s"])[(len(ok) - 1) // 2]
    steps = [s for r in ok for s in r["step_s"]]
    return {**best, "median_step_s": statistics.median(steps), "rounds_tokens_per_s": [r["tokens_per_s"] for r in ok]}


def build_rows(res: dict, skip: dict, cuda: bool, mfu: dict) -> list[Row]:
    a, b = res.get("product", {}), res.get("trl", {})
    memory = "cuda_peak_mb" if cuda else "peak_rss_mb"
    rows = [
        Row(
            "tokens/s, (a) product vs (b) bare TRL",
            a.get("tokens_per_s"),
            b.get("tokens_per_s"),
            "ratio ≥ 1.0",
            at_least(_ratio(a, b), 1.0) if not cuda else None,
            note="" if not cuda else "the ≥ 1.0 target is set for CPU; on CUDA see (c) and (d)",
        ),
        Row("s/step (median), (a) vs (b)", a.get("median_step_s"), b.get("median_step_s"), "lower is better"),
        Row(
            f"peak {'CUDA' if cuda else 'RSS'} memory MB during the steps, (a) vs (b)",
            a.get(memory),
            b.get(memory),
            "lower is better",
        ),
    ]
    for variant, label, goal in (("unsloth", "(c) bare Unsloth", 0.95), ("qlora", "(d) transformers+PEFT+bnb", 3.0)):
        if variant in skip:
            rows.append(skipped(f"tokens/s, (a) vs {label}", skip[variant]))
            continue
        if variant not in res:
            continue
        other = res[variant]
        rows.append(
            Row(
                f"tokens/s, (a) vs {label}",
                a.get("tokens_per_s"),
                other.get("tokens_per_s"),
                f"ratio ≥ {goal}",
                at_least(_ratio(a, other), goal),
            )
        )
        rows.append(Row(f"peak CUDA memory MB, (a) vs {label}", a.get(memory), other.get(memory), "lower is better"))
    rows.append(mfu_row(mfu))
    rows += [fair_row(variant, r) for variant, r in res.items() if r.get("tokens_per_s")]
    for variant, r in res.items():
        if "error" in r:
            rows.append(Row(f"{variant} run", None, note=f"failed: {r['error']}"))
    return rows


def fair_row(variant: str, r: dict) -> Row:
    """Supervised tokens/s and examples/s of one variant, with the time an epoch of the train
    split would take at that rate and the attention / checkpointing it ran."""
    epoch = r.get("epoch_examples")
    per_epoch = epoch / r["examples_per_s"] if epoch and r.get("examples_per_s") else None
    layout = "packed" if r.get("packing") else "padding-free" if r.get("padding_free") else "padded"
    epoch_time = f"{per_epoch:.0f} s" if per_epoch else "n/a"
    note = (
        f"examples/s {r.get('examples_per_s') or 0:.2f}; epoch of {epoch or '?'} examples {epoch_time}; "
        f"attention {r.get('attention')}, {layout}, "
        f"checkpointing {'on' if r.get('gradient_checkpointing') else 'off'}"
    )
    return Row(f"{variant}: supervised (reply) tokens/s", r.get("supervised_tokens_per_s"), note=note)


def _ratio(a: dict, b: dict) -> float | None:
    if a.get("tokens_per_s") and b.get("tokens_per_s"):
        return a["tokens_per_s"] / b["tokens_per_s"]
    return None


def mfu_of(res: dict, config: dict, args, cuda: bool) -> dict:
    """MFU in % of the GPU's peak for each variant that finished, or {"error": why not}."""
    if not cuda:
        return {"error": "MFU is reported for CUDA GPUs only"}
    flops, peak = peak_flops(args)
    if flops is None:
        return {"error": peak}
    from transformers import AutoConfig

    from engines.loading import resolve_model

    source, extra = resolve_model(config["model"]["name"])
    n = base_parameters(AutoConfig.from_pretrained(source, **extra))
    by_variant = {v: mfu_percent(r["tokens_per_s"], n, flops) for v, r in res.items() if r.get("tokens_per_s")}
    return {"by_variant": by_variant, "base_parameters": n, "peak": peak}


def mfu_row(mfu: dict) -> Row:
    metric = "MFU %, 4N basis, (a) vs (c)"
    if "error" in mfu:
        return skipped(metric, mfu["error"])
    product = mfu["by_variant"].get("product")
    note = f"{mfu['peak']}; N = {mfu['base_parameters'] / 1e6:.0f} M"
    if product is not None:
        note += f"; {abs(MFU_GOAL_PCT - product):.1f} points {'below' if product < MFU_GOAL_PCT else 'above'} 40%"
    target = f"≥ {MFU_GOAL_PCT:.0f}%"
    return Row(metric, product, mfu["by_variant"].get("unsloth"), target, at_least(product, MFU_GOAL_PCT), note=note)


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.common import log_quietly

    log_quietly()
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    config = product_config(args, cuda)
    skip = gpu_skip_reasons(cuda)
    chosen = args.variants.split(",")
    skip = {v: why for v, why in skip.items() if v in chosen}
    variants = [v for v in ("product", "trl", "unsloth", "qlora") if v in chosen and v not in skip]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="persona-studio-train-bench-") as scratch:
        for round_ in range(args.repeats):
            print(f"round {round_ + 1}/{args.repeats}: {args.warmup} warm-up + {args.steps} timed steps", flush=True)
            for variant in variants:
                runs[variant].append(run_variant(variant, config, args, Path(scratch) / f"round{round_}"))
    epoch = epoch_examples(config)
    res = {v: {**median_result(r), "epoch_examples": epoch} for v, r in runs.items()}
    mfu = mfu_of(res, config, args, cuda)
    rows = build_rows(res, skip, cuda, mfu)
    report(NAME, rows, args, {"config": config, "variants": res, "skipped": skip, "mfu": mfu})
    return 0


if __name__ == "__main__":
    sys.exit(main())
