"""`python -m benchmarks.gpu_smoke --cpu`: the GPU smoke test's CPU-reachable steps run through
the product's entry points on the tiny model and pass (~40 s on 2 cores); the CUDA steps are
skipped with the reason; a failing step fails the run and skips what depends on it."""

from pathlib import Path

import pytest

from benchmarks import gpu_smoke


@pytest.mark.slow  # ~60 s: the whole smoke on CPU
def test_cpu_steps_pass_and_cuda_steps_say_why_not(tmp_path, spc_csv, capsys):
    assert gpu_smoke.main(["--cpu", "--work", str(tmp_path), "--prepared", str(tmp_path / "not-prepared")]) == 0
    out = capsys.readouterr().out
    assert out.count("\nPASS ") == 7 and out.count("\nSKIP ") == 5 and "\nFAIL " not in out
    for step in ("train: TRL LoRA (CPU)", "export: merged folder", "chat: the merged folder", "export: GGUF refused"):
        assert f"\nPASS  {step}" in out, step
    for step in ("train: Unsloth QLoRA", "GPU tests", "benchmarks.train_throughput", "build model: Llama-3-8B"):
        assert f"\nSKIP  {step}" in out and "needs a CUDA GPU" in out.split(f"SKIP  {step}")[1].splitlines()[0]
    assert "at steps [0, 2, 4]" in out  # validation before training and at every checkpoint
    assert "gpu_smoke PASSED: 7 passed, 0 failed, 5 skipped" in out
    assert (tmp_path / "runs" / "smoke-lora" / "merged" / "config.json").is_file()
    assert (tmp_path / "logs" / "train_smoke-lora.log").is_file()


def test_a_failed_step_fails_the_run_and_skips_what_needs_it(tmp_path, capsys):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "data.csv").write_text("not,a,dataset\n1,2,3\n")
    assert gpu_smoke.main(["--cpu", "--work", str(tmp_path / "work"), "--prepared", str(prepared)]) == 1
    out = capsys.readouterr().out
    assert "\nFAIL  train: TRL LoRA (CPU)" in out and "exit 2" in out
    assert "\nSKIP  export: merged folder: needs train: TRL LoRA (CPU)" in out
    assert "\nSKIP  export: GGUF refused offline: needs train: TRL LoRA (CPU)" in out
    assert "gpu_smoke FAILED: 2 passed, 1 failed, 9 skipped" in out


def test_help_says_how_to_carry_the_wheels(capsys):
    with pytest.raises(SystemExit):
        gpu_smoke.main(["--help"])
    out = capsys.readouterr().out
    assert "get-wheels.sh" in out and '".whl-gpu2", ".gpu-smoke"' in out and "--cpu" in out


class Done:
    def __init__(self, stdout: str):
        self.stdout = stdout


def test_throughput_passes_its_timeout_as_the_timeout_and_8b_runs_the_product_only(tmp_path, monkeypatch):
    import json

    calls = []

    def sh(log, argv, *, stdin=None, timeout=300, ok=(0,)):
        calls.append({"log": log, "argv": argv, "stdin": stdin, "timeout": timeout})
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        result = {"rows": [], "results": {"variants": {"product": {"tokens_per_s": 1.0}}, "mfu": {}}}
        (out / "train_throughput.json").write_text(json.dumps(result))
        return Done("")

    smoke = gpu_smoke.Smoke(tmp_path, {})
    monkeypatch.setattr(smoke, "sh", sh)
    assert "tokens/s {'product': 1}" in gpu_smoke.throughput(smoke, "m", tmp_path / "d.csv", tmp_path)
    gpu_smoke.throughput(smoke, "big", tmp_path / "d.csv", tmp_path, "--variants", "product", log="throughput_8b")
    assert [(c["stdin"], c["timeout"]) for c in calls] == [(None, 600), (None, 600)]  # not the timeout as stdin
    assert calls[1]["argv"][-2:] == ["--variants", "product"]
    with pytest.raises(TypeError):  # Smoke.sh takes stdin and timeout by name only
        gpu_smoke.Smoke.sh(smoke, "x", ["true"], None, 600)


@pytest.mark.parametrize(
    "stdout, passes",
    [
        ("bot> Hello, love! Mind the sawdust. What would you like to talk about, clocks or bees?\n", False),
        ("bot> Hello, love! Mind the sawdust. What would you like to talk about, clocks or bees?\nbot> \n", False),
        (
            "bot> Hello, love! Mind the sawdust. What would you like to talk about, clocks or bees?\nbot> I am Ada.\n",
            True,
        ),
    ],
)
def test_a_chat_step_needs_a_generated_reply_not_the_greeting_alone(tmp_path, monkeypatch, stdout, passes):
    smoke = gpu_smoke.Smoke(tmp_path, {})
    monkeypatch.setattr(smoke, "sh", lambda log, argv, **kw: Done(stdout))
    if passes:
        assert gpu_smoke.chat(smoke, tmp_path, "v", "log").endswith("'I am Ada.'")
    else:
        with pytest.raises(gpu_smoke.StepFailed, match="no generated reply"):
            gpu_smoke.chat(smoke, tmp_path, "v", "log")


def test_the_8b_shape_is_llama_3_8b_and_mfu_leaves_out_its_input_embedding():
    from transformers import LlamaConfig

    from benchmarks import train_throughput
    from benchmarks.models import LLAMA_8B_SHAPED, SHAPES

    n = train_throughput.base_parameters(LlamaConfig(**SHAPES[LLAMA_8B_SHAPED]))
    assert n == 8_030_261_248 - 128_256 * 4096  # Llama-3-8B less its (untied) input embedding
    assert dict(train_throughput.PEAK_TFLOPS)["H200 NVL"] == 835
    assert next(t for key, t in train_throughput.PEAK_TFLOPS if key in "NVIDIA H200 NVL") == 835
    assert next(t for key, t in train_throughput.PEAK_TFLOPS if key in "NVIDIA H200") == 989
